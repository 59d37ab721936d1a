"""The run-a-chapter path: papermill execution, parameters, failures named, refresh cleaning."""
import json

import nbformat
import pytest

from gptbook.cli import run as runmod


def _nb(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "quick"\nseed = 1337')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_run_injects_profile_and_succeeds(tmp_path, capsys):
    nb = _nb(tmp_path / "09_demo.ipynb", "print('profile is', profile)")
    failed = runmod.run([str(nb)], profile="full", output_dir=str(tmp_path / "out"), progress=False)
    assert failed == 0
    out = json.loads((tmp_path / "out" / "full" / "09_demo.ipynb").read_text())
    texts = "".join("".join(o.get("text", "")) for c in out["cells"] for o in c.get("outputs", []))
    assert "profile is full" in texts
    assert "1/1 chapters ran" in capsys.readouterr().out


@pytest.mark.slow
def test_failure_names_chapter_and_cell(tmp_path, capsys):
    nb = _nb(tmp_path / "09_broken.ipynb", "raise ValueError('planted failure')")
    failed = runmod.run([str(nb)], output_dir=str(tmp_path / "out"), progress=False)
    out = capsys.readouterr().out
    assert failed == 1
    assert "FAIL 09_broken" in out and "ValueError" in out and "planted failure" in out and "cell" in out


@pytest.mark.slow
def test_refresh_stores_clean_outputs(tmp_path):
    nb = _nb(tmp_path / "09_demo.ipynb", "print(40 + 2)")
    assert runmod.run([str(nb)], output_dir=str(tmp_path / "out"), refresh=True, progress=False) == 0
    stored = json.loads(nb.read_text())
    assert not any("injected-parameters" in c["metadata"].get("tags", []) for c in stored["cells"])
    assert not any("papermill" in c["metadata"] for c in stored["cells"])
    assert "papermill" not in stored["metadata"]
    assert "".join(stored["cells"][2]["outputs"][0]["text"]) == "42\n"


def test_bad_arguments_say_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="unknown profile 'medium'.*full.*quick"):
        runmod.run(["01"], profile="medium")
    with pytest.raises(SystemExit, match="unknown chapter '99'; chapters are"):
        runmod.resolve(["99"])
    with pytest.raises(SystemExit, match="--refresh"):
        runmod.run(["01"], profile="full", refresh=True)
    nb = _nb(tmp_path / "09_demo.ipynb", "print(1)")
    with pytest.raises(SystemExit, match=r"unknown parameter\(s\) \['max_steps'\].*\['profile', 'seed'\]"):
        runmod.run([str(nb)], parameters={"max_steps": 100}, output_dir=str(tmp_path / "out"))
    with pytest.raises(SystemExit, match=r"weights='gpt5' is neither one of \['book', 'book-broad', 'gpt2'.*folder"):
        runmod.run(["03"], parameters={"weights": "gpt5"}, output_dir=str(tmp_path / "out"))


def test_cli_dispatch_unknown_command(capsys):
    from gptbook.__main__ import main
    with pytest.raises(SystemExit, match="unknown command 'fly'"):
        main(["fly"])
    assert main(["--help"]) == 0 and "run" in capsys.readouterr().out
