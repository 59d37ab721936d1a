"""gptbook imports nothing that current libraries removed, and warns about nothing itself."""
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
    """The errata module runs the documents' broken lines on purpose, as strings; nothing else may."""
    offenders = []
    files = [p for p in (ROOT / "gptbook").rglob("*.py") if not p.name.startswith("errata")]
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
