"""`python -m gptbook exercises release|grade`: student copies and a grader that never dies.

release: strip the solution regions of exercises/*/*.ipynb (nbgrader's ClearSolutions, or a
built-in stripper) into build/release/. grade: restore the locked cells from the source, run the
submission with a per-cell timeout (nbclient) and print points per problem; exit code 0 always.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import nbformat

from .core import INCORRECT, NOT_ATTEMPTED, CORRECT

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


def release(out: Path, source_dir: Path = SOURCE_DIR) -> List[Path]:
    """Write student copies of every source notebook under out/{assignment}/."""
    written = []
    for path in source_notebooks(source_dir):
        nb = strip_solutions(nbformat.read(path, as_version=4))
        target = Path(out) / path.parent.name / path.name
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


def _parse_outcome(text: str):
    """(status, message) from an Outcome's text "✗ name: incorrect. <what failed>", or None."""
    for status in (NOT_ATTEMPTED, INCORRECT):
        if f": {status}. " in text or text.rstrip().endswith(f": {status}."):
            return status, text.split(f": {status}.", 1)[1].strip()
    return None


def _status(cell, name: str = "") -> tuple:
    """(status, message) of an executed cell from its outputs. A test cell that calls q.grade must
    also have displayed "<name>: correct." (so switching the grader off does not earn points)."""
    outputs = cell.get("outputs", [])
    errors = [o for o in outputs if o.get("output_type") == "error"]
    if cell.get("execution_count") is None and not errors:
        return "not run", "the cell did not run (an earlier cell timed out or the kernel died)"
    if not errors:
        texts = " ".join(str(o.get("data", {}).get("text/plain", o.get("text", ""))) for o in outputs)
        if name and ".grade(" in cell.source and f"{name}: {CORRECT}." not in texts:
            shown = _parse_outcome(texts)
            if shown:  # the grader was switched off: q.grade displayed instead of raising
                return shown
            return INCORRECT, "the test cell did not report a correct result " + texts.strip()[:300]
        return CORRECT, ""
    e = errors[0]
    ename, evalue = e.get("ename", "Error"), e.get("evalue", "")
    if ename == "KeyboardInterrupt":
        return "timeout", "the cell ran past the time limit and was interrupted"
    if ename == "AssertionError":
        return _parse_outcome(evalue) or (INCORRECT, f"AssertionError: {evalue}")
    if ename == "NameError":
        return INCORRECT, f"{ename}: {evalue} (was the answer cell run, deleted or renamed?)"
    return "error", f"{ename}: {evalue}"


def grade_notebook(submission, source=None, timeout: float = 30, kernel_name: str = "python3") -> Report:
    """Run a submission with its locked cells restored and score each test cell; never raises."""
    report = Report(str(submission))
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
    executed = {}
    if sub is not None:
        nb = restore_locked(sub, src)
        try:
            _execute(nb, timeout, kernel_name)
        except Exception as e:  # noqa: BLE001 - a dead kernel or nbclient error: score what ran
            report.error = f"execution stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        executed = {meta(c).get("grade_id"): c for c in nb.cells if meta(c).get("grade_id")}
    for t in tests:
        gid, pts = meta(t)["grade_id"], float(meta(t).get("points", 0))
        name = gid[5:] if gid.startswith("test_") else gid
        if gid not in executed:
            report.rows.append(Row(name, 0.0, pts, "not run", report.error or "not executed"))
            continue
        status, msg = _status(executed[gid], name)
        answer = executed.get(name)
        if status != CORRECT and answer is not None and meta(answer).get("solution"):
            a_status, a_msg = _status(answer)  # the answer cell itself failed: say that first
            if a_status in ("timeout", "error", INCORRECT):
                status, msg = ("timeout" if a_status == "timeout" else status), f"answer cell: {a_msg}"
        report.rows.append(Row(name, pts if status == CORRECT else 0.0, pts, status, msg))
    return report


def _execute(nb, timeout, kernel_name):
    from nbclient import NotebookClient
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["GPTBOOK_GRADING"] = "1"                 # q.grade raises in the kernel: the cell scores 0
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("GPTBOOK_CALL_TIMEOUT", f"{max(1.0, min(10.0, timeout / 3)):.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                                interrupt_on_timeout=True,
                                error_on_timeout={"ename": "KeyboardInterrupt",
                                                  "evalue": "cell timed out", "traceback": []},
                                record_timing=False, resources={"metadata": {"path": tmp}})
        client.execute(env=env)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gptbook exercises",
                                     description="release or grade the exercise notebooks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("release", help="write student copies (solutions stripped)")
    r.add_argument("--out", default=str(REPO / "build" / "release"))
    r.add_argument("--source-dir", default=str(SOURCE_DIR))
    g = sub.add_parser("grade", help="score submissions; always exits 0")
    g.add_argument("submissions", nargs="+")
    g.add_argument("--source", default=None, help="source notebook (default: matched by name)")
    g.add_argument("--timeout", type=float, default=30, help="seconds per cell")
    g.add_argument("--json", default=None, help="also write the reports as JSON to this file")
    args = parser.parse_args(argv)
    if args.cmd == "release":
        for path in release(Path(args.out), Path(args.source_dir)):
            print(f"wrote {path}")
        return 0
    reports = []
    for s in args.submissions:
        try:
            rep = grade_notebook(s, args.source, args.timeout)
        except BaseException as e:  # noqa: BLE001 - the grading run itself never dies
            rep = Report(s, error=f"grading failed: {type(e).__name__}: {e}")
        reports.append(rep)
        print(rep.text(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([dict(asdict(x), score=x.score, max_score=x.max_score)
                                               for x in reports], indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
