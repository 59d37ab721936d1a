"""The documents' errata, each with code that demonstrates what is true.

Every entry: an id (E1, E2, ...), the document and section, the claim quoted in Chinese, what is
true, the chapter where it is shown, and a `demo()` function that RUNS something (the failing
line of the document raising its real error, a count from a configuration, a formula checked
numerically) and returns a short evidence string. A demo raises AssertionError if the evidence
no longer holds (for instance a library changed), so `tests/test_errata.py` re-verifies them all.

In a chapter: `errata.callout("E10")` displays the fixed callout form and the evidence;
`errata.table(["E19", "E20"])` shows several as one table. The package: `registry` (ids, texts,
the `erratum` decorator), `helpers` (what demos share), `display` (callout, table, ERRATA.md), and
the demos, one module per kind: `model` (architecture, math), `tuning` (the seed map's code
errata), `facts` (facts, history, objectives), `code` (further code, metrics, training advice).
Texts (claim, truth, where) live in errata.toml; importing the package registers every demo. Claims may
join excerpts with " … "; each excerpt is verbatim. sections_read.toml records which sections of each
document were read for errata, and when (ERRATA.md's "Sections read" table).
"""
from .display import callout, index_markdown, markdown, table
from .registry import DOCS, REGISTRY, Erratum, demonstrate, get

# the demos: importing them registers them (each imports .registry and .helpers, never this package)
from . import code, facts, model, tuning  # noqa: E402,F401

__all__ = ["DOCS", "REGISTRY", "Erratum", "callout", "demonstrate", "get", "index_markdown", "markdown", "table"]
