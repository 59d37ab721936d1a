"""The documents' errata, each with code that demonstrates what is true.

Every entry: an id (E1, E2, ...), the document and section, the claim quoted in Chinese, what is
true, the chapter where it is shown, and a `demo()` function that RUNS something (the failing
line of the document raising its real error, a count from a configuration, a formula checked
numerically) and returns a short evidence string. A demo raises AssertionError if the evidence
no longer holds (for instance a library changed), so `tests/test_errata.py` re-verifies them all.

In a chapter: `errata.callout("E10")` displays the fixed callout form and the evidence;
`errata.table(["E19", "E20"])` shows several as one table. The entries live in errata_model.py
(architecture, math), errata_tuning.py (the seed map's code errata), errata_facts.py (facts,
history, objectives) and errata_code.py (further code, metrics, training advice), and their
texts (claim, truth, where) in errata.toml; importing this module registers them all. Claims may
join excerpts with " … "; each excerpt is verbatim.
"""
from __future__ import annotations

import contextlib
import functools
import re
import warnings
from dataclasses import dataclass
from typing import Callable

DOCS = {
    "000": "GPT-3.5 原理与实现",
    "001": "GPT-3.5 原理与代码实例讲解",
    "002": "从 GPT-1 到 GPT-3.5",
    "003": "OpenAI 大模型开发与应用实践",
    "004": "从初代GPT到ChatGPT，再到GPT-4",
}


@dataclass(frozen=True)
class Erratum:
    id: str
    doc: str          # "000" .. "004" (file ../shared/seeds/NNN_*.txt)
    section: str      # e.g. "§5.2"
    chapter: str      # "01" .. "05": where the book shows it
    claim: str        # the document's words, in Chinese
    truth: str        # what is true, in English
    demo: Callable[[], str]


REGISTRY: dict = {}


@functools.lru_cache(maxsize=1)
def texts() -> dict:
    """errata.toml: each id's doc, section, chapter, claim (Chinese, verbatim) and truth (English)."""
    from .data import package_toml
    return package_toml(__package__, "errata.toml")


def erratum(id: str):
    """Decorator: register `demo` as the demonstration of erratum `id` (its texts are in errata.toml)."""
    def wrap(fn):
        if id in REGISTRY:
            raise ValueError(f"duplicate erratum id {id}")
        if id not in texts():
            raise ValueError(f"erratum {id} has a demo but no entry in gptbook/errata.toml")
        t = texts()[id]
        if t["doc"] not in DOCS or t["chapter"] not in CHAPTERS:
            raise ValueError(f"erratum {id}: doc must be one of {list(DOCS)} and chapter one of "
                             f"{list(CHAPTERS)}, got doc={t['doc']!r} chapter={t['chapter']!r}")
        REGISTRY[id] = Erratum(id, t["doc"], t["section"], t["chapter"], t["claim"], t["truth"], fn)
        return fn
    return wrap


def get(id: str) -> Erratum:
    if id not in REGISTRY:
        raise KeyError(f"unknown erratum {id!r}; known: {', '.join(sorted(REGISTRY, key=_order))}")
    return REGISTRY[id]


def _order(id: str):
    return int(id[1:]) if id[1:].isdigit() else 10**6


def by_chapter(chapter: str) -> list:
    return [e for e in sorted(REGISTRY.values(), key=lambda e: _order(e.id)) if e.chapter == chapter]


def demonstrate(id: str) -> str:
    """Run the demonstration; returns its evidence (raises AssertionError if it no longer holds)."""
    return get(id).demo()


def error_of(fn: Callable, *args, **kwargs) -> str:
    """Run code that is expected to fail; return 'ExceptionType: message' (first line).
    Raises AssertionError if it does NOT fail, since then the erratum would be out of date."""
    try:
        with quiet():
            fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - showing the reader the real error is the point
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        msg = re.sub(r"\s*\((?:/|[A-Za-z]:\\)[^()]*\)", "", msg)  # drop "(/abs/path/...)": not portable
        return f"{type(e).__name__}: {msg[:300]}"
    raise AssertionError("the document's code ran without error; this erratum needs revisiting")


@contextlib.contextmanager
def quiet():
    """Silence transformers' logging and Python warnings inside a demo (restored afterwards)."""
    try:
        from transformers.utils import logging as hf_logging
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        hf_logging = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if hf_logging is not None:
            hf_logging.set_verbosity(level)


@contextlib.contextmanager
def seeded(seed: int = 0):
    """Deterministic randomness inside a demo without disturbing the caller's RNG state; one thread
    (tiny tensors run fastest and reproducibly that way), restored afterwards."""
    import torch
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def tiny_hf_config(**changes):
    """A GPT2Config small enough to build and run in milliseconds (random weights, no download)."""
    from transformers import GPT2Config
    kw = dict(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2,
              bos_token_id=0, eos_token_id=0)
    kw.update(changes)
    return GPT2Config(**kw)


def tiny_gpt(**changes):
    """A tiny random book GPT (gptbook.model.GPT), in eval mode."""
    from .model import GPT, GPTConfig
    kw = dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=16)
    kw.update(changes)
    return GPT(GPTConfig(**kw)).eval()


def tiny_forward(shape, next_token: bool = False):
    """Seeded: a tiny random GPT, random token ids x of `shape`, and one forward pass without
    gradients. next_token=True feeds x[:, :-1] with targets x[:, 1:] (out.loss is the LM loss).
    Returns (model, x, out)."""
    import torch
    with seeded(0):
        m = tiny_gpt()
        x = torch.randint(0, 64, shape)
        with torch.no_grad():
            out = m(x[:, :-1], targets=x[:, 1:]) if next_token else m(x)
    return m, x, out


@functools.lru_cache(maxsize=1)
def gpt2_tok():
    """OpenAI's GPT-2 tokenizer (offline, from the data cache); loaded once."""
    from .tokenizer import gpt2_tokenizer
    return gpt2_tokenizer()


def markdown(id: str, evidence: str | None = None) -> str:
    e = get(id)
    doc = f"document {e.doc} ({DOCS.get(e.doc, '')}) {e.section}"
    md = (f"> **Erratum {e.id} ({doc}).** *The document says:* 「{e.claim}」  \n"
          f"> *What is true:* {e.truth}")
    if evidence is not None:
        fence = "`" * (max((len(r) for r in re.findall(r"`+", evidence)), default=0) + 1)
        pad = " " if "`" in evidence else ""
        md += f"  \n> *Shown by running it:* {fence}{pad}{evidence}{pad}{fence}"
    return md


def small(x: float, tol: float = 1e-5) -> str:
    """A float-noise difference as a stable string: '< 1e-05' (the exact noise varies by machine)."""
    if x >= tol:
        raise AssertionError(f"difference {x:.3g} is not below {tol:g}")
    return f"< {tol:g}"


def callout(id: str) -> None:
    """Display the erratum in the book's fixed form, with the evidence its demo produces.
    Raises only when the demonstration itself fails (the erratum then needs revisiting)."""
    evidence = demonstrate(id)
    _show(markdown(id, evidence))


def _show(md: str) -> None:
    """Rendered Markdown inside IPython/Jupyter, plain text elsewhere; never raises."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
        if get_ipython() is not None:
            display(Markdown(md))
            return
    except Exception:  # noqa: BLE001 - no IPython or no display: fall back to text
        pass
    print(md)


def table(ids) -> None:
    """Display several errata as one Markdown table (id, claim, what is true, evidence), each demo run.
    Raises only when a demonstration fails, like `callout`."""
    rows = ["| erratum | the document says | what is true | shown by running it |", "|---|---|---|---|"]
    for id in ids:
        e, evidence = get(id), demonstrate(id)
        cell = lambda t: t.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        fence = "`" * (max((len(r) for r in re.findall(r"`+", evidence)), default=0) + 1)
        pad = " " if "`" in evidence else ""
        rows.append(f"| **{e.id}** ({e.doc} {e.section}) | 「{cell(e.claim)}」 | {cell(e.truth)} | "
                    f"{fence}{pad}{cell(evidence)}{pad}{fence} |")
    _show("\n".join(rows))


CHAPTERS = {"01": "01_architecture", "02": "02_math", "03": "03_finetuning",
            "04": "04_applications", "05": "05_deployment"}


def index_markdown() -> str:
    """The ERRATA.md index: every erratum with its chapter (linked to the notebook)."""
    lines = ["# Errata of the five documents, machine-checked", "",
             "Generated by `python -c \"from gptbook import errata; print(errata.index_markdown(), end='')\" "
             "> ERRATA.md`; each row is demonstrated by code in `gptbook/errata_*.py` and re-run by "
             "`tests/test_errata.py`. In a chapter, `errata.callout(\"E4\")` shows the claim, the "
             "correction and the evidence of running it.", "",
             "| id | document | section | chapter | claim | what is true |", "|---|---|---|---|---|---|"]
    for e in sorted(REGISTRY.values(), key=lambda e: _order(e.id)):
        claim = e.claim.replace("|", "\\|").replace("\n", " ")
        truth = e.truth.replace("|", "\\|").replace("\n", " ")
        link = f"[{e.chapter}](chapters/{CHAPTERS.get(e.chapter, e.chapter)}.ipynb)"
        lines.append(f"| {e.id} | {e.doc} {DOCS.get(e.doc, '')} | {e.section} | {link} | {claim} | {truth} |")
    return "\n".join(lines) + "\n"


# the entries: importing these modules registers them (they import the helpers above)
from . import errata_code, errata_facts, errata_model, errata_tuning  # noqa: E402,F401
