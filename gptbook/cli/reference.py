"""Reference figures and the bands they may move in: what `make test` and `gptbook compare` check.

Why bands. Training is deterministic on one CPU, but floating-point rounding differs between CPU
models (and GPUs), and after hundreds of steps every figure that comes out of a trained model has
moved. A different seed moves it at least as much, so the spread of a figure over several seeds is a
measured bound on how far it may move on another machine. `make reference` runs the book on several
seeds and writes `chapters/reference/<profile>.json`; the tests read it.

How a code cell is checked (one rule for every chapter):

* **exact** - every measured run printed the same output (after the sanitize patterns, which mask
  timings, paths and addresses) and it holds no figure with decimals: nbval compares it with the
  stored output, digit by digit. Counts, shapes, token ids, prose and the cell's exact equalities
  live here.
* **agreed** (checked as bands) - every run printed the same output, figures with decimals included:
  a computation that does not depend on the seed (the shipped model's perplexity, a formula) agrees
  over seeds on one CPU, yet another CPU may round its last digit the other way. The words must match
  exactly, whole numbers too, and a figure with decimals may move by K units of its last digit.
* **bands** - the runs printed the same words but different numbers: the words (numbers masked)
  must match exactly, and every number must lie in its band.
* **free** - the words themselves differ between runs (sampled text, a table whose rows depend on
  the model): the cell only has to run; its own `assert`s carry its claims.

Band rule. For the values v of one figure over the runs: lo = min(v) - K*r, hi = max(v) + K*r,
with K = 2 and r the largest of (a) the figure's own range max(v) - min(v); (b) the cell's median
relative range times |mean(v)| (a figure whose few samples happen to agree, or that moves with the CPU
but not with the seed, borrows the spread of its table); (c) one unit of the last printed digit.
NaN (pandas' mean of nothing) is not compared.
Leave-one-run-out coverage of this rule is printed by `make reference` (`--validate`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .run import CHAPTERS_DIR

REFERENCE_DIR = CHAPTERS_DIR / "reference"
SANITIZE_FILE = REFERENCE_DIR / "sanitize.cfg"
K = 2.0                         # band half-width in units of r (see the module docstring)
MIN_RUNS = 3                    # fewer runs than this measure no spread
# a number: not inside a word or after a dot ("v1", "1.2.3"); a sentence's full stop may follow it
# (NaN counts as a figure: pandas prints it where a model-dependent count has no mean)
NUMBER = re.compile(r"(?<![\w.])(?:[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w|\.\d)|NaN(?!\w))")
MASK = "§"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"   # e.g. tqdm's notebook progress bar
# what nbval compares besides text; images and widget ids it skips, and so do we
SKIP_MIMES = ("image/png", "image/jpeg", WIDGET_MIME)


# ---------------------------------------------------------------------------- reading outputs

def sanitize_patterns(path: Path = SANITIZE_FILE) -> list:
    """The (regex, replacement) pairs of nbval's sanitize file, in order."""
    from nbval.plugin import get_sanitize_patterns
    return list(get_sanitize_patterns(Path(path).read_text()))


def _sanitize(text: str, patterns) -> str:
    for regex, repl in patterns:
        text = re.sub(regex, repl, text)
    return text


def _join(x) -> str:
    return "".join(x) if isinstance(x, list) else str(x)


def merge_streams(outputs) -> list:
    """Consecutive outputs of one stream as one: how a kernel splits a cell's printing into
    stream messages depends on timing (a slow step between two prints flushes the first), so
    the stored outputs and a rerun may cut the same text in different places."""
    merged = []
    for o in outputs:
        prev = merged[-1] if merged else None
        if (o.get("output_type") == "stream" and prev is not None
                and prev.get("output_type") == "stream" and prev.get("name") == o.get("name")):
            merged[-1] = {**prev, "text": _join(prev.get("text", "")) + _join(o.get("text", ""))}
        else:
            merged.append(o)
    return merged


def full_text(outputs, patterns, progress: bool = True) -> str:
    """Everything nbval compares in a cell's outputs (streams, every text mime), sanitized.
    progress=False drops progress bars (stderr, or tqdm's notebook widget) and warnings: a reader's
    run shows bars, stored outputs are made without them."""
    if not progress:
        outputs = [o for o in outputs if WIDGET_MIME not in o.get("data", {})
                   and not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    parts = []
    for o in merge_streams(outputs):
        if o.get("output_type") == "stream":
            parts.append(f"[{o.get('name')}]" + _join(o.get("text", "")))
        elif o.get("output_type") == "error":
            parts.append(f"[error]{o.get('ename')}: {o.get('evalue')}")
        for mime, val in sorted(o.get("data", {}).items()):
            if mime not in SKIP_MIMES:
                parts.append(f"[{mime}]" + _join(val))
    return _sanitize("\n".join(parts), patterns)


def figure_text(outputs, patterns) -> str:
    """What a reader reads: stdout, and of each displayed object its markdown or plain text."""
    parts = []
    for o in merge_streams(outputs):
        if o.get("output_type") == "stream" and o.get("name") == "stdout":
            parts.append(_join(o.get("text", "")))
        data = o.get("data", {})
        for mime in ("text/markdown", "text/plain"):
            if mime in data:
                parts.append(_join(data[mime]))
                break
    return _sanitize("\n".join(parts), patterns)


def skeleton(text: str) -> str:
    """The words of a text: numbers masked, runs of spaces folded (tables pad columns to the numbers)."""
    return re.sub(r"[ \t]+", " ", NUMBER.sub(MASK, text))


def numbers(text: str) -> list:
    """[(value, printed string, context)] for every number in the text."""
    return [(float(m.group()), m.group(), text[max(0, m.start() - 40):m.end() + 12].replace("\n", " "))
            for m in NUMBER.finditer(text)]


def unit(printed: str) -> float:
    """One unit of the last printed digit: '0.412' -> 0.001, '17' -> 1, '1.5e-05' -> 1e-06."""
    mant, _, exp = printed.lower().partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    return 10.0 ** (int(exp or 0) - decimals)


def source_hash(source) -> str:
    return hashlib.sha256(_join(source).encode()).hexdigest()[:16]


def code_cells(nb: dict) -> list:
    """The code cells nbval runs and compares (not the parameters cell)."""
    return [c for c in nb["cells"] if c["cell_type"] == "code"
            and "parameters" not in c.get("metadata", {}).get("tags", [])]


def cells_by_id(path: Path) -> dict:
    """{cell id: code cell} of a notebook file (see code_cells)."""
    return {c.get("id"): c for c in code_cells(json.loads(Path(path).read_text()))}


def _skipped_by_nbval(cell) -> bool:
    src = _join(cell["source"])
    return "NBVAL_IGNORE_OUTPUT" in src or "NBVAL_SKIP" in src


# ---------------------------------------------------------------------------- measuring bands

def band(values: list, printed: list, pooled_rel: Optional[float]) -> Optional[list]:
    """[lo, hi] for one figure seen as `values` (see the rule in the module docstring); None (not
    compared) when a run printed NaN: pandas prints it for the mean of nothing (a delay when no alert
    fired), so NaN and a number trade places whenever a count crosses zero."""
    if any(math.isnan(v) for v in values):
        return None
    lo, hi = min(values), max(values)
    r = max(hi - lo, max(unit(p) for p in printed))
    if pooled_rel is not None:
        r = max(r, pooled_rel * abs(statistics.fmean(values)))
    return [lo - K * r, hi + K * r]


def pooled_rel(values: list) -> Optional[float]:
    """The cell's median relative range over its figures (values: one list per figure): what the band
    rule's (b) multiplies by a figure's mean; None when no figure moved."""
    rels = [(max(v) - min(v)) / abs(statistics.fmean(v)) for v in values
            if not any(map(math.isnan, v)) and max(v) > min(v) and statistics.fmean(v) != 0]
    return statistics.median(rels) if rels else None


def seen(values: list) -> list:
    """A figure's values as the reference file stores them (JSON has no NaN)."""
    return ["NaN" if math.isnan(x) else x for x in values]


def agreed_band(value: float, printed: str) -> Optional[list]:
    """[lo, hi] of a figure every run printed alike: K units of its last digit when it has decimals
    (another CPU may round it the other way), none for a whole number; None for NaN (see band)."""
    if math.isnan(value):
        return None
    r = unit(printed) if ("." in printed or "e" in printed.lower()) else 0.0
    return [value - K * r, value + K * r]


def measure_cell(samples: list) -> dict:
    """samples: [(full text, figure text)] of one cell over the runs -> its reference entry."""
    texts = [fig for _, fig in samples]
    if len({full for full, _ in samples}) == 1:
        figs = [(v, agreed_band(v, p), ctx) for v, p, ctx in numbers(texts[0])]
        if all(b is None or b == [v, v] for v, b, _ in figs):
            return {"kind": "exact"}
        return {"kind": "agreed", "skeleton": skeleton(texts[0]),
                "figures": [{"band": b, "context": ctx, "seen": seen([v]) * len(texts)} for v, b, ctx in figs]}
    if len({skeleton(t) for t in texts}) > 1:
        return {"kind": "free", "why": "the words differ between runs (sampled or model-dependent text)"}
    per_figure = list(zip(*(numbers(t) for t in texts)))     # one tuple of samples per figure
    values = [[x[0] for x in f] for f in per_figure]
    pooled = pooled_rel(values)
    bands = [{"band": band(v, [x[1] for x in f], pooled), "context": f[0][2], "seen": seen(v)}
             for f, v in zip(per_figure, values)]
    return {"kind": "bands", "skeleton": skeleton(texts[0]), "figures": bands}


def _run_label(run_dir: Path) -> str:
    return run_dir.parent.name if run_dir.name in ("quick", "full") else run_dir.name


def measure(run_dirs: Iterable[Path], chapters_dir: Path = CHAPTERS_DIR, profile: str = "quick",
            only: Optional[Iterable[str]] = None) -> dict:
    """Build the reference from executed runs of the book (one folder of notebooks per run).

    A run's cell is used only if its source equals the chapter's current source, so an edited cell
    is never checked against figures that older code printed. only: the chapters (stems) to measure;
    default every chapter."""
    patterns = sanitize_patterns()
    run_dirs = [Path(d) for d in run_dirs]
    rule = __doc__.split("Band rule. ")[1].split("\n\n")[0].replace("\n", " ")
    ref = {"profile": profile, "runs": [_run_label(d) for d in run_dirs], "rule": rule,
           "made_with": "make reference (python -m gptbook bands RUN_DIR... --write)",
           "chapters": {}}
    for ch_path in sorted(Path(chapters_dir).glob("[0-9][0-9]_*.ipynb")):
        if only is not None and ch_path.stem not in only:
            continue
        runs = {_run_label(d): cells_by_id(d / ch_path.name) for d in run_dirs if (d / ch_path.name).exists()}
        cells = {}
        for cell in cells_by_id(ch_path).values():
            if _skipped_by_nbval(cell):
                continue
            h = source_hash(cell["source"])
            used = {label: r[cell["id"]] for label, r in runs.items()
                    if cell["id"] in r and source_hash(r[cell["id"]]["source"]) == h}
            if len(used) < MIN_RUNS:
                cells[cell["id"]] = {"kind": "unmeasured", "source": h, "runs": list(used),
                                     "why": f"{len(used)} run(s) with this cell's current source; need {MIN_RUNS}"}
                continue
            entry = measure_cell([(full_text(c["outputs"], patterns), figure_text(c["outputs"], patterns))
                                  for c in used.values()])
            if entry["kind"] != "exact":
                entry.update(source=h, runs=list(used))   # in the order of "seen"
                cells[cell["id"]] = entry
        ref["chapters"][ch_path.stem] = cells
    return ref


def keep_measured(old_cells: dict, new_cells: dict, run_dirs: list, chapter: str,
                  chapters_dir: Path = CHAPTERS_DIR) -> tuple:
    """Re-measuring one chapter: a banded cell whose source did not change and whose figures lie inside
    their old bands in every new run keeps its old entry (measured on more runs, often on other CPUs), and
    a free cell whose source did not change stays free; every other cell takes its entry from the new
    runs. -> (cells, how many banded cells were kept)."""
    patterns = sanitize_patterns()
    runs = [cells_by_id(Path(d) / f"{chapter}.ipynb") for d in run_dirs]
    out, kept = {}, 0
    for cid, cell in cells_by_id(Path(chapters_dir) / f"{chapter}.ipynb").items():
        old = old_cells.get(cid)
        same = old is not None and old.get("source") == source_hash(cell["source"])
        if same and old["kind"] == "free":
            out[cid] = old             # earlier runs printed different words: the new ones agreeing proves nothing
        elif (same and old["kind"] in ("bands", "agreed")
              and all(cid in r and not check(old, r[cid]["source"], r[cid]["outputs"], patterns) for r in runs)):
            out[cid], kept = old, kept + 1
        elif cid in new_cells:
            out[cid] = new_cells[cid]
    return out, kept


def add_runs(ref: dict, run_dirs: list) -> list:
    """Add runs made elsewhere (another CPU) to the measured entries, in place: a banded or agreed cell whose
    source and words a run repeats gets that run's figures added to what was seen, and each figure's band
    is derived again by the band rule from all of them (so the bands now span both machines). -> the
    problems no added run can settle: [(chapter, cell, why)] for cells whose words differ."""
    patterns, unsettled = sanitize_patterns(), []
    for d in map(Path, run_dirs):
        label = _run_label(d)
        for ch, cells in ref["chapters"].items():
            if not (d / f"{ch}.ipynb").exists():
                continue
            got = cells_by_id(d / f"{ch}.ipynb")
            for cid, e in cells.items():
                c = got.get(cid)
                if c is None or e["kind"] not in ("bands", "agreed") or source_hash(c["source"]) != e["source"]:
                    continue
                text = figure_text(c["outputs"], patterns)
                if skeleton(text) != e["skeleton"]:
                    unsettled.append((ch, cid, "the words differ from the measured runs"))
                    continue
                figs = numbers(text)
                values = [[float(x) for x in f["seen"]] + [v] for f, (v, _, _) in zip(e["figures"], figs)]
                pooled = pooled_rel(values)
                for f, v, (_, printed, _) in zip(e["figures"], values, figs):
                    f["band"] = band(v, [printed], pooled)
                    f["seen"] = seen(v)
                e["kind"], e["runs"] = "bands", e.get("runs", []) + [label]
        ref["runs"] = list(dict.fromkeys(ref["runs"] + [label]))
    return unsettled


def reference_path(profile: str = "quick") -> Path:
    return Path(os.environ.get("GPTBOOK_REFERENCE_DIR", REFERENCE_DIR)) / f"{profile}.json"


def save(ref: dict, profile: str = "quick") -> Path:
    p = reference_path(profile)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    return p


def load(profile: str = "quick") -> dict:
    p = reference_path(profile)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; make it with `make reference` "
                                "(runs the book on several seeds and measures the bands)")
    return json.loads(p.read_text())


def entry_for(ref: dict, chapter: str, cell: dict) -> Optional[dict]:
    """The cell's entry, or None when it is compared exactly by nbval."""
    return ref.get("chapters", {}).get(chapter, {}).get(cell.get("id"))


# ---------------------------------------------------------------------------- checking

def check(entry: dict, cell_source, outputs, patterns) -> list:
    """Problems (strings) of one executed cell against its entry; [] when it holds."""
    kind = entry["kind"]
    if source_hash(cell_source) != entry["source"]:
        return ["this cell's source changed after its bands were measured: run `make reference` "
                "(or `make reference SEEDS=...`) to measure them again"]
    if kind == "unmeasured":
        return [f"no bands were measured for this cell ({entry['why']}): run `make reference`"]
    if kind == "free":
        return []
    text = figure_text(outputs, patterns)
    if skeleton(text) != entry["skeleton"]:
        return ["the words of the output differ from every measured run (numbers masked as "
                f"{MASK}):\n  expected: {entry['skeleton'][:800]!r}\n  got:      {skeleton(text)[:800]!r}"]
    problems = []
    for (value, printed, ctx), fig in zip(numbers(text), entry["figures"]):
        if fig["band"] is None or math.isnan(value):  # NaN: the mean of nothing (see band)
            continue
        lo, hi = fig["band"]
        if not lo <= value <= hi:
            problems.append(f"{printed} is outside its band [{lo:.6g}, {hi:.6g}] (seen {fig['seen']}) … {ctx.strip()}")
    return problems


@dataclass
class Finding:
    chapter: str
    cell: str
    problem: str


def compare(run_dir: Path, chapters_dir: Path = CHAPTERS_DIR, profile: str = "quick"):
    """A reader's executed notebooks against the reference: (findings, figures checked, notes)."""
    ref, patterns = load(profile), sanitize_patterns()
    findings, n, notes = [], 0, []
    for ch_path in sorted(Path(chapters_dir).glob("[0-9][0-9]_*.ipynb")):
        mine = Path(run_dir) / ch_path.name
        if not mine.exists():
            notes.append(f"{ch_path.stem}: not in {run_dir} (run `python -m gptbook run {ch_path.stem[:2]}`)")
            continue
        stored = cells_by_id(ch_path)
        for cell in cells_by_id(mine).values():
            if _skipped_by_nbval(cell) or cell.get("id") not in stored:
                continue
            e = entry_for(ref, ch_path.stem, cell)
            if e is None:                       # exact: compared with the stored output
                n += 1
                if (full_text(cell["outputs"], patterns, progress=False)
                        != full_text(stored[cell["id"]]["outputs"], patterns, progress=False)):
                    findings.append(Finding(ch_path.stem, cell["id"], "output differs from the stored one"))
                continue
            problems = check(e, cell["source"], cell["outputs"], patterns)
            n += len(e.get("figures", []))
            findings += [Finding(ch_path.stem, cell["id"], p) for p in problems]
    return findings, n, notes


# ---------------------------------------------------------------------------- pytest (nbval) wiring

def pytest_collection_modifyitems(config, items):
    """Loaded with `-p gptbook.cli.reference`: nbval cells with an entry are compared here, not by nbval."""
    nb_items = [i for i in items if hasattr(i, "cell") and hasattr(i, "options")]
    if not nb_items:
        return
    ref, patterns = load("quick"), sanitize_patterns()
    for item in nb_items:
        e = entry_for(ref, Path(str(item.fspath)).stem, item.cell)   # never the parameters cell
        if e is None:
            continue
        item.options["check"] = False          # nbval only runs it; the bands are checked below

        def runtest(item=item, run=item.runtest, e=e):
            run()
            problems = check(e, item.cell.source, item.test_outputs or [], patterns)
            if problems:
                item.raise_cell_error("Cell outputs outside the measured bands "
                                      f"({reference_path('quick').name}, {e['kind']})",
                                      "\n".join(problems))
        item.runtest = runtest


# ---------------------------------------------------------------------------- command line

def validate(run_dirs: list, chapters_dir: Path = CHAPTERS_DIR, only: Optional[Iterable[str]] = None) -> dict:
    """Leave-one-run-out: bands measured without run i, checked on run i. -> {run: (failed, checked)}"""
    patterns, out = sanitize_patterns(), {}
    for i, held in enumerate(run_dirs):
        ref = measure(run_dirs[:i] + run_dirs[i + 1:], chapters_dir, only=only)
        failed = checked = 0
        for ch, cells in ref["chapters"].items():
            p = Path(held) / f"{ch}.ipynb"
            if not p.exists():
                continue
            held_cells = cells_by_id(p)
            for cid, e in cells.items():
                c = held_cells.get(cid)
                if c is None or e["kind"] not in ("bands", "agreed") or source_hash(c["source"]) != e["source"]:
                    continue
                checked += len(e["figures"])
                probs = check(e, c["source"], c["outputs"], patterns)
                failed += len(e["figures"]) if probs and "words" in probs[0] else len(probs)
        out[_run_label(Path(held))] = (failed, checked)
    return out


def main_measure(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m gptbook bands",
                                 description="Measure the bands of every trained figure from runs of the book "
                                             "on several seeds and write chapters/reference/<profile>.json.")
    ap.add_argument("run_dirs", nargs="+", help="folders of executed notebooks, one per seed "
                                                "(e.g. build/seeds/*/quick)")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--write", action="store_true", help="write the reference file (default: only report)")
    ap.add_argument("--validate", action="store_true", help="also report leave-one-run-out coverage")
    ap.add_argument("--chapters", nargs="+", metavar="CHAPTER",
                    help="re-measure only these chapters (e.g. 03), from runs that may hold only them; the "
                         "other chapters keep their entries in the existing reference file, and so does "
                         "a banded cell whose source is unchanged and whose new figures lie in its bands")
    ap.add_argument("--add", action="store_true",
                    help="add these runs (any number, e.g. one made on another CPU) to the existing reference: "
                         "each banded figure's band is derived again from its earlier values and theirs")
    a = ap.parse_args(argv)
    dirs = [Path(d) for d in a.run_dirs]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if a.add and not missing:
        ref = load(a.profile)
        unsettled = add_runs(ref, dirs)
        for ch, cid, why in unsettled:
            print(f"  {ch} {cid}: {why}; measure this chapter again (--chapters)")
        if a.write:
            print(f"added {len(dirs)} run(s); wrote {save(ref, a.profile)}")
        return 1 if unsettled else 0
    if missing or len(dirs) < MIN_RUNS:
        sys.exit(f"need at least {MIN_RUNS} folders of executed notebooks; "
                 + (f"not found: {missing}" if missing else f"got {len(dirs)}")
                 + " (make them with `make reference`)")
    only = None
    if a.chapters:
        from .run import resolve
        only = [p.stem for p in resolve(a.chapters)]          # an unknown name exits with the list
        lacking = [f"{d}/{ch}.ipynb" for d in dirs for ch in only if not (d / f"{ch}.ipynb").exists()]
        if lacking:
            sys.exit(f"--chapters {' '.join(a.chapters)}: every run folder needs those chapters; missing: "
                     + ", ".join(lacking))
    ref = measure(dirs, CHAPTERS_DIR, profile=a.profile, only=only)
    if only is not None:
        # the other chapters' entries stay as they were measured (each entry names its own runs)
        old = load(a.profile)
        for ch in only:
            ref["chapters"][ch], kept = keep_measured(old["chapters"].get(ch, {}), ref["chapters"][ch], dirs, ch,
                                                      CHAPTERS_DIR)
            print(f"{ch}: {kept} banded cells keep their earlier bands (same source, every new run inside them)")
        for ch, cells in old["chapters"].items():
            ref["chapters"].setdefault(ch, cells)
        ref["chapters"] = dict(sorted(ref["chapters"].items()))
        new_runs = ref["runs"]
        ref["runs"] = list(dict.fromkeys(old["runs"] + new_runs))
        ref["remeasured"] = {**old.get("remeasured", {}), **{ch: new_runs for ch in only}}
    kinds = {}
    for cells in ref["chapters"].values():
        for e in cells.values():
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    n_fig = sum(len(e.get("figures", [])) for cells in ref["chapters"].values() for e in cells.values())
    print(f"{len(dirs)} runs ({', '.join(_run_label(d) for d in dirs)}): cells by kind (others exact) {kinds}; "
          f"{n_fig} banded figures")
    for ch, cells in ref["chapters"].items():
        for cid, e in cells.items():
            if e["kind"] in ("free", "unmeasured"):
                print(f"  {ch} {cid}: {e['kind']} - {e['why']}")
    if a.validate and len(dirs) <= MIN_RUNS:
        print(f"leave-one-out needs at least {MIN_RUNS + 1} runs (bands are measured from {MIN_RUNS} or more)")
    elif a.validate:
        for run, (failed, checked) in validate(dirs, CHAPTERS_DIR, only=only).items():
            print(f"leave-one-out: bands from the other runs, checked on {run}: "
                  f"{failed} of {checked} figures outside")
    if a.write:
        print(f"wrote {save(ref, a.profile)}")
    return 0


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m gptbook compare",
                                 description="Check a run of the book against the reference: exact "
                                             "outputs where runs agree, measured bands where they do not.")
    ap.add_argument("run_dir", nargs="?", default="build/quick", help="folder of executed notebooks")
    a = ap.parse_args(argv)
    if not Path(a.run_dir).is_dir():
        sys.exit(f"{a.run_dir} does not exist; run the book first: python -m gptbook run --output-dir build")
    findings, n, notes = compare(Path(a.run_dir))
    for note in notes:
        print("note:", note)
    for f in findings:
        print(f"{f.chapter} {f.cell}: {f.problem}")
    print(f"{n} outputs and figures checked against {reference_path('quick')}: {len(findings)} problem(s)")
    return 1 if findings else 0
