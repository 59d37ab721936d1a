"""`python -m gptbook doctor`: check this machine's setup and print the exact fix for each problem.

Each check is a small function returning a `Check`; `run_checks()` runs them all, so tests can
plant a problem (a wrong version, a missing module, a corrupted cache file) and see it found.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
import tempfile
from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "FAIL"
TORCH_PIN = "2.13.0"
PYTHON_RANGE = ((3, 10), (3, 13))


@dataclass
class Check:
    name: str
    status: str      # ok | warn | FAIL
    detail: str
    fix: str = ""


def _version(dist: str):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def check_python(version_info=None) -> Check:
    v = version_info or sys.version_info
    lo, hi = PYTHON_RANGE
    ok = lo <= (v[0], v[1]) <= hi
    return Check("python", OK if ok else FAIL, f"{v[0]}.{v[1]}.{v[2]}",
                 "" if ok else f"use Python {lo[0]}.{lo[1]}–{hi[0]}.{hi[1]} (e.g. conda env create -f environment.yml)")


def check_torch(version=None, cuda_build=None, gpu_available=None) -> Check:
    try:
        import torch
    except ImportError:
        return Check("torch", FAIL, "not installed", f"pip install torch=={TORCH_PIN}")
    version = version or torch.__version__
    cuda_build = torch.version.cuda if cuda_build is None else cuda_build
    gpu_available = torch.cuda.is_available() if gpu_available is None else gpu_available
    base = version.split("+")[0]
    if base != TORCH_PIN:
        return Check("torch", FAIL, f"{version} (the book is tested with {TORCH_PIN})",
                     f"pip install torch=={TORCH_PIN}")
    if cuda_build and not gpu_available:
        return Check("torch", WARN, f"{version}: a CUDA build ({cuda_build}) on a machine where no GPU "
                     "is usable; it works on CPU but costs gigabytes",
                     f"pip install torch=={TORCH_PIN} --index-url https://download.pytorch.org/whl/cpu "
                     "(a CPU wheel), or check the NVIDIA driver with nvidia-smi")
    where = f"GPU: {torch.cuda.get_device_name(0)}" if gpu_available and cuda_build else "CPU only"
    return Check("torch", OK, f"{version}, {where}")


def _requirements():
    """(name, specifier) for gptbook's declared dependencies (from the installed metadata)."""
    from packaging.requirements import Requirement
    try:
        reqs = md.requires("gptbook") or []
    except md.PackageNotFoundError:
        return []
    out = []
    for r in reqs:
        req = Requirement(r)
        if req.marker is None or req.marker.evaluate({"extra": "dev"}):
            out.append((req.name, req.specifier))
    return out


def check_dependencies(requirements=None, version_of=_version) -> list:
    """Every dependency present and inside the bounds that the tests cover."""
    out = []
    requirements = requirements if requirements is not None else _requirements()
    if not requirements:
        return [Check("dependencies", FAIL, "gptbook is not installed as a package",
                      "pip install -e '.[dev]' (or: make setup)")]
    bad = []
    for name, spec in requirements:
        v = version_of(name)
        if v is None:
            bad.append(Check(f"{name}", FAIL, "not installed", f"pip install '{name}{spec}'"))
        elif spec and not spec.contains(v, prereleases=True):
            hint = " (too old: its removed/renamed APIs break the chapters)" if name == "transformers" else ""
            bad.append(Check(f"{name}", FAIL, f"{v} is outside {spec}{hint}", f"pip install '{name}{spec}'"))
    out.append(Check("dependencies", OK if not bad else FAIL,
                     f"{len(requirements) - len(bad)}/{len(requirements)} within the tested bounds",
                     "see the rows below" if bad else ""))
    return out + bad


def check_cache() -> Check:
    from .. import data
    where = "GPTBOOK_CACHE" if os.environ.get("GPTBOOK_CACHE") else "the default"
    try:
        d = data.cache_dir()
        with tempfile.NamedTemporaryFile(dir=d):
            pass
        return Check("cache", OK, f"{d} is writable ({where})")
    except data.SetupError as e:              # the folder cannot even be created
        return Check("cache", FAIL, str(e).split("; fix: ")[0], data.CACHE_FIX)
    except OSError as e:
        return Check("cache", FAIL, f"cannot write the cache ({where}): {e}", data.CACHE_FIX)


def check_data() -> Check:
    from .. import data
    from . import bundle
    try:
        problems = bundle.verify()
    except data.SetupError:
        return Check("data bundle", FAIL, "not checked: the cache folder is unusable (see cache above)",
                     data.CACHE_FIX)
    if not problems:
        return Check("data bundle", OK, "every file present with its recorded sha256")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    names = sorted({p.source for p in problems})
    detail = "; ".join(str(p).split(" -> ")[0] for p in problems[:4]) + (" ..." if len(problems) > 4 else "")
    if offline:
        detail += " (offline mode: nothing will be downloaded from the hub, so the cache must be complete)"
    return Check("data bundle", FAIL, detail, "python -m gptbook data fetch " + " ".join(names) + " --force")


def check_models() -> Check:
    """Load every cached model and tokenizer: a truncated or corrupted file would otherwise pass
    here and fail later in a chapter or in `serve` with a torch traceback."""
    from .. import data
    try:
        d = data.cache_dir()
    except data.SetupError:
        return Check("cached models", FAIL, "not checked: the cache folder is unusable (see cache above)",
                     data.CACHE_FIX)
    files = sorted((d / "models").glob("*.pt")) + sorted((d / "tokenizer").glob("*.json"))
    bad = []
    for path in files:
        try:
            _load_cached(path)
        except Exception as e:  # noqa: BLE001 - any failure means the file cannot be used
            bad.append((path, e))
    if not bad:
        return Check("cached models", OK, f"{len(files)} file(s) load (models, tokenizers)"
                     + ("; none yet: chapter 03 trains the book's GPT" if not files else ""))
    names = ", ".join(f"{p.name} ({type(e).__name__})" for p, e in bad[:3]) + (" ..." if len(bad) > 3 else "")
    return Check("cached models", FAIL, f"{len(bad)} of {len(files)} cannot be loaded: {names}",
                 "delete them (" + " ".join(f"rm '{p}'" for p, _ in bad[:3]) + ("; ..." if len(bad) > 3 else "")
                 + "); the chapter that needs each one makes it again (the book's GPT: python -m gptbook run 03)")


def check_shipped(weights_dir=None) -> Check:
    """The broad model chapter 03 §2.9 loads from the repository: its files against the manifest's sha256
    (a Git LFS pointer or an edited file would otherwise fail in the chapter)."""
    from .. import data, train
    from ..config import get_profile
    try:
        train.shipped_model(get_profile("quick"), weights_dir)
        return Check("shipped model", OK, f"{train.SHIPPED}: files match the manifest's sha256")
    except (data.SetupError, FileNotFoundError) as e:
        return Check("shipped model", FAIL, str(e).split("; fix:")[0],
                     "git checkout -- gptbook/weights (or reinstall the package); "
                     "python -m gptbook pretrain --corpus broad ... makes it again (see its manifest)")


def _load_cached(path) -> None:
    """Raise unless the cached file loads as what it is (a checkpoint with weights, a tokenizer)."""
    if path.suffix == ".json":
        from tokenizers import Tokenizer
        Tokenizer.from_file(str(path))
        return
    import torch
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise ValueError("not a gptbook checkpoint (no state_dict)")
    if "config" in ck:                         # a GPT checkpoint: build it, as load_checkpoint does
        from ..model import GPT, GPTConfig
        GPT(GPTConfig(**ck["config"])).load_state_dict(ck["state_dict"])


def check_jupyter() -> list:
    out = []
    for mod, dist, why in (("jupyterlab", "jupyterlab", "to open the chapters"),
                           ("ipywidgets", "ipywidgets", "for the chat box and sampling panels"),
                           ("jupyterlab_widgets", "jupyterlab_widgets", "the widgets' JupyterLab front end"),
                           ("ipykernel", "ipykernel", "to execute notebooks")):
        try:
            importlib.import_module(mod)
            out.append(Check(mod, OK, _version(dist) or "present"))
        except ImportError:
            fix = f"pip install {dist}"
            detail = f"missing ({why})"
            if mod == "jupyterlab_widgets":
                detail += ": widgets would show as 'Error displaying widget'"
            out.append(Check(mod, FAIL if mod != "jupyterlab" else WARN, detail, fix))
    return out


def check_cjk_font(found=None) -> Check:
    """Chinese quotes in the chapters' plots need a font with CJK glyphs; without one they are boxes."""
    if found is None:
        from ..viz import cjk_font
        found = cjk_font()
    if found:
        return Check("CJK font", OK, f"{found}: Chinese text in plots renders")
    return Check("CJK font", WARN, "none installed: Chinese text in plots shows as empty boxes",
                 "sudo apt-get install fonts-noto-cjk (Debian/Ubuntu; brew install --cask font-noto-sans-cjk "
                 "on macOS), then rm -rf ~/.cache/matplotlib")


def check_removed_apis() -> Check:
    """The APIs the documents use that current libraries removed: the book must not rely on them."""
    import transformers
    removed = [n for n in ("AdamW",) if hasattr(transformers, n)]
    if removed:
        return Check("transformers APIs", WARN, f"transformers {transformers.__version__} still has "
                     f"{removed}; the book is tested where it is gone", "pip install 'transformers>=5,<6'")
    return Check("transformers APIs", OK, "transformers.AdamW is gone, as erratum E4 says; "
                 "the book uses torch.optim.AdamW")


def run_checks() -> list:
    checks = [check_python(), check_torch()]
    checks += check_dependencies()
    checks += [check_cache(), check_data(), check_models(), check_shipped()]
    checks += check_jupyter()
    checks += [check_cjk_font(), check_removed_apis()]
    return checks


def render(checks) -> str:
    rows = [("check", "status", "detail", "fix")] + [(c.name, c.status, c.detail, c.fix) for c in checks]
    w = [max(len(r[i]) for r in rows) if i < 2 else 0 for i in range(4)]
    lines = []
    for r in rows:
        line = f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]}"
        if r[3] and r is not rows[0]:
            line += f"\n{'':<{w[0] + w[1] + 4}}fix: {r[3]}"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    import argparse
    argparse.ArgumentParser(prog="python -m gptbook doctor",
                            description="Check Python, torch, dependencies, data, cache, cached models, "
                                        "Jupyter.").parse_args(argv)
    checks = run_checks()
    print(render(checks))
    failed = [c for c in checks if c.status == FAIL]
    print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed"
          + (f"; {len(failed)} problem(s) above, each with its fix" if failed else ""))
    return 1 if failed else 0
