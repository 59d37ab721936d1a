"""nbgrader configuration: the exercise notebooks in exercises/ are the nbgrader source directory.

    nbgrader generate_assignment 01_architecture     # -> release/01_architecture/
    nbgrader autograde 01_architecture               # grades submitted/{student}/01_architecture/
Without nbgrader: python -m gptbook exercises release | grade SUBMISSION.ipynb
"""
import os
import sys

# gptbook's judge (see gptbook/exercises/nbgrader_judge.py) must be importable here, in nbgrader's
# own process, even when the venv does not have gptbook installed: it is this checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gptbook.exercises.nbgrader_judge import configure  # noqa: E402

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file
os.makedirs("build", exist_ok=True)  # the gradebook lives in build/ (git-ignored), next to the copies

c.CourseDirectory.source_directory = "exercises"
c.CourseDirectory.release_directory = "build/release"
c.CourseDirectory.submitted_directory = "build/submitted"
c.CourseDirectory.autograded_directory = "build/autograded"
c.CourseDirectory.feedback_directory = "build/feedback"
c.CourseDirectory.db_url = "sqlite:///build/gradebook.db"
c.CourseDirectory.course_id = "gptbook"
# every exercise check runs in milliseconds; a cell that takes a minute is an infinite loop
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
# autograde judges every gptbook problem outside the kernel (a submission that patches the checker
# scores 0 for the answers it did not write) and keeps the problems graded before a kernel death
configure(c)
