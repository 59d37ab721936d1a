"""The errata registry: each id's texts (errata.toml) and the demo function that shows what is true.
Demo modules register with the `erratum` decorator; they import this module, never the package."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable

from ..config import CHAPTERS

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
    # "demonstration": an experiment that would come out the other way if the document were right;
    # "citation": the evidence is a source (a paper's date, a version); the demo checks what it quotes
    kind: str = "demonstration"


REGISTRY: dict = {}
KINDS = ("demonstration", "citation")


@functools.lru_cache(maxsize=1)
def texts() -> dict:
    """errata.toml: each id's doc, section, chapter, claim (Chinese, verbatim) and truth (English)."""
    from ..data import package_toml
    return package_toml(__package__, "errata.toml")


def erratum(id: str):
    """Decorator: register `demo` as the demonstration of erratum `id` (its texts are in errata.toml)."""
    def wrap(fn):
        if id in REGISTRY:
            raise ValueError(f"duplicate erratum id {id}")
        if id not in texts():
            raise ValueError(f"erratum {id} has a demo but no entry in gptbook/errata/errata.toml")
        t = texts()[id]
        if "withdrawn" in t:
            raise ValueError(f"erratum {id} was withdrawn ({t['withdrawn'][:60]}...); it takes no demo")
        if t["doc"] not in DOCS or t["chapter"] not in CHAPTERS:
            raise ValueError(f"erratum {id}: doc must be one of {list(DOCS)} and chapter one of "
                             f"{list(CHAPTERS)}, got doc={t['doc']!r} chapter={t['chapter']!r}")
        kind = t.get("kind", "demonstration")
        if kind not in KINDS:
            raise ValueError(f"erratum {id}: kind must be one of {KINDS}, got {kind!r}")
        REGISTRY[id] = Erratum(id, t["doc"], t["section"], t["chapter"], t["claim"], t["truth"], fn, kind)
        return fn
    return wrap


def withdrawn() -> dict:
    """{id: texts with the reason}: entries registered once and withdrawn on review (kept, never reused)."""
    return {k: t for k, t in texts().items() if "withdrawn" in t}


def get(id: str) -> Erratum:
    if id not in REGISTRY:
        if id in withdrawn():
            raise KeyError(f"erratum {id} was withdrawn: {withdrawn()[id]['withdrawn']}")
        raise KeyError(f"unknown erratum {id!r}; known: {', '.join(sorted(REGISTRY, key=_order))}")
    return REGISTRY[id]


def _order(id: str):
    return int(id[1:]) if id[1:].isdigit() else 10**6


def demonstrate(id: str) -> str:
    """Run the demonstration; returns its evidence (raises AssertionError if it no longer holds)."""
    return get(id).demo()


@functools.lru_cache(maxsize=1)
def sections_read() -> dict:
    """sections_read.toml: per document, the date it was read for errata and the numbered headings read
    ("§3.2 算法步骤详解"), as the documents write them."""
    from ..data import package_toml
    return package_toml(__package__, "sections_read.toml")


_HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s+(\S.*?)\s*$")


def numbered_headings(text: str) -> list:
    """A document's numbered headings in order, written as sections_read.toml writes them:
    '## 1. 背景介绍' -> '§1 背景介绍', '#### 3.2.1 预训练' -> '§3.2.1 预训练'. Unnumbered headings
    ('#### 优点') and code comments ('# 定义模型') are not sections."""
    return [f"§{m.group(1)} {m.group(2)}" for line in text.splitlines() if (m := _HEADING.match(line))]


def section_refs(doc: str, section: str) -> list:
    """The (document, section number) pairs an erratum's `section` field names: '§1.2, §3.2.1' -> its
    own document's 1.2 and 3.2.1; '§9 Q5' -> 9; '(also 000 §5.2, 002 §7.3)' -> those documents' sections;
    '(same in 002, 003)' -> its own sections in those documents too."""
    own, _, extra = section.partition("(")
    nums = re.findall(r"§(\d+(?:\.\d+)*)", own)
    refs = [(doc, n) for n in nums]
    refs += re.findall(r"\b(\d{3}) §(\d+(?:\.\d+)*)", extra)
    same = re.search(r"same in ([\d, ]+)", extra)
    if same:
        refs += [(d, n) for d in re.findall(r"\d{3}", same.group(1)) for n in nums]
    if not nums:
        raise ValueError(f"section {section!r} names no section (write it as §<number>)")
    return list(dict.fromkeys(refs))
