"""What a reader clicks and opens: every relative link in the notebooks and Markdown files resolves
(also in the student release, which lives elsewhere), Lab starts where those links work, and
notebook metadata is what JupyterLab writes (so an untouched notebook does not open as modified)."""
import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from gptbook.exercises import cli

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOCS = sorted([*ROOT.glob("*.md"), *ROOT.glob("*/README.md"), *ROOT.glob("chapters/*.ipynb"),
               *ROOT.glob("exercises/*/*.ipynb")])


def _markdown(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


def dead_links(path: Path) -> list:
    dead = []
    for link in LINK.findall(_markdown(path)):
        if re.match(r"^([a-z][a-z0-9+.-]*:|#)", link, re.I):
            continue                                    # web links and in-page anchors
        if not (path.parent / link.split("#")[0]).exists():
            dead.append(link)
    return dead


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert not dead_links(path), f"{path.relative_to(ROOT)}: dead links {dead_links(path)}"


def test_the_check_finds_a_dead_link(tmp_path):
    page = tmp_path / "a.md"
    page.write_text("[there](b.md) [web](https://x.org) [gone](missing.ipynb)", encoding="utf-8")
    (tmp_path / "b.md").write_text("", encoding="utf-8")
    assert dead_links(page) == ["missing.ipynb"]


def test_student_release_links_still_reach_the_chapters(tmp_path):
    out = tmp_path / "build" / "release"
    written = cli.release(out)
    assert written
    for path in written:
        nb = nbformat.read(path, as_version=4)
        links = [link for c in nb.cells if c.cell_type == "markdown" for link in LINK.findall(c.source)
                 if not re.match(r"^([a-z]+:|#)", link)]
        assert links, f"{path.name} links to no chapter"
        for link in links:
            target = (path.parent / link.split("#")[0]).resolve()
            assert target.exists() and target.is_relative_to(ROOT), f"{path.name}: {link} -> {target}"


def test_lab_starts_at_the_checkout_root_so_chapter_and_exercise_links_work():
    rule = re.search(r"^lab:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert rule and "root_dir" in rule.group(1) and "$(CURDIR)" in rule.group(1), rule and rule.group(1)


@pytest.mark.parametrize("path", [*ROOT.glob("chapters/*.ipynb"), *ROOT.glob("exercises/*/*.ipynb")],
                         ids=lambda p: p.name)
def test_kernelspec_is_what_jupyterlab_writes(path):
    spec = json.loads(path.read_text(encoding="utf-8"))["metadata"]["kernelspec"]
    assert spec == {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}, spec
    assert os.sep not in spec["name"]


@pytest.mark.parametrize("path", sorted(ROOT.glob("chapters/*.ipynb")), ids=lambda p: p.name)
def test_code_that_builds_a_paragraph_is_collapsed(path):
    """A cell that renders measured prose (display(Markdown(f"..."))) shows the reader the sentence
    once: its code is collapsed in Lab (metadata jupyter.source_hidden), one click away."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    shown = [c["id"] for c in cells if c["cell_type"] == "code" and "display(Markdown(" in "".join(c["source"])
             and not c["metadata"].get("jupyter", {}).get("source_hidden")]
    assert not shown, f"{path.name}: cells {shown} build prose with visible code; set jupyter.source_hidden"
