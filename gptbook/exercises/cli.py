"""`python -m gptbook exercises release|grade`: student copies and a grader that never dies.

release: strip the solution regions of exercises/*/*.ipynb (nbgrader's ClearSolutions, or a
built-in stripper) into build/release/. grade: restore the locked cells from the source, run the
submission in a fresh kernel with a per-cell timeout (nbclient), record each answer after its test
cell and judge the records in this process (judge.py), and print points per problem. Whatever the
submission does, the exit code is 0; a submission file that does not exist, or a bad option, is
an error (exit code 2).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import nbformat

from . import judge
from .core import CORRECT, INCORRECT

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO / "exercises"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
_REGION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*$", re.S | re.M)
_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[^\n]*\n?", re.S | re.M)


def meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def source_notebooks(source_dir: Path = SOURCE_DIR) -> List[Path]:
    """exercises/{assignment}/{notebook}.ipynb, sorted."""
    return sorted(Path(source_dir).glob("*/*.ipynb"))


def strip_solutions(nb):
    """Student version: solution regions -> '# YOUR CODE HERE / raise NotImplementedError()',
    hidden tests removed, outputs cleared. Uses nbgrader's ClearSolutions when it is installed."""
    nb = copy.deepcopy(nb)
    try:
        from nbgrader.preprocessors import ClearSolutions
        nb, _ = ClearSolutions().preprocess(nb, {})
    except ImportError:
        for cell in nb.cells:
            if cell.cell_type == "code" and meta(cell).get("solution"):
                cell.source = _REGION.sub(lambda m: "\n".join(m.group(1) + line for line in STUB.split("\n")),
                                          cell.source)
    for cell in nb.cells:
        if meta(cell).get("grade"):
            cell.source = _HIDDEN.sub("", cell.source)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


_LINK = re.compile(r"(\]\()([^)\s#]+)([^)\s]*\))")


def relink(nb, from_dir: Path, to_dir: Path):
    """Relative Markdown links of a notebook moved from from_dir to to_dir, rewritten so that they
    still reach the same files (a student copy in build/release/ links to the chapter it follows)."""
    def fix(m):
        link = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I) or link.startswith("/"):
            return m.group(0)                           # http:, mailto:, absolute: unchanged
        target = (Path(from_dir) / link).resolve()
        return m.group(1) + os.path.relpath(target, Path(to_dir).resolve()).replace(os.sep, "/") + m.group(3)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _LINK.sub(fix, cell.source)
    return nb


def release(out: Path, source_dir: Path = SOURCE_DIR) -> List[Path]:
    """Write student copies of every source notebook under out/{assignment}/ (links still resolve)."""
    written = []
    for path in source_notebooks(source_dir):
        target = Path(out) / path.parent.name / path.name
        nb = relink(strip_solutions(nbformat.read(path, as_version=4)), path.parent, target.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        written.append(target)
    return written


def find_source(submission, source_dir: Path = SOURCE_DIR) -> Path:
    """The source notebook of a submission: same file name, else the most grade_ids in common."""
    name = Path(submission).name
    candidates = source_notebooks(source_dir)
    for path in candidates:
        if path.name == name:
            return path
    try:
        ids = {meta(c).get("grade_id") for c in nbformat.read(submission, as_version=4).cells}
    except Exception:  # noqa: BLE001 - an unreadable submission has nothing in common
        ids = set()
    scored = [(len(ids & {meta(c).get("grade_id") for c in nbformat.read(p, as_version=4).cells}), p)
              for p in candidates]
    best = max(scored, default=(0, None))
    if not best[0]:
        raise FileNotFoundError(f"no source notebook in {source_dir} matches {name}; pass --source")
    return best[1]


def restore_locked(submission, source):
    """The notebook to run: the submission's own cells, with every locked source cell (setup,
    tests) put back as in the source, missing answer cells replaced by stubs, and cells that
    pretend to be graded but are not in the source dropped."""
    src_cells = {meta(c)["grade_id"]: c for c in source.cells if meta(c).get("grade_id")}
    out, seen = [], set()
    for cell in submission.cells:
        gid = meta(cell).get("grade_id")
        if gid is None:
            if cell.cell_type == "code":
                cell.metadata.pop("nbgrader", None)
            out.append(cell)
        elif gid in src_cells and gid not in seen:
            seen.add(gid)
            src = src_cells[gid]
            if meta(src).get("locked") or meta(src).get("grade"):
                out.append(copy.deepcopy(src))
            else:
                cell.metadata["nbgrader"] = copy.deepcopy(meta(src))  # keep the answer, fix its metadata
                out.append(cell)
    # put back the graded cells that are gone, after their predecessor in the source
    order = [meta(c).get("grade_id") for c in source.cells]
    stubbed = strip_solutions(source)
    for i, cell in enumerate(stubbed.cells):
        gid = order[i]
        if gid is None or gid in seen:
            continue
        prev = [g for g in order[:i] if g in seen]
        pos = 0
        if prev:
            pos = 1 + next(j for j, c in enumerate(out) if meta(c).get("grade_id") == prev[-1])
        out.insert(pos, copy.deepcopy(cell))
        seen.add(gid)
    nb = copy.deepcopy(source)
    nb.cells = out
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


@dataclass
class Row:
    problem: str
    points: float
    max_points: float
    status: str
    message: str = ""


@dataclass
class Report:
    submission: str
    rows: List[Row] = field(default_factory=list)
    error: str = ""      # a failure of the whole run (kernel died, unreadable notebook), if any

    @property
    def score(self) -> float:
        return sum(r.points for r in self.rows)

    @property
    def max_score(self) -> float:
        return sum(r.max_points for r in self.rows)

    def text(self) -> str:
        w = max([len(r.problem) for r in self.rows] + [7])
        lines = [f"Grading {self.submission}", f"{'problem':{w}s}  points  status         message"]
        for r in self.rows:
            msg = r.message.replace("\n", " ")
            msg = msg if len(msg) <= 400 else msg[:397] + "..."
            lines.append(f"{r.problem:{w}s}  {r.points:g}/{r.max_points:g}{'':3s} {r.status:14s} {msg}")
        if self.error:
            lines.append(f"note: {self.error}")
        lines.append(f"Total: {self.score:g} / {self.max_score:g}")
        return "\n".join(lines)


TIMEOUT_ENAME = "CellTimeout"      # the error nbclient reports for a cell that ran past the timeout
PROBE_TIMEOUT = 10                 # seconds a kernel gets to answer after an interrupted cell


def check_timeout(timeout) -> float:
    """The per-cell timeout in seconds; 0, negative, nan or infinite would let a submission that
    loops (and ignores interrupts) hang the grader, so they are refused."""
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        raise ValueError(f"the timeout must be a number of seconds, got {timeout!r}") from None
    if not (0 < t < math.inf):
        raise ValueError(f"the timeout must be a positive number of seconds, got {timeout!r}; "
                         f"there is no way to switch it off (the default is 30)")
    return t


def _cell_result(results: dict, cell) -> tuple:
    """(status, message) of a cell from how its execution ended (the kernel's execute reply, kept
    by _execute): "ok", "timeout", "error" or "not run"."""
    r = results.get(id(cell))
    if r is None:
        return "not run", "the cell did not run (an earlier cell timed out or the kernel died)"
    if r.get("status") == "ok":
        return "ok", ""
    ename, evalue = r.get("ename", "Error"), r.get("evalue", "")
    if ename in (TIMEOUT_ENAME, "KeyboardInterrupt"):
        return "timeout", "the cell ran past the time limit and was interrupted"
    if ename == "NameError":
        return "error", f"{ename}: {evalue} (was the answer cell run, deleted or renamed?)"
    return "error", f"{ename}: {evalue}"


def grade_notebook(submission, source=None, timeout: float = 30, kernel_name: str = "python3") -> Report:
    """Run a submission with its locked cells restored and score each test cell; never raises but
    ValueError for a timeout that is not a positive number of seconds.

    A problem gptbook knows scores its points only when the judge, in this process, finds the
    recorded answer correct and the test cell itself (hidden tests included) raised nothing."""
    timeout = check_timeout(timeout)
    report = Report(str(submission))
    if not Path(submission).is_file():
        report.error = f"submission not found: {submission}"
        return report
    try:
        source = Path(source) if source else find_source(submission)
        src = nbformat.read(source, as_version=4)
    except Exception as e:  # noqa: BLE001
        report.error = f"cannot find or read the source notebook: {type(e).__name__}: {e}"
        return report
    tests = [c for c in src.cells if meta(c).get("grade")]
    try:
        sub = nbformat.read(submission, as_version=4)
    except Exception as e:  # noqa: BLE001 - unreadable: every problem scores 0
        sub = None
        report.error = f"cannot read the submission: {type(e).__name__}: {e}"
    if sub is not None:
        answers = {meta(c).get("grade_id") for c in src.cells if meta(c).get("solution")}
        if answers and not answers & {meta(c).get("grade_id") for c in sub.cells}:
            report.error = (f"none of the answer cells of {Path(source).name} is in the submission; "
                            f"is it the right source notebook (--source)?")
    executed, results, plan = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="gptbook-grade-") as records:
        if sub is not None:
            nb = restore_locked(sub, src)
            plan = judge.add_record_cells(nb, Path(records))
            stopped = _execute(nb, timeout, kernel_name, results)
            report.error = "; ".join(e for e in (report.error, stopped) if e)
            executed = {meta(c).get("grade_id"): c for c in nb.cells if meta(c).get("grade_id")}
        outcomes = {gid: judge.judge_record(p) for gid, p in plan.items()}
    for t in tests:
        gid, pts = meta(t)["grade_id"], float(meta(t).get("points", 0))
        name = gid[5:] if gid.startswith("test_") else gid
        if gid not in executed:
            report.rows.append(Row(name, 0.0, pts, "not run", report.error or "not executed"))
            continue
        test_status, test_msg = _cell_result(results, executed[gid])
        if gid in plan:
            outcome = outcomes[gid]
            if outcome is None:                  # no record: say why from the record cell
                status, msg = _cell_result(results, plan[gid].record_cell)
                if status == "ok":
                    status, msg = "error", "the answer was not recorded"
                elif status == "timeout":
                    msg = "checking the answer ran past the time limit (an infinite loop?)"
                elif status == "not run":
                    msg = report.error or msg
                else:
                    msg = f"checking the answer failed: {msg}"
            elif outcome.ok and test_status != "ok":   # e.g. a teacher's hidden test failed
                status, msg = (test_status if test_status in ("timeout", "not run") else INCORRECT,
                               f"the test cell failed: {test_msg}")
            else:
                status, msg = outcome.status, outcome.message
        else:                                    # a test cell gptbook does not know: nbgrader's rule
            status, msg = (CORRECT, "") if test_status == "ok" else (test_status, test_msg)
        answer = executed.get(name)
        if answer is not None and meta(answer).get("solution"):
            a_status, a_msg = _cell_result(results, answer)
            if status != CORRECT and a_status in ("timeout", "error"):   # the answer cell failed: say that first
                status, msg = ("timeout" if a_status == "timeout" else status), f"answer cell: {a_msg}"
            elif status == CORRECT and a_status == "timeout":
                msg = ("the answer cell ran past the time limit and was interrupted, after defining "
                       f"`{name}`: remove the slow code after the function")
        report.rows.append(Row(name, pts if status == CORRECT else 0.0, pts, status, msg))
    return report


def _execute(nb, timeout: float, kernel_name: str, results: dict) -> str:
    """Run the notebook's code cells in a fresh kernel, each with `timeout` seconds, and keep how
    each ended in results[id(cell)] (the kernel's execute reply: status, ename, evalue). Returns ""
    or why execution stopped early; cells after that did not run and score 0."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["GPTBOOK_GRADING"] = "1"                 # q.grade raises in the kernel: the cell shows why
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("GPTBOOK_CALL_TIMEOUT", f"{max(1.0, min(10.0, timeout / 3)):.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                                interrupt_on_timeout=True,
                                error_on_timeout={"ename": TIMEOUT_ENAME,
                                                  "evalue": f"the cell ran past {timeout:g} s", "traceback": []},
                                record_timing=False, resources={"metadata": {"path": tmp}})
        client.on_cell_executed = lambda cell, execute_reply, **kw: results.__setitem__(
            id(cell), dict(execute_reply.get("content", {})))
        try:
            # the cells one by one (not client.execute()), to stop when the kernel no longer answers
            with client.setup_kernel(env=env):
                client.wait_for_reply(client.kc.kernel_info())
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                    if _cell_result(results, cell)[0] == "timeout" and not _answers(client, index):
                        return (f"the kernel stopped answering after a cell ran past the {timeout:g} s limit "
                                f"(the interrupt did not stop it); the cells after it were not run")
        except DeadKernelError:
            return "execution stopped: the kernel died (os._exit, a crash or out of memory?)"
        except Exception as e:  # noqa: BLE001 - an nbclient error: score what ran
            return f"execution stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return ""


def _answers(client, index: int) -> bool:
    """After an interrupted cell: does the kernel run a trivial cell within PROBE_TIMEOUT? A kernel
    that ignores interrupts would otherwise make every later cell wait the full timeout."""
    probe, original = nbformat.v4.new_code_cell("pass"), client.nb.cells[index]
    old, client.timeout = client.timeout, PROBE_TIMEOUT
    seen = {}
    hook, client.on_cell_executed = client.on_cell_executed, lambda cell, execute_reply, **kw: seen.update(
        execute_reply.get("content", {}))
    try:
        client.execute_cell(probe, index, store_history=False)
    finally:
        client.timeout, client.on_cell_executed = old, hook
        client.nb.cells[index] = original        # execute_cell stores the cell it ran at `index`
    return seen.get("status") == "ok"


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gptbook exercises",
                                     description="release or grade the exercise notebooks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("release", help="write student copies (solutions stripped)")
    r.add_argument("--out", default=str(REPO / "build" / "release"))
    r.add_argument("--source-dir", default=str(SOURCE_DIR))
    g = sub.add_parser("grade", help="score submissions (exit 0 whatever they do; 2 if a file is missing)")
    g.add_argument("submissions", nargs="+")
    g.add_argument("--source", default=None, help="source notebook (default: matched by name)")
    g.add_argument("--timeout", type=_timeout_arg, default=30,
                   help="seconds per cell, > 0 (default 30); it cannot be switched off")
    g.add_argument("--json", default=None, help="also write the reports as JSON to this file")
    args = parser.parse_args(argv)
    if args.cmd == "release":
        for path in release(Path(args.out), Path(args.source_dir)):
            print(f"wrote {path}")
        return 0
    if args.source and not Path(args.source).is_file():
        parser.error(f"--source {args.source}: no such file")
    reports, missing = [], []
    for s in args.submissions:
        if not Path(s).is_file():                # a typo in a path is the caller's error, not a 0/0
            missing.append(s)
            print(f"error: submission not found: {s}", file=sys.stderr, flush=True)
            reports.append(Report(s, error=f"submission not found: {s}"))
            continue
        try:
            rep = grade_notebook(s, args.source, args.timeout)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - the grading run itself never dies
            rep = Report(s, error=f"grading failed: {type(e).__name__}: {e}")
        reports.append(rep)
        print(rep.text(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([dict(asdict(x), score=x.score, max_score=x.max_score)
                                               for x in reports], indent=1, ensure_ascii=False))
    if missing:
        print(f"error: {len(missing)} submission file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    return 0


def _timeout_arg(text: str) -> float:
    try:
        return check_timeout(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


if __name__ == "__main__":
    sys.exit(main())
