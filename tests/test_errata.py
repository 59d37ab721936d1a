"""Every erratum: its demonstration still holds, its Chinese claim is a real quote, ERRATA.md is current."""
import os
import re
from pathlib import Path

import pytest

from gptbook import errata
from gptbook.config import CHAPTERS
from gptbook.errata import helpers, registry

ROOT = Path(__file__).resolve().parents[1]
SEEDS = Path(os.environ.get("GPTBOOK_SEEDS", ROOT.parent / "shared" / "seeds"))
IDS = sorted(errata.REGISTRY, key=registry._order)


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def _doc_text(doc: str) -> str:
    files = sorted(SEEDS.glob(f"{doc}_*.txt"))
    if not files:
        pytest.skip(f"documents not found in {SEEDS} (set GPTBOOK_SEEDS)")
    return _norm(files[0].read_text(encoding="utf-8"))


@pytest.mark.parametrize("id", IDS)
def test_demonstration_holds(id):
    evidence = errata.demonstrate(id)
    assert isinstance(evidence, str) and 10 < len(evidence) < 1200, evidence
    assert "/work/" not in evidence and "0x" not in evidence  # notebook-stable: no paths or addresses


@pytest.mark.parametrize("id", IDS)
def test_claim_is_a_chinese_quote_from_the_document(id):
    e = errata.get(id)
    assert re.search(r"[\u4e00-\u9fff]", e.claim), f"{id}: the claim must quote the Chinese text"
    assert e.claim.count("$") % 2 == 0, f"{id}: unbalanced $ would break the callout's math rendering"
    text = _doc_text(e.doc)
    # a claim may join several excerpts with "…"; each must occur verbatim (whitespace-normalised)
    for part in e.claim.split("…"):
        part = _norm(part)
        assert len(part) >= 8, f"{id}: excerpt too short to identify: {part!r}"
        assert part in text, f"{id}: not found in document {e.doc}: {part!r}"


def test_registry_is_well_formed():
    assert len(IDS) >= 17
    assert IDS[:17] == [f"E{i}" for i in range(1, 18)]  # E1..E17 = the seed map's list, in order
    for e in errata.REGISTRY.values():
        assert re.fullmatch(r"E\d+", e.id)
        assert e.chapter in CHAPTERS and e.doc in errata.DOCS
        assert e.section.startswith("§") and len(e.truth) > 40
        assert len(re.findall(r"[\u4e00-\u9fff]", e.truth)) < 0.1 * len(e.truth), f"{e.id}: truth is English"
    seed_chapters = {"02": [1, 3, 16], "01": [2, 8, 10, 13, 14], "03": [4, 5, 6, 7, 9, 11, 12, 15, 17]}
    for ch, nums in seed_chapters.items():
        assert all(errata.get(f"E{n}").chapter == ch for n in nums)


def test_duplicate_ids_and_bad_chapters_rejected(monkeypatch):
    with pytest.raises(ValueError, match="duplicate"):
        registry.erratum("E1")(lambda: "")
    bad = dict(registry.texts(), E9999={"doc": "000", "section": "§1", "chapter": "07", "claim": "错误", "truth": "x"})
    monkeypatch.setattr(registry, "texts", lambda: bad)
    with pytest.raises(ValueError, match="chapter"):
        registry.erratum("E9999")(lambda: "")
    assert "E9999" not in errata.REGISTRY
    with pytest.raises(KeyError, match="unknown erratum"):
        errata.get("E0")


def test_error_of_reports_and_insists_on_failure():
    assert helpers.error_of(lambda: {}["k"]) == "KeyError: 'k'"
    msg = helpers.error_of(lambda: exec("from transformers import AdamW", {}))
    assert msg.startswith("ImportError") and "/" not in msg  # absolute paths are stripped
    with pytest.raises(AssertionError, match="ran without error"):
        helpers.error_of(lambda: 1)


def test_callout_displays_and_raises_only_when_demo_fails(capsys, monkeypatch):
    assert errata.callout("E10") is None
    out = capsys.readouterr().out
    assert out.startswith("> **Erratum E10") and "Shown by running it" in out  # plain text outside IPython
    md = errata.markdown("E10", errata.demonstrate("E10"))
    assert "Erratum E10" in md and "10亿" in md and "Shown by running it" in md
    e = errata.REGISTRY["E10"]

    def broken():
        raise AssertionError("no longer holds")
    monkeypatch.setitem(errata.REGISTRY, "E10", e.__class__(**{**e.__dict__, "demo": broken}))
    with pytest.raises(AssertionError):
        errata.callout("E10")
    assert "Traceback" not in out


def test_errata_md_is_up_to_date():
    path = ROOT / "ERRATA.md"
    assert path.exists(), ("run: python -c \"from gptbook import errata; "
                           "print(errata.index_markdown(), end='')\" > ERRATA.md")
    assert path.read_text(encoding="utf-8") == errata.index_markdown(), "ERRATA.md is stale; regenerate it"
    assert {e.chapter for e in errata.REGISTRY.values()} <= set(CHAPTERS)


def test_markdown_keeps_backticks_in_evidence_inside_one_code_span():
    md = errata.markdown("E30", "ValueError: `max_length` is set to 8")
    assert "``` ValueError: `max_length` is set to 8 ```" not in md
    assert "`` ValueError: `max_length` is set to 8 ``" in md
    assert helpers.small(3e-9) == "< 1e-05"
    with pytest.raises(AssertionError):
        helpers.small(0.5)


def test_demos_leave_global_state_alone():
    import torch
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    errata.demonstrate("E12")
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    assert torch.get_num_threads() == threads


def test_table_shows_each_erratum_once(capsys):
    errata.table(["E8", "E10"])
    out = capsys.readouterr().out
    assert out.count("| **E8**") == 1 and out.count("| **E10**") == 1 and "10亿" in out
    with pytest.raises(KeyError):
        errata.table(["E0"])


def test_every_text_in_errata_toml_has_a_demo_and_bad_entries_are_refused():
    assert set(registry.texts()) - set(registry.withdrawn()) == set(errata.REGISTRY)
    with pytest.raises(ValueError, match="no entry in gptbook/errata/errata.toml"):
        registry.erratum("E9999")(lambda: "")
    with pytest.raises(ValueError, match="duplicate"):
        registry.erratum("E1")(lambda: "")


def _ids_shown(notebook: Path) -> set:
    """Errata ids a chapter displays: every "E<n>" string literal in its code cells."""
    import json
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return set(re.findall(r"""["'](E\d+)["']""", code))


def test_every_erratum_is_shown_in_its_own_chapter_and_no_withdrawn_one_anywhere():
    shown = {ch: _ids_shown(ROOT / "chapters" / f"{name}.ipynb") for ch, name in CHAPTERS.items()}
    missing = [f"{e.id} (chapter {e.chapter})" for e in errata.REGISTRY.values() if e.id not in shown[e.chapter]]
    assert not missing, f"registered errata no chapter shows (add errata.callout next to the material): {missing}"
    stray = {ch: sorted(ids - set(errata.REGISTRY)) for ch, ids in shown.items() if ids - set(errata.REGISTRY)}
    assert not stray, f"chapters show ids that are withdrawn or unknown: {stray}"


def test_withdrawn_errata_keep_their_reason_and_take_no_demo():
    gone = registry.withdrawn()
    assert gone and not set(gone) & set(errata.REGISTRY)
    assert all(len(t["withdrawn"]) > 40 for t in gone.values())
    with pytest.raises(ValueError, match="withdrawn"):
        registry.erratum(next(iter(gone)))(lambda: "")
    with pytest.raises(KeyError, match="withdrawn"):
        errata.get(next(iter(gone)))
    assert "## Withdrawn on review" in errata.index_markdown()


def test_chapters_readme_lists_the_errata_each_chapter_shows():
    """chapters/README.md names each chapter's errata (ids, or a count); both must match the notebooks."""
    text = (ROOT / "chapters" / "README.md").read_text(encoding="utf-8")
    for ch, name in CHAPTERS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}.ipynb`"))
        shown = _ids_shown(ROOT / "chapters" / f"{name}.ipynb")
        listed = set(re.findall(r"\bE\d+\b", row))
        count = re.search(r"(\d+) errata", row)
        if count:
            assert int(count.group(1)) == len(shown), \
                f"{name}: README says {count.group(1)} errata, the notebook shows {len(shown)}"
        else:
            assert listed == shown, f"{name}: README lists {sorted(listed)}, the notebook shows {sorted(shown)}"


def _doc_raw(doc: str) -> str:
    files = sorted(SEEDS.glob(f"{doc}_*.txt"))
    if not files:
        pytest.skip(f"documents not found in {SEEDS} (set GPTBOOK_SEEDS)")
    return files[0].read_text(encoding="utf-8")


@pytest.mark.parametrize("doc", sorted(errata.DOCS))
def test_sections_read_are_headings_of_the_document_in_order(doc):
    record = registry.sections_read()[doc]
    heads = registry.numbered_headings(_doc_raw(doc))
    listed = record["sections"]
    assert listed and all(h in heads for h in listed), [h for h in listed if h not in heads]
    assert [heads.index(h) for h in listed] == sorted(heads.index(h) for h in listed), "out of document order"
    assert len(set(listed)) == len(listed) and str(record["read"])[:2] == "20"


def test_sections_read_table_counts_every_erratum_and_refuses_unread_sections(monkeypatch):
    assert registry.numbered_headings("## 1. 背景介绍\n#### 优点\n# 定义模型\n###  7.2 开发工具推荐\n") == \
        ["§1 背景介绍", "§7.2 开发工具推荐"]
    assert registry.section_refs("003", "§5.2 (also 000 §5.2, 002 §7.3)") == \
        [("003", "5.2"), ("000", "5.2"), ("002", "7.3")]
    assert registry.section_refs("000", "§5.1 (same in 002, 003)") == [("000", "5.1"), ("002", "5.1"), ("003", "5.1")]
    assert registry.section_refs("004", "§9 Q1") == [("004", "9")]
    md = errata.index_markdown()
    table = md.split("## Sections read", 1)[1].split("## Withdrawn", 1)[0]
    for e in errata.REGISTRY.values():
        assert e.id in table, f"{e.id} is counted under no section read"
    e = errata.REGISTRY["E10"]
    monkeypatch.setitem(errata.REGISTRY, "E10", e.__class__(**{**e.__dict__, "section": "§42.1"}))
    with pytest.raises(ValueError, match=r"E10 \(002 §42\.1\)"):
        errata.index_markdown()


def test_e3_the_mlm_formula_is_a_verbatim_copy_of_the_ar_formula():
    """E3's 'what is true' says the document's MLM formula repeats its AR formula word for word: a
    citation of the document, so it is checked against the document here rather than in the demo."""
    assert "verbatim copy" in errata.get("E3").truth
    text = _doc_text("000")
    # both formulas: the softmax line, the sentence that introduces scores_i, the recurrence, its gloss
    block = re.search(r"\\hat\{y_i\} = \\text\{softmax\}.*?为模型对前 \$i-1\$ 个词的预测得分。", text)
    assert block, "the AR formula block is not in document 000 any more"
    assert text.count(block.group(0)) == 2, "the formula block should occur twice (AR and MLM), verbatim"


def test_citations_are_labelled_and_demonstrations_are_not():
    kinds = {id: errata.get(id).kind for id in IDS}
    assert {k for k in kinds.values()} <= set(registry.KINDS)
    assert kinds["E46"] == "citation" and kinds["E9"] == "demonstration"
    assert "Cited, not demonstrated" in errata.display.markdown("E46", "x")
    assert "Shown by running it" in errata.display.markdown("E9", "x")
