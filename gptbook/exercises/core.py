"""Plumbing for the exercises: one check per problem, two ways to call it.

A problem (chNN.py) is a reference and the cases the learner's function is compared on
(`function_problem`), or a Problem subclass with its own verify(); each problem's one-line
description and hints live in problems.toml.

`q.check(fn)` displays one of three outcomes (not attempted / incorrect / correct) and never
raises; `q.grade(fn)` does the same comparison but raises AssertionError under a grader
(nbgrader sets NBGRADER_EXECUTION; GPTBOOK_GRADING=1 forces it), so the test cell scores 0.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
import numbers
import os
import signal
import textwrap
import threading
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import numpy as np
import torch

NOT_ATTEMPTED, INCORRECT, CORRECT = "not attempted", "incorrect", "correct"


@dataclass
class Outcome:
    """What a check found: status is one of NOT_ATTEMPTED, INCORRECT, CORRECT."""
    status: str
    message: str
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.status == CORRECT

    def __str__(self):
        mark = {CORRECT: "✓", INCORRECT: "✗", NOT_ATTEMPTED: "…"}[self.status]
        return f"{mark} {self.problem}: {self.status}. {self.message}".strip()

    def _repr_markdown_(self):
        color = {CORRECT: "green", INCORRECT: "#c00", NOT_ATTEMPTED: "#888"}[self.status]
        body = self.message.replace("\n", "  \n")
        return f'<span style="color:{color}">**{self.problem}: {self.status}.**</span> {body}'

    def __repr__(self):
        return str(self)


class Incorrect(Exception):
    """Raised by a problem's verify() with a message for the learner."""


class _TimeLimit(Exception):
    pass


def _env_grading() -> bool:
    return bool(os.environ.get("NBGRADER_EXECUTION")) or os.environ.get("GPTBOOK_GRADING") == "1"


# latched when the (locked) setup cell imports this module, before any learner code runs, so an
# answer cell that deletes the variables does not switch the grader off
_GRADING_AT_IMPORT = _env_grading()


def grading() -> bool:
    """True when running under a grader (nbgrader autograde/validate, or GPTBOOK_GRADING=1)."""
    return _GRADING_AT_IMPORT or _env_grading()


def _show(obj):
    try:
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is not None:
            display(obj)
            return
    except ImportError:
        pass
    print(obj)


def _round(v):
    if isinstance(v, list):
        return [_round(u) for u in v]
    return float(f"{v:.4g}") if isinstance(v, float) else v


def describe(x: Any) -> str:
    """A short description of a value for messages: tensors by dtype/shape, others by repr."""
    if torch.is_tensor(x):
        if x.numel() <= 16:
            return f"tensor({_round(x.detach().cpu().tolist())}, dtype={x.dtype})"
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    if isinstance(x, torch.nn.Module):
        return f"{type(x).__name__} module"
    if callable(x) and not isinstance(x, type):
        return f"<function {getattr(x, '__name__', type(x).__name__)}>"
    short = all(isinstance(v, (bool, int, float)) for v in x) if isinstance(x, (list, tuple)) else False
    if isinstance(x, (list, tuple)) and len(x) > (24 if short else 8):
        return f"{type(x).__name__} of length {len(x)}"
    if isinstance(x, (list, tuple)):
        inner = ", ".join(describe(v) for v in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
    if isinstance(x, float):
        return repr(float(f"{x:.6g}"))
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


def compare(expected: Any, got: Any, rtol: float = 1e-4, atol: float = 1e-5, where: str = "") -> None:
    """Raise Incorrect saying how `got` differs from `expected` (type, shape, dtype, values)."""
    at = f" at {where}" if where else ""
    if torch.is_tensor(expected):
        if not torch.is_tensor(got):
            raise Incorrect(f"expected a tensor{at}, got {type(got).__name__}: {describe(got)}")
        if got.shape != expected.shape:
            raise Incorrect(f"expected shape {tuple(expected.shape)}{at}, got {tuple(got.shape)}")
        if expected.dtype == torch.bool or not expected.is_floating_point():
            if got.dtype != expected.dtype:
                raise Incorrect(f"expected dtype {expected.dtype}{at}, got {got.dtype}")
            if not torch.equal(got.cpu(), expected.cpu()):
                first = tuple((got.cpu() != expected.cpu()).nonzero()[0].tolist())
                raise Incorrect(f"wrong values{at}: first difference at index {first}: expected "
                                f"{expected[first].item()!r}, got {got[first].item()!r}; expected "
                                f"{describe(expected)}, got {describe(got)}")
            return
        if not got.is_floating_point():
            raise Incorrect(f"expected a floating-point tensor{at}, got dtype {got.dtype}")
        g, e = got.detach().double().cpu(), expected.detach().double().cpu()
        bad = ~torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)   # (same shape) True = wrong
        if bad.any():
            first = tuple(bad.nonzero()[0].tolist())
            raise Incorrect(f"wrong values{at}: {int(bad.sum())} of {bad.numel()} elements differ "
                            f"(rtol={rtol}, atol={atol}); e.g. at index {first}: expected "
                            f"{e[first].item():.6g}, got {g[first].item():.6g}")
        return
    if isinstance(expected, bool) or expected is None:
        if torch.is_tensor(got) and got.numel() == 1 and got.dtype == torch.bool:
            got = bool(got)
        if got is not expected:
            raise Incorrect(f"expected {expected!r}{at}, got {describe(got)}")
        return
    if isinstance(expected, numbers.Real):
        if (torch.is_tensor(got) and got.numel() == 1) or isinstance(got, np.generic):
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            raise Incorrect(f"expected a number{at}, got {type(got).__name__}: {describe(got)}")
        if isinstance(expected, numbers.Integral) and not isinstance(got, numbers.Integral):
            raise Incorrect(f"expected an int{at}, got {type(got).__name__} {describe(got)}")
        if not math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
            raise Incorrect(f"expected {describe(expected)}{at}, got {describe(got)}")
        return
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            raise Incorrect(f"expected a {type(expected).__name__}{at}, got {type(got).__name__}: "
                            f"{describe(got)}")
        if len(got) != len(expected):
            raise Incorrect(f"expected {len(expected)} item{'s' * (len(expected) != 1)}{at}, got {len(got)}: "
                            f"expected {describe(expected)}, got {describe(got)}")
        for i, (e, g) in enumerate(zip(expected, got)):
            compare(e, g, rtol, atol, where=f"{where}[{i}]")
        return
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            raise Incorrect(f"expected a dict with keys {sorted(expected)}{at}, got {describe(got)}")
        for key in expected:
            compare(expected[key], got[key], rtol, atol, where=f"{where}[{key!r}]")
        return
    if type(got) is not type(expected) or got != expected:
        raise Incorrect(f"expected {describe(expected)}{at}, got {describe(got)}")


def _call_str(name: str, args: tuple) -> str:
    return f"{name}({', '.join(describe(a) for a in args)})"


class Problem:
    """One exercise. Subclasses set name, hints, reference and implement verify(fn)."""
    name: str = "fn"                       # the function or class the learner writes
    hints: List[str] = []
    reference: Optional[Callable] = None   # shown by .solution()
    uses: tuple = ()                       # gptbook functions the reference relies on (also shown)

    @property
    def time_limit(self) -> float:
        """Seconds per call of the learner's code (GPTBOOK_CALL_TIMEOUT, default 10); the grader
        also stops a whole cell after its own timeout."""
        try:
            return float(os.environ.get("GPTBOOK_CALL_TIMEOUT", 10))
        except ValueError:
            return 10.0

    def verify(self, fn) -> None:
        """Raise Incorrect (or any exception from fn) when fn is wrong."""
        raise NotImplementedError

    def _call(self, fn, *args):
        """Call the learner's fn with a wall-clock limit where SIGALRM is available."""
        usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
        if not usable:
            return fn(*args)

        def on_alarm(signum, frame):
            raise _TimeLimit()

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.time_limit)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    def evaluate(self, fn) -> Outcome:
        """Run the checks and return an Outcome; never raises (except KeyboardInterrupt)."""
        label = getattr(self, "label", self.name)
        if not callable(fn):
            return Outcome(INCORRECT, f"expected your function or class `{self.name}`, got "
                                      f"{type(fn).__name__}", label)
        try:
            self.verify(fn)
        except NotImplementedError:
            return Outcome(NOT_ATTEMPTED, f"`{self.name}` still raises NotImplementedError: "
                                          f"replace it with your code.", label)
        except Incorrect as e:
            return Outcome(INCORRECT, str(e), label)
        except _TimeLimit:
            return Outcome(INCORRECT, f"a call did not finish within {self.time_limit:.3g} s "
                                      f"(an infinite loop?)", label)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - anything the learner's code does is reported
            ctx = getattr(e, "_gptbook_call", "")
            return Outcome(INCORRECT, f"{ctx}raised {type(e).__name__}: {e}", label)
        return Outcome(CORRECT, "", label)

    def check(self, fn) -> None:
        """Display not attempted / incorrect (with the failing input) / correct. Never raises."""
        try:
            _show(self.evaluate(fn))
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - e.g. a display that fails
            print(f"{self.name}: could not check ({type(e).__name__}: {e})")

    def grade(self, fn, strict: Optional[bool] = None) -> None:
        """Like check; under a grader (or strict=True) raise AssertionError unless correct."""
        outcome = self.evaluate(fn)
        if (grading() if strict is None else strict) and not outcome.ok:
            raise AssertionError(str(outcome))
        _show(outcome)

    def hint(self, n: int = 1) -> None:
        """Display hint n (1-based)."""
        if not self.hints:
            _show("No hints for this one.")
            return
        n = min(max(1, n), len(self.hints))
        more = f"; .hint({n + 1}) gives the next" if n < len(self.hints) else ""
        _show(_Md(f"**Hint {n} of {len(self.hints)}{more}:** {self.hints[n - 1]}"))

    def solution_source(self) -> str:
        """The reference's source, plus the source of the gptbook functions it uses."""
        parts = [textwrap.dedent(inspect.getsource(self.reference))] if self.reference else []
        for f in self.uses:
            parts.append(f"# used above: {f.__module__}.{f.__qualname__}\n"
                         + textwrap.dedent(inspect.getsource(f)))
        return "\n".join(parts)

    def solution(self) -> None:
        """Display the reference solution's source."""
        _show(_Md("**Solution:**\n```python\n" + self.solution_source() + "```"))

    def __repr__(self):
        return f"<problem {self.name}: {(self.__doc__ or '').strip()}>"


class _Md(str):
    def _repr_markdown_(self):
        return str(self)


class FunctionProblem(Problem):
    """The learner writes a function; it is compared with `reference` on `cases()`.

    cases() returns a list of argument tuples, built fresh each time (inputs cannot leak).
    Tolerances rtol/atol apply to floating-point tensors and numbers.
    """
    rtol, atol = 1e-4, 1e-5
    no_grad = False     # True: the learner's function and the reference run under torch.no_grad()

    def cases(self) -> list:
        raise NotImplementedError("a FunctionProblem needs cases()")

    def expected(self, *args):
        return type(self).reference(*args)

    def verify(self, fn) -> None:
        with torch.no_grad() if self.no_grad else contextlib.nullcontext():
            self._verify_cases(fn)

    def _verify_cases(self, fn) -> None:
        for args in self.cases():
            call = _call_str(self.name, args)
            try:
                got = self._call(fn, *copy.deepcopy(args))
            except (NotImplementedError, _TimeLimit, KeyboardInterrupt):
                raise
            except BaseException as e:  # noqa: BLE001
                e._gptbook_call = f"{call} "
                raise
            want = self.expected(*copy.deepcopy(args))   # after the learner's call: a stub costs nothing
            try:
                compare(want, got, self.rtol, self.atol)
            except Incorrect as e:
                raise Incorrect(f"for {call}: {e}") from None
            except Exception as e:  # a comparison that cannot even run
                raise Incorrect(f"for {call}: cannot compare {describe(got)} with the expected "
                                f"{describe(want)} ({type(e).__name__}: {e})") from None


@functools.lru_cache(maxsize=1)
def _texts() -> dict:
    from ..data import package_toml
    return package_toml(__package__, "problems.toml")


def problem_text(name: str) -> dict:
    """problems.toml's entry for the problem `name`: chapter, doc (one line) and hints."""
    if name not in _texts():
        raise KeyError(f"problem {name!r} has no entry in gptbook/exercises/problems.toml")
    return _texts()[name]


def function_problem(name: str, reference: Callable, uses: tuple = (), **attrs):
    """Declare a FunctionProblem. The decorated function returns the cases (argument tuples,
    built fresh on each call); the learner's `name` is compared with `reference` on each;
    .solution() shows reference and `uses`; the one-line doc and the hints are problems.toml's.
    attrs sets FunctionProblem options (rtol, atol, no_grad). Returns the problem class."""
    def wrap(cases: Callable[[], list]):
        text = problem_text(name)
        body = dict(__doc__=text["doc"], __module__=cases.__module__, name=name, hints=list(text["hints"]),
                    reference=staticmethod(reference), uses=tuple(uses), cases=lambda self: cases(), **attrs)
        return type("".join(w.title() for w in name.split("_")), (FunctionProblem,), body)
    return wrap


def gen(seed: int) -> torch.Generator:
    """A CPU generator with this seed: cases draw from it, so they are the same on every call."""
    return torch.Generator().manual_seed(seed)


def problems_of(classes) -> list:
    """One instance of each Problem class, in order (q1, q2, ... in an exercise notebook)."""
    return [cls() for cls in classes]
