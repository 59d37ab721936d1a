"""`python -m gptbook compare [build/quick]`: compare a reader's run with the book's reference figures.

The reference figures of the quick profile on CPU are the outputs stored in `chapters/*.ipynb`
(the same ones nbval checks). This command pairs every number printed by each cell of the
reader's executed notebooks with the number at the same place in the stored notebook, and lists
those that differ by more than the tolerance: which chapter, which cell, the context, both values
and the relative difference. Cells marked `# NBVAL_IGNORE_OUTPUT` (timings) are skipped.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .run import CHAPTERS_DIR

NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")


@dataclass
class Diff:
    chapter: str
    cell: int
    context: str
    reference: float
    observed: float

    @property
    def rel(self) -> float:
        return abs(self.observed - self.reference) / max(abs(self.reference), 1e-12)


def _cell_text(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == "stdout":
            parts.append("".join(o["text"]))
        for mime in ("text/markdown", "text/plain"):
            if mime in o.get("data", {}):
                parts.append("".join(o["data"][mime]))
                break
    return "\n".join(parts)


def figures(path: Path) -> dict:
    """{cell index: [(number, context), ...]} for the code cells of a notebook whose output counts."""
    nb = json.loads(Path(path).read_text())
    out = {}
    for i, c in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        src = "".join(c["source"])
        if "NBVAL_IGNORE_OUTPUT" in src or "NBVAL_SKIP" in src or "parameters" in c["metadata"].get("tags", []):
            continue
        text = _cell_text(c)
        out[i] = [(float(m.group()), text[max(0, m.start() - 40):m.end() + 10].replace("\n", " "))
                  for m in NUMBER.finditer(text)]
    return out


def compare(run_dir: Path, rtol: float = 0.05, atol: float = 1e-6, chapters_dir: Path = CHAPTERS_DIR):
    """-> (list of Diff beyond tolerance, number of figures compared, list of notes)."""
    diffs, n, notes = [], 0, []
    for ref_nb in sorted(chapters_dir.glob("[0-9][0-9]_*.ipynb")):
        mine = Path(run_dir) / ref_nb.name
        if not mine.exists():
            notes.append(f"{ref_nb.stem}: not in {run_dir} (run `python -m gptbook run {ref_nb.stem[:2]}`)")
            continue
        ref, obs = figures(ref_nb), figures(mine)
        for cell, ref_vals in ref.items():
            obs_vals = obs.get(cell, [])
            if len(obs_vals) != len(ref_vals):
                notes.append(f"{ref_nb.stem} cell {cell}: {len(obs_vals)} numbers printed, "
                             f"reference has {len(ref_vals)} (different output shape)")
            for (r, ctx), (o, _) in zip(ref_vals, obs_vals):
                n += 1
                if abs(o - r) > atol + rtol * abs(r):
                    diffs.append(Diff(ref_nb.stem, cell, ctx.strip(), r, o))
    return diffs, n, notes


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m gptbook compare", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default="build/quick", help="folder of executed notebooks")
    ap.add_argument("--rtol", type=float, default=0.05, help="relative tolerance (default 5%%)")
    a = ap.parse_args(argv)
    if not Path(a.run_dir).is_dir():
        sys.exit(f"{a.run_dir} does not exist; run the book first: python -m gptbook run --output-dir build")
    diffs, n, notes = compare(Path(a.run_dir), a.rtol)
    for note in notes:
        print("note:", note)
    for d in diffs:
        print(f"{d.chapter} cell {d.cell}: reference {d.reference:g}, yours {d.observed:g} "
              f"({100 * d.rel:.1f}% off) … {d.context}")
    print(f"{n} figures compared with the reference (quick profile, CPU): {len(diffs)} beyond "
          f"{100 * a.rtol:g}% tolerance")
    return 1 if diffs else 0
