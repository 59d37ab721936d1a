"""Exercises for the five chapters: `from gptbook.exercises import ch01 as ex; q1, q2, ... = ex.problems()`.

Self-study: q.check(fn), q.hint(n), q.solution(). Classroom: the notebooks in exercises/ are
nbgrader sources; `python -m gptbook exercises release|grade` works without nbgrader.
"""
from .core import CORRECT, INCORRECT, NOT_ATTEMPTED, FunctionProblem, Outcome, Problem, grading

from ..config import CHAPTERS

__all__ = ["CORRECT", "INCORRECT", "NOT_ATTEMPTED", "FunctionProblem", "Outcome", "Problem",
           "grading", "CHAPTERS"]
