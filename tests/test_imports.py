"""gptbook imports nothing that current libraries removed, warns about nothing itself, and its own
imports point down the floors of the house (no cycles)."""
import ast
import importlib
import pkgutil
import re
import warnings
from pathlib import Path

import gptbook

ROOT = Path(gptbook.__file__).parent.parent
# APIs the documents use that are gone (or wrong) in the supported versions
REMOVED = [r"from transformers import AdamW", r"load_metric\(", r"GPT2ForCausalLM",
           r"GPT2Tokenizer(Fast)?\([^)]*vocab_file=", r"GPT3Tokenizer", r"GPT3ForSequenceClassification"]


def _modules():
    for m in pkgutil.walk_packages([str(ROOT / "gptbook")], prefix="gptbook."):
        if not m.name.endswith("__main__"):
            yield m.name


def test_every_module_imports_without_warnings_of_its_own():
    for name in _modules():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importlib.import_module(name)
        own = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))
               and "gptbook" in str(w.filename)]
        assert not own, f"{name}: {[str(w.message) for w in own]}"


def test_no_removed_apis_outside_errata():
    """The errata package runs the documents' broken lines on purpose, as strings; nothing else may."""
    offenders = []
    files = [p for p in (ROOT / "gptbook").rglob("*.py") if "errata" not in p.relative_to(ROOT).parts]
    files += list((ROOT / "chapters").glob("*.ipynb"))
    for p in files:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".ipynb":   # only code cells, and not inside strings handed to errata
            import json
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "code")
            text = "\n".join(line for line in text.splitlines()
                             if "errata" not in line and not line.lstrip().startswith(("#", '"', "'")))
        for pat in REMOVED:
            for m in re.finditer(pat, text):
                line = text[:m.start()].count("\n") + 1
                offenders.append(f"{p.relative_to(ROOT)}:{line}: {m.group(0)}")
    assert not offenders, offenders


# The floors, bottom up. A module may import from its own floor or below, never above: the core
# never reaches into a chapter's wing, the wings never into the errata, exercises or tools.
FLOORS = [
    ["gptbook.config"],                                                       # sizes, profiles, seeding
    ["gptbook.model", "gptbook.generate", "gptbook.data", "gptbook.mathx", "gptbook.viz"],  # model, sampling, data
    ["gptbook.tokenizer", "gptbook.hf", "gptbook.train"],                     # built on the floor below
    ["gptbook.finetune", "gptbook.deploy"],                                   # chapter 03's wing, chapter 05's
    ["gptbook.apps"],                                                         # chapter 04 (uses 03's models)
    ["gptbook.errata", "gptbook.exercises"],                                  # what chapters display and grade
    ["gptbook.cli", "gptbook.__main__", "gptbook"],                           # command-line tools
]


def _floor(module: str) -> int:
    best = None
    for i, names in enumerate(FLOORS):
        for n in names:
            if module == n or module.startswith(n + "."):
                if best is None or len(n) > best[1]:
                    best = (i, len(n))
    assert best is not None, f"{module} is on no floor: add it to FLOORS in {__file__}"
    return best[0]


def _imports(path: Path, module: str) -> set:
    """Every gptbook module that `module` imports, at the top or inside a function."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "gptbook"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "gptbook":
                continue
            for a in node.names:     # `from . import data` names a module; `from .model import GPT` does not
                sub = f"{base}.{a.name}"
                found.add(sub if (ROOT / (sub.replace(".", "/") + ".py")).exists()
                          or (ROOT / sub.replace(".", "/")).is_dir() else base)
    return found - {module}


def _graph() -> dict:
    graph = {}
    for p in (ROOT / "gptbook").rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[module] = _imports(p, module)
    return graph


def test_imports_point_down():
    upward = [f"{a} (floor {_floor(a)}) imports {b} (floor {_floor(b)})"
              for a, bs in _graph().items() for b in bs if _floor(b) > _floor(a)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ importing its own submodules is how a package is assembled, not a cycle
    edges = {a: {b for b in bs if not b.startswith(a + ".")} for a, bs in graph.items()}
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_walker_sees_an_upward_import(tmp_path):
    """The check above can fail: a core module importing a chapter wing is reported."""
    p = tmp_path / "model.py"
    p.write_text("def f():\n    from .finetune import tasks\n", encoding="utf-8")
    found = _imports(p, "gptbook.model")
    assert "gptbook.finetune.tasks" in found and _floor("gptbook.finetune.tasks") > _floor("gptbook.model")
