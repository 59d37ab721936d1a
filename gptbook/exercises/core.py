"""Plumbing for the exercises: one check per problem, two ways to call it.

A problem (chNN.py) is a reference and the cases the learner's function is compared on
(`function_problem`, which makes a FunctionProblem), or an instance of a Problem subclass with its
own observe()/verdict(); each chapter module lists them in PROBLEMS. Each problem's one-line
description and hints live in problems.toml.

A check has two halves, so that a grader can keep them in different processes:
- observe(fn) runs the learner's code on the cases and keeps what came back as plain data
  (to_wire: tensors, numbers, strings, lists, dicts; anything else by its type and description);
- judge(observations) computes the reference's answers itself and compares; it never runs
  learner code.
q.check(fn) / q.grade(fn) do both in the notebook. A grader (`python -m gptbook exercises grade`,
or nbgrader with gptbook's nbgrader_config.py) also calls record() in the kernel after each test
cell and judges the record in its own process: monkeypatching the checker inside the kernel
changes what the notebook displays, not the score.

`q.check(fn)` displays one of three outcomes (not attempted / incorrect / correct) and never
raises; `q.grade(fn)` does the same comparison but raises AssertionError under a grader
(nbgrader sets NBGRADER_EXECUTION; GPTBOOK_GRADING=1 forces it), so the test cell scores 0.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import importlib
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
    """Raised by a problem's verdict() with a message for the learner."""


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
    from ..viz import show     # imported here: a grader process need not load matplotlib to grade
    show(obj)


def _round(v):
    if isinstance(v, list):
        return [_round(u) for u in v]
    return float(f"{v:.4g}") if isinstance(v, float) else v


@dataclass(frozen=True)
class Foreign:
    """A value the learner's code returned that is not plain data (a module, a numpy array, a
    generator, ...): the grader only gets its type name and a description, never the object."""
    type_name: str
    text: str

    def __repr__(self):
        return self.text


def _type_name(x: Any) -> str:
    return x.type_name if isinstance(x, Foreign) else type(x).__name__


def _safe_str(x: Any, limit: int = 300) -> str:
    """str(x) for messages; learner objects may have a __str__ that raises or never ends."""
    try:
        text = str(x)
    except Exception:  # noqa: BLE001
        text = f"<{type(x).__name__} that cannot be printed>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


_WIRE_MAX_DEPTH = 12                 # deeper nesting is described, not copied (e.g. a list that contains itself)
_WIRE_MAX_ELEMENTS = 4_000_000       # a bigger tensor is described, not copied: no case needs one


def to_wire(x: Any, depth: int = 0):
    """A learner's value as plain data that torch.load(weights_only=True) reads back without running
    code: tagged lists ["tensor", t] / ["v", 3] / ["list", [...]] / ["tuple", [...]] / ["dict", [[k, v]]]
    / ["foreign", type name, description]. numpy scalars become Python numbers (as compare() treats them)."""
    if isinstance(x, np.generic):
        x = x.item()
    if torch.is_tensor(x):
        t = x.detach()
        if t.layout != torch.strided or t.is_quantized or t.numel() > _WIRE_MAX_ELEMENTS or t.is_meta:
            return ["foreign", "Tensor", describe(x)]
        return ["tensor", t.cpu().clone().as_subclass(torch.Tensor)]   # a plain tensor: no subclass to unpickle
    if x is None or type(x) in (bool, int, float, str):
        return ["v", x]
    if depth >= _WIRE_MAX_DEPTH:
        return ["foreign", type(x).__name__, f"{type(x).__name__} nested more than {_WIRE_MAX_DEPTH} deep"]
    if isinstance(x, int):                                  # IntEnum and friends compare as ints
        return ["v", int(x)]
    if isinstance(x, float):
        return ["v", float(x)]
    if isinstance(x, str):
        return ["v", str(x)]
    if isinstance(x, (list, tuple)):
        tag = "tuple" if isinstance(x, tuple) else "list"   # a namedtuple travels as a tuple
        return [tag, [to_wire(v, depth + 1) for v in x]]
    if isinstance(x, dict):
        return ["dict", [[to_wire(k, depth + 1), to_wire(v, depth + 1)] for k, v in x.items()]]
    try:
        text = describe(x)
    except Exception:  # noqa: BLE001 - a learner object whose repr raises
        text = f"<{type(x).__name__}>"
    return ["foreign", type(x).__name__, text]


def from_wire(w):
    """The value to_wire() encoded (Foreign for what was not plain data). Raises ValueError on
    anything else: a record is read from a file the learner's kernel wrote."""
    if not isinstance(w, list) or not w or not isinstance(w[0], str):
        raise ValueError(f"not a recorded value: {type(w).__name__}")
    tag = w[0]
    if tag == "tensor" and len(w) == 2 and torch.is_tensor(w[1]):
        return w[1]
    if tag == "v" and len(w) == 2 and (w[1] is None or type(w[1]) in (bool, int, float, str)):
        return w[1]
    if tag in ("list", "tuple") and len(w) == 2 and isinstance(w[1], list):
        items = [from_wire(v) for v in w[1]]
        return items if tag == "list" else tuple(items)
    if tag == "dict" and len(w) == 2 and isinstance(w[1], list):
        out = {}
        for pair in w[1]:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError("malformed recorded dict")
            key = from_wire(pair[0])
            try:
                hash(key)
            except TypeError:                               # e.g. a list inside a tuple key
                key = Foreign(type(key).__name__, describe(key))
            out[key] = from_wire(pair[1])
        return out
    if tag == "foreign" and len(w) == 3 and all(isinstance(v, str) for v in w[1:]):
        return Foreign(w[1], w[2])
    raise ValueError(f"not a recorded value: tag {tag!r}")


def describe(x: Any) -> str:
    """A short description of a value for messages: tensors by dtype/shape, others by repr."""
    if isinstance(x, Foreign):
        return x.text
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
    """Raise Incorrect saying how `got` differs from `expected`: containers item by item (a list or a
    tuple for either), tensors and numbers by torch.testing.assert_close after checking type, shape
    and dtype (floats within rtol/atol, integer and bool tensors exactly), anything else by ==."""
    at = f" at {where}" if where else ""
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            raise Incorrect(f"expected a dict with keys {list(expected)}{at}, got {describe(got)}")
        for key in expected:
            compare(expected[key], got[key], rtol, atol, where=f"{where}[{key!r}]")
        return
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            raise Incorrect(f"expected a {type(expected).__name__} of {len(expected)} item"
                            f"{'s' * (len(expected) != 1)}{at}: {describe(expected)}, got {_type_name(got)}: "
                            f"{describe(got)}")
        for i, (e, g) in enumerate(zip(expected, got)):
            compare(e, g, rtol, atol, where=f"{where}[{i}]")
        return
    shown = ""
    if torch.is_tensor(expected):
        if not torch.is_tensor(got):
            raise Incorrect(f"expected a tensor{at}, got {_type_name(got)}: {describe(got)}")
        exact = not expected.is_floating_point()                 # bool and integer tensors: same dtype
        if got.shape != expected.shape:
            raise Incorrect(f"expected shape {tuple(expected.shape)}{at}, got {tuple(got.shape)}")
        if (got.dtype != expected.dtype) if exact else not got.is_floating_point():
            want = f"dtype {expected.dtype}" if exact else "a floating-point dtype"
            raise Incorrect(f"expected {want}{at}, got dtype {got.dtype}")
        if expected.dim() and expected.numel() <= 16:        # assert_close shows a 0-d one's values
            shown = f" (expected {describe(expected)}, got {describe(got)})"
    elif isinstance(expected, numbers.Real) and not isinstance(expected, bool):
        if (torch.is_tensor(got) and got.numel() == 1) or isinstance(got, np.generic):
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            raise Incorrect(f"expected a number{at}, got {_type_name(got)}: {describe(got)}")
        if isinstance(expected, numbers.Integral) and not isinstance(got, numbers.Integral):
            raise Incorrect(f"expected an int{at}, got {_type_name(got)} {describe(got)}")
        exact, got, expected = False, float(got), float(expected)
    else:
        if isinstance(expected, bool) and torch.is_tensor(got) and got.numel() == 1 and got.dtype == torch.bool:
            got = bool(got)
        if type(got) is not type(expected) or got != expected:
            raise Incorrect(f"expected {describe(expected)}{at}, got {describe(got)}")
        return
    try:
        torch.testing.assert_close(got, expected, rtol=0 if exact else rtol, atol=0 if exact else atol,
                                   equal_nan=True, check_dtype=False, check_device=False)
    except AssertionError as e:
        raise Incorrect(f"not the expected values{at}{shown}:\n{e}") from None


def _call_str(name: str, args: tuple) -> str:
    return f"{name}({', '.join(describe(a) for a in args)})"


class _NotAttempted(Exception):
    pass


class Problem:
    """One exercise. Subclasses set name, hints, reference and implement _observe(fn) (run the
    learner's code, keep plain data) and verdict(observations) (raise Incorrect when wrong)."""
    name: str = "fn"                       # the function or class the learner writes
    hints: List[str] = []
    reference: Optional[Callable] = None   # shown by .solution()
    uses: tuple = ()                       # gptbook functions the reference relies on (also shown)

    @property
    def time_limit(self) -> float:
        """Seconds per call of the learner's code (GPTBOOK_CALL_TIMEOUT, default 10); the grader
        also stops a whole cell after its own timeout."""
        try:
            limit = float(os.environ.get("GPTBOOK_CALL_TIMEOUT", 10))
        except ValueError:
            return 10.0
        return limit if 0 < limit < math.inf else 10.0    # 0, negative or nan would switch the limit off

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

    # ---- learner side: run the code, keep plain data

    def _attempt(self, thunk) -> dict:
        """One observation: {"value": to_wire(result)}, {"not_attempted": True} (NotImplementedError),
        {"timeout": seconds} or {"raised": "Type: message"}. Never raises but KeyboardInterrupt,
        which is how a grader stops a cell that runs too long."""
        try:
            return {"value": to_wire(thunk())}
        except NotImplementedError:
            return {"not_attempted": True}
        except _TimeLimit:
            return {"timeout": self.time_limit}
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - anything the learner's code does is reported
            return {"raised": f"{type(e).__name__}: {_safe_str(e)}"}

    def observe(self, fn) -> list:
        """Run the learner's fn (in the learner's process) and return a list of observations, plain
        data that judge() reads, in the order verdict() needs them. Stops at the first call that
        does not return."""
        if not callable(fn):
            return [{"not_callable": type(fn).__name__}]
        return self._observe(fn)

    def _observe(self, fn) -> list:
        raise NotImplementedError

    # ---- grader side: never runs learner code

    def verdict(self, observations: list) -> None:
        """Raise Incorrect (with a message for the learner) unless the observations are right."""
        raise NotImplementedError

    def _unpack(self, observations: list, i: int, call: str):
        """The value of observation i, or raise what it says went wrong (the first problem wins)."""
        entry = observations[i] if i < len(observations) else None
        if not isinstance(entry, dict):
            raise Incorrect(f"no result was recorded for {call}")
        if "value" in entry:
            return from_wire(entry["value"])
        if entry.get("not_attempted"):
            raise _NotAttempted()
        if entry.get("not_defined"):
            raise Incorrect(f"`{self.name}` is not defined (was its answer cell run, deleted or renamed?)")
        if "not_callable" in entry:
            raise Incorrect(f"expected your function or class `{self.name}`, got {entry['not_callable']}")
        if "timeout" in entry:
            raise Incorrect(f"{call} did not finish within {float(entry['timeout']):.3g} s (an infinite loop?)")
        if "raised" in entry:
            raise Incorrect(f"{call} raised {entry['raised']}")
        raise Incorrect(f"no result was recorded for {call}")

    def judge(self, observations) -> Outcome:
        """The Outcome of a list of observations (from observe(), maybe in another process). Never
        raises: a malformed record is incorrect."""
        label = getattr(self, "label", self.name)
        try:
            if not isinstance(observations, list):
                raise Incorrect("the record of your answer is malformed")
            self.verdict(observations)
        except _NotAttempted:
            return Outcome(NOT_ATTEMPTED, f"`{self.name}` still raises NotImplementedError: "
                                          f"replace it with your code.", label)
        except Incorrect as e:
            return Outcome(INCORRECT, str(e), label)
        except Exception as e:  # noqa: BLE001 - e.g. a record that does not have the expected layout
            return Outcome(INCORRECT, f"the record of your answer could not be judged "
                                      f"({type(e).__name__}: {_safe_str(e)})", label)
        return Outcome(CORRECT, "", label)

    def evaluate(self, fn) -> Outcome:
        """observe + judge in this process; never raises (except KeyboardInterrupt)."""
        return self.judge(self.observe(fn))

    def check(self, fn) -> None:
        """Display not attempted / incorrect (with the failing input) / correct. Never raises."""
        try:
            _show(self.evaluate(fn))
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - e.g. a display that fails
            print(f"{self.name}: could not check ({type(e).__name__}: {e})")

    def grade(self, fn, strict: Optional[bool] = None) -> None:
        """Like check; under a grader (or strict=True) raise AssertionError unless correct.
        (The grader's score comes from record() + judge() outside this process, not from here.)"""
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
    """The learner writes the function `name`; it is compared with `reference` on `cases()`.

    cases() returns a list of argument tuples, built fresh each time (inputs cannot leak) and the
    same in every process (seeded), so the grader rebuilds them instead of trusting the kernel's.
    Tolerances rtol/atol apply to floating-point tensors and numbers; no_grad=True runs the
    learner's function and the reference under torch.no_grad(). The one-line description and the
    hints are problems.toml's.
    """

    def __init__(self, name: str, reference: Callable, cases: Callable[[], list], uses: tuple = (),
                 rtol: float = 1e-4, atol: float = 1e-5, no_grad: bool = False):
        text = problem_text(name)
        self.name, self.reference, self._cases, self.uses = name, reference, cases, tuple(uses)
        self.rtol, self.atol, self.no_grad = rtol, atol, no_grad
        self.__doc__, self.hints = text["doc"], list(text["hints"])

    def cases(self) -> list:
        return self._cases()

    def expected(self, *args):
        return self.reference(*args)

    def _grad_mode(self):
        return torch.no_grad() if self.no_grad else contextlib.nullcontext()

    def _observe(self, fn) -> list:
        out = []
        with self._grad_mode():
            for args in self.cases():
                out.append(self._attempt(lambda: self._call(fn, *copy.deepcopy(args))))
                if "value" not in out[-1]:
                    break
        return out

    def verdict(self, observations: list) -> None:
        for i, args in enumerate(self.cases()):
            call = _call_str(self.name, args)
            got = self._unpack(observations, i, call)
            with self._grad_mode():
                want = self.expected(*copy.deepcopy(args))
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


def function_problem(name: str, reference: Callable, uses: tuple = (), **options):
    """Decorator declaring a FunctionProblem: the decorated function returns the cases (argument
    tuples, built fresh on each call); the learner's `name` is compared with `reference` on each;
    .solution() shows reference and `uses`; options are rtol, atol, no_grad. Returns the problem."""
    return lambda cases: FunctionProblem(name, reference, cases, uses, **options)


_GLOBAL_RNG = threading.RLock()


@contextlib.contextmanager
def seeded(seed: int):
    """Inside: torch's global generator seeded to `seed` (for modules whose constructors draw from
    it), restored afterwards. One thread at a time: the global generator is shared by all threads,
    so graders judging in parallel threads would otherwise draw each other's numbers."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def gen(seed: int) -> torch.Generator:
    """A CPU generator with this seed: cases draw from it, so they are the same on every call."""
    return torch.Generator().manual_seed(seed)


def problems_of(problems) -> list:
    """A fresh copy of each problem, in order (q1, q2, ... in an exercise notebook)."""
    return [copy.copy(p) for p in problems]


def problem_named(name: str) -> Problem:
    """A fresh copy of the problem whose learner-written function or class is `name` (its
    chapter module comes from problems.toml)."""
    module = importlib.import_module(f"{__package__}.ch{problem_text(name)['chapter']}")
    for p in module.PROBLEMS:
        if p.name == name:
            return copy.copy(p)
    raise KeyError(f"problem {name!r} is in problems.toml but not in {module.__name__}.PROBLEMS")


def record(name: str, get_answer: Callable, path: str) -> None:
    """Grader only: in the learner's kernel, after the test cell of problem `name`, write what the
    answer does on the problem's cases (observe(), plain data) to `path`. The grader judges that
    file in its own process (gptbook.exercises.judge), where the learner's code never ran: patching
    this kernel's checker changes no score, and a forged record would have to contain the
    reference's own results. get_answer is `lambda: <name>`, so an undefined name is recorded too."""
    try:
        fn = get_answer()
    except NameError:
        observations = [{"not_defined": True}]
    else:
        observations = problem_named(name).observe(fn)
    torch.save({"problem": name, "observations": observations}, path)
