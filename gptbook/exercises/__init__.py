"""Exercises for the five chapters: `from gptbook.exercises import ch01 as ex; q1, q2, ... = ex.problems()`.

Self-study: q.check(fn), q.hint(n), q.solution(). Classroom: the notebooks in exercises/ are
nbgrader sources; `python -m gptbook exercises release|grade` works without nbgrader.
"""
from .core import CORRECT, INCORRECT, NOT_ATTEMPTED, FunctionProblem, Outcome, Problem, grading

CHAPTERS = {"01": "01_architecture", "02": "02_math", "03": "03_finetuning",
            "04": "04_applications", "05": "05_deployment"}

__all__ = ["CORRECT", "INCORRECT", "NOT_ATTEMPTED", "FunctionProblem", "Outcome", "Problem",
           "grading", "CHAPTERS"]
