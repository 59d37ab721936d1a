"""The grader's side of the exercises: judge each answer outside the learner's kernel.

Everything in the kernel runs next to the learner's code, which can patch it (two lines replacing
`Problem.evaluate` used to give full marks). So a grader puts, after each test cell of a known
problem, a record cell that calls `core.record()`: it runs the learner's function on the problem's
cases and writes the results (plain data) to a file. `judge_record()` then reads that file in the
grader's own process, rebuilds the cases, computes the reference's answers and compares. The
learner's code never runs there, and a stub cannot produce the reference's results, whatever it
patched. What this does not stop: an answer that calls the reference itself (q.solution() shows
it), or deliberately forged records; those are visible to a teacher who reads the code.

Used by `python -m gptbook exercises grade` (cli.py) and by nbgrader through JudgedExecute
(nbgrader_judge.py, set up by nbgrader_config.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import nbformat

from .core import INCORRECT, Outcome, problem_named, problem_text

RECORD_KEY = "gptbook_record"          # metadata key marking the record cells a grader inserted
MAX_RECORD_BYTES = 256 * 2 ** 20       # no case needs more; a bigger file is not loaded


@dataclass
class Planned:
    """A test cell whose answer is recorded in the kernel and judged by the grader."""
    grade_id: str
    problem: str                        # the problem's name: the function or class the learner writes
    path: Path                          # where the record cell writes the observations
    test_cell: nbformat.NotebookNode
    record_cell: nbformat.NotebookNode


def known_problem(grade_id: str) -> Optional[str]:
    """The problem a test cell `test_<name>` grades, when gptbook knows it (problems.toml)."""
    name = grade_id[5:] if grade_id.startswith("test_") else ""
    if not name.isidentifier():
        return None
    try:
        problem_text(name)
    except KeyError:
        return None                     # a teacher's own test cell: scored by nbgrader's rule only
    return name


def add_record_cells(nb, folder: Path) -> dict:
    """Insert a record cell after every test cell of a known problem; {grade_id: Planned}."""
    plan, cells = {}, []
    for cell in nb.cells:
        cells.append(cell)
        m = cell.get("metadata", {}).get("nbgrader", {})
        gid = m.get("grade_id", "")
        name = known_problem(gid) if cell.cell_type == "code" and m.get("grade") else None
        if name is None or gid in plan:
            continue
        path = Path(folder) / f"{gid}.pt"
        # `lambda: name` so an answer that was never defined is recorded as such, not a NameError
        rec = nbformat.v4.new_code_cell(f'__import__("gptbook.exercises.core", fromlist=["record"])'
                                        f'.record({name!r}, lambda: {name}, {str(path)!r})')
        rec.metadata[RECORD_KEY] = name
        cells.append(rec)
        plan[gid] = Planned(gid, name, path, cell, rec)
    nb.cells = cells
    return plan


def is_record_cell(cell) -> bool:
    return RECORD_KEY in cell.get("metadata", {})


def judge_record(planned: Planned) -> Optional[Outcome]:
    """The Outcome of the recorded answer, judged here; None when there is no record (the record
    cell did not run: an earlier cell timed out, the kernel died, or the check itself ran too long)."""
    import torch
    name, path = planned.problem, planned.path
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_RECORD_BYTES:
        return Outcome(INCORRECT, f"the record of your answer is larger than {MAX_RECORD_BYTES >> 20} MB", name)
    try:
        # weights_only: the file was written by the learner's kernel, so it must not run code here
        rec = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        return Outcome(INCORRECT, f"the record of your answer is unreadable ({type(e).__name__})", name)
    if not isinstance(rec, dict) or rec.get("problem") != name:
        return Outcome(INCORRECT, "the record of your answer is malformed", name)
    return problem_named(name).judge(rec.get("observations"))
