"""Run chapters headless with papermill: `python -m gptbook run [CHAPTER...] --profile quick|full`."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

ROOT = Path(__file__).resolve().parents[2]   # the checkout: gptbook/cli/run.py -> ../..
CHAPTERS_DIR = ROOT / "chapters"


def list_chapters() -> list:
    return sorted(p for p in CHAPTERS_DIR.glob("[0-9][0-9]_*.ipynb"))


def resolve(names: Iterable[str]) -> list:
    """'01', '1', '01_architecture' or a path -> notebook paths; unknown names raise with the list."""
    chapters = list_chapters()
    if not names:
        return chapters
    out = []
    for n in names:
        p = Path(n)
        if p.suffix == ".ipynb" and p.exists():
            out.append(p.resolve())
            continue
        key = n.zfill(2) if n.isdigit() else n
        hits = [c for c in chapters if c.stem == key or c.stem.startswith(key + "_")]
        if len(hits) != 1:
            raise SystemExit(f"unknown chapter {n!r}; chapters are: "
                             + ", ".join(c.stem for c in chapters))
        out.append(hits[0])
    return out


def clean_notebook(path: Path):
    """Strip papermill's bookkeeping and the injected-parameters cell so stored sources stay small
    and diff-able (nbval only reads outputs)."""
    nb = json.loads(path.read_text())
    nb["cells"] = [c for c in nb["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for c in nb["cells"]:
        c.get("metadata", {}).pop("papermill", None)
        c.get("metadata", {}).pop("execution", None)
        if c.get("cell_type") == "code":
            for o in c.get("outputs", []):
                o.get("metadata", {}).pop("execution", None)
    nb.get("metadata", {}).pop("papermill", None)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def run(chapters: Iterable[str] = (), profile: str = "quick", output_dir: str = "build",
        refresh: bool = False, parameters: Optional[dict] = None, progress: bool = True) -> int:
    """Execute chapters in order; print one line per chapter; return the number that failed.
    refresh=True writes the executed quick-profile notebook back over the source (for nbval)."""
    import papermill as pm
    from ..config import PROFILES, needs_hub
    if profile not in PROFILES:
        raise SystemExit(f"unknown profile {profile!r}; valid profiles: {sorted(PROFILES)}")
    if refresh and profile != "quick":
        raise SystemExit("--refresh stores outputs in the source notebooks, which hold the quick "
                         "profile only; run --refresh with --profile quick")
    paths = resolve(list(chapters))
    out_dir = Path(output_dir) / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(parameters or {})
    if profile != "quick":
        params["profile"] = profile
    for nb in paths:   # a misspelt -p NAME would be injected and silently ignored by the notebook
        known = set(pm.inspect_notebook(str(nb)))
        unknown = sorted(set(params) - known)
        if unknown:
            raise SystemExit(f"unknown parameter(s) {unknown} for {nb.stem}; its parameters are "
                             f"{sorted(known)} (profile sizes are chosen with --profile)")
    if "weights" in params:   # checked once here, not as a traceback in every chapter's first cell
        from dataclasses import replace
        try:
            replace(PROFILES[profile], weights=params["weights"])
        except ValueError as e:
            raise SystemExit(str(e)) from None
    if not needs_hub(params.get("weights")):   # the hub is needed only to download OpenAI's GPT-2
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GPTBOOK_INTERACTIVE", "0")   # headless: printed demos, not widgets nobody sees
    if refresh:  # stored outputs must not depend on the cache state: no progress bars (see config)
        os.environ["GPTBOOK_NO_PROGRESS"] = "1"
        from ..config import DEFAULT_SEED   # stored outputs are the default seed's, whatever GPTBOOK_SEED says
        params.setdefault("seed", DEFAULT_SEED)
    failed = 0
    for nb in paths:
        out = out_dir / nb.name
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(nb.parent),
                                progress_bar=progress, kernel_name="python3", log_output=False)
        except pm.PapermillExecutionError as e:
            failed += 1
            print(f"FAIL {nb.stem}: cell {e.cell_index} ({e.exec_count=}) raised {e.ename}: "
                  f"{e.evalue[:300]}\n     executed notebook with the error: {out}", flush=True)
            continue
        except Exception as e:  # kernel died, notebook missing, ...
            failed += 1
            print(f"FAIL {nb.stem}: {type(e).__name__}: {e}", flush=True)
            continue
        dt = time.perf_counter() - t0
        if refresh:
            nb.write_text(out.read_text())
            clean_notebook(nb)
        print(f"ok   {nb.stem}: {dt:.0f} s -> {out}" + (" (stored in source)" if refresh else ""),
              flush=True)
    print(f"{len(paths) - failed}/{len(paths)} chapters ran in profile {profile!r}; "
          f"executed notebooks are in {out_dir}/", flush=True)
    return failed


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m gptbook run",
                                 description="Execute chapters headless with papermill.")
    ap.add_argument("chapters", nargs="*", help="e.g. 01 03_finetuning (default: all)")
    ap.add_argument("--profile", default="quick", help="quick (CPU, minutes) or full (GPU sizes)")
    ap.add_argument("--output-dir", default="build")
    ap.add_argument("--refresh", action="store_true",
                    help="store the executed outputs back in chapters/ (quick profile; for nbval)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="notebook parameter, e.g. -p seed=2024 (value parsed as JSON)")
    a = ap.parse_args(argv)
    params = {}
    for kv in a.param:
        k, _, v = kv.partition("=")
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    sys.exit(1 if run(a.chapters, a.profile, a.output_dir, a.refresh, params) else 0)
