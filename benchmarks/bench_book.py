"""The book's own cost: wall time and peak memory of each chapter, and optionally of the test suite.

    python benchmarks/bench_book.py [CHAPTER ...] [--profile quick] [--fresh-cache] [--tests] [--json out.json]

Each chapter runs as `python -m gptbook run NN` in a subprocess; the peak resident memory of
that process and all its children (the Jupyter kernel) is sampled every 0.2 s with psutil.
--fresh-cache uses an empty GPTBOOK_CACHE so chapter 03 pays for pre-training, as on a new machine
(the data is copied from the current cache, since fetching it is part of setup, not of the book).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def measure(cmd, env) -> dict:
    """Run cmd; return wall seconds, peak RSS (MiB) of the process tree, return code."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc, peak = psutil.Process(p.pid), 0
    while p.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    out = p.stdout.read()
    return {"seconds": time.perf_counter() - t0, "peak_mib": peak / 2**20, "rc": p.returncode,
            "tail": out.strip().splitlines()[-1] if out.strip() else ""}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapters", nargs="*")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--fresh-cache", action="store_true")
    ap.add_argument("--tests", action="store_true", help="also time the unit tests and nbval (make test)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from gptbook import data
    from gptbook.cli.run import resolve
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    tmp = None
    if a.fresh_cache:
        tmp = tempfile.mkdtemp(prefix="gptbook-bench-cache-")
        shutil.copytree(data.cache_dir() / "data", Path(tmp) / "data")
        env["GPTBOOK_CACHE"] = tmp
    rows = []
    for nb in resolve(a.chapters):
        r = measure([sys.executable, "-m", "gptbook", "run", str(nb), "--profile", a.profile,
                     "--output-dir", "build/bench"], env)
        rows.append({"chapter": nb.stem, **r})
        print(f"{nb.stem:20s} {r['seconds']:7.1f} s  peak {r['peak_mib']:7.0f} MiB  rc={r['rc']}", flush=True)
    total = sum(r["seconds"] for r in rows)
    print(f"{'whole book':20s} {total:7.1f} s ({total / 60:.1f} min; target < 15 min on 2 cores)")
    res = {"bench": "book", "profile": a.profile, "fresh_cache": a.fresh_cache, "cpus": os.cpu_count(),
           "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), "chapters": rows,
           "book_seconds": total}
    if a.tests:
        r = measure([sys.executable, "-m", "pytest", "tests", "chapters", "--nbval", "--nbval-current-env",
                     "--nbval-sanitize-with", "chapters/reference/sanitize.cfg", "-q"], env)
        res["tests"] = r
        print(f"{'test suite':20s} {r['seconds']:7.1f} s  peak {r['peak_mib']:7.0f} MiB  ({r['tail']})")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
