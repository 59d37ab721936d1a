"""nbgrader autograde with gptbook's judge: the score of a known problem comes from outside the kernel.

nbgrader scores a test cell by whether it raised, inside a kernel the submission controls, so
patching `Problem.grade` used to give full marks. `configure(c)` (called by nbgrader_config.py)
replaces nbgrader's Execute preprocessor in autograde with JudgedExecute, which
- inserts a record cell after each test cell of a gptbook problem (judge.add_record_cells),
- runs the notebook as nbgrader's Execute does (same timeout and interrupt settings),
- judges every record in the nbgrader process (judge.judge_record) and puts an error output first
  in each test cell whose answer is not correct or was not recorded, so nbgrader scores it 0,
- removes the record cells again, so the autograded notebook has the submission's cells only.
It also keeps a notebook whose kernel died: nbgrader alone removes the whole submission ("Removing
failed assignment", every problem 0); here the problems graded before the death keep their points
and the test cells that never ran score 0.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from nbformat import NotebookNode
from nbgrader.preprocessors import Execute

from . import judge


def _error(cell, message: str) -> None:
    """Put an error output first: nbgrader's determine_grade gives 0 at the first error output."""
    cell.outputs.insert(0, NotebookNode(output_type="error", ename="GptbookJudge", evalue=message,
                                        traceback=[f"GptbookJudge: {message}"]))


class JudgedExecute(Execute):
    """nbgrader's Execute, plus records judged outside the kernel (see the module docstring)."""

    def preprocess(self, nb, resources=None, km=None):
        from nbclient.exceptions import DeadKernelError
        with tempfile.TemporaryDirectory(prefix="gptbook-judge-") as folder:
            plan = judge.add_record_cells(nb, Path(folder))
            died = False
            try:
                nb, resources = super().preprocess(nb, resources, km)
            except DeadKernelError:
                died = True
                self.log.warning("the kernel died; the problems graded before it keep their points")
            for p in plan.values():
                outcome = judge.judge_record(p)
                if outcome is None:
                    _error(p.test_cell, "the answer was not recorded (the cell did not run, timed out "
                                        "or the kernel died)")
                elif not outcome.ok:
                    _error(p.test_cell, str(outcome))
            for cell in nb.cells:    # a teacher's own test cell that never ran: 0, not full marks
                m = cell.get("metadata", {}).get("nbgrader", {})
                if (died and cell.cell_type == "code" and m.get("grade") and not m.get("solution")
                        and m.get("grade_id") not in plan and cell.get("execution_count") is None):
                    _error(cell, "the cell did not run: the kernel died before it")
            nb.cells = [c for c in nb.cells if not judge.is_record_cell(c)]
        return nb, resources


def configure(c) -> None:
    """Use JudgedExecute instead of nbgrader's Execute in `nbgrader autograde` (nbgrader_config.py)."""
    from nbgrader.converters import Autograde
    default = list(Autograde.class_traits()["autograde_preprocessors"].default())
    if Execute not in default:    # a newer nbgrader: grading without the judge must not pass silently
        raise RuntimeError(f"nbgrader's autograde steps {default} have no Execute to replace; "
                           "gptbook.exercises.nbgrader_judge needs updating")
    c.Autograde.autograde_preprocessors = [JudgedExecute if p is Execute else p for p in default]
