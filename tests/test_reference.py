"""The reference bands: how a cell is classified, what passes, what fails (gptbook.cli.reference)."""
import json
import subprocess
import sys

import nbformat
import pytest

from gptbook.cli import reference


def _nb(path, cells):
    """cells: [(cell id, source, stdout text)] -> a notebook at path."""
    nb = nbformat.v4.new_notebook()
    for cid, src, text in cells:
        c = nbformat.v4.new_code_cell(src)
        c.id = cid
        c.execution_count = 1
        c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(c)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


# three seeds: c1 deterministic, c2 trained figures, c3 sampled text
RUNS = {
    "1337": [("c1", "print(n)", "71,169 tokens\n"), ("c2", "print(acc)", "accuracy 0.812, loss 2.10.\n"),
             ("c3", "print(sample)", "the cat\n")],
    "1338": [("c1", "print(n)", "71,169 tokens\n"), ("c2", "print(acc)", "accuracy 0.790, loss 2.14.\n"),
             ("c3", "print(sample)", "a dog sat\n")],
    "2024": [("c1", "print(n)", "71,169 tokens\n"), ("c2", "print(acc)", "accuracy 0.801, loss 2.11.\n"),
             ("c3", "print(sample)", "on the\n")],
}


@pytest.fixture
def book(tmp_path, monkeypatch):
    """chapters/ with one chapter (stored = seed 1337), three runs, and their reference file."""
    chapters = tmp_path / "chapters"
    _nb(chapters / "03_x.ipynb", RUNS["1337"])
    for seed, cells in RUNS.items():
        _nb(tmp_path / "seeds" / seed / "quick" / "03_x.ipynb", cells)
    monkeypatch.setenv("GPTBOOK_REFERENCE_DIR", str(tmp_path / "ref"))
    ref = reference.measure(sorted((tmp_path / "seeds").glob("*/quick")), chapters_dir=chapters)
    reference.reference_path().parent.mkdir()
    reference.reference_path().write_text(json.dumps(ref))
    return tmp_path, chapters, ref


def test_cells_are_classified_by_what_moves(book):
    _, _, ref = book
    cells = ref["chapters"]["03_x"]
    assert "c1" not in cells                       # identical in every run: nbval compares exactly
    assert cells["c2"]["kind"] == "bands" and cells["c2"]["skeleton"] == "accuracy §, loss §.\n"
    assert cells["c3"]["kind"] == "free"
    assert ref["runs"] == ["1337", "1338", "2024"]
    acc, loss = cells["c2"]["figures"]
    assert acc["seen"] == [0.812, 0.79, 0.801]
    # range 0.022; pooled relative range also counts; lo/hi = min/max -/+ 2r
    assert acc["band"][0] < 0.79 - 2 * 0.022 + 1e-9 and acc["band"][1] > 0.812 + 2 * 0.022 - 1e-9


def test_figures_every_run_printed_alike_may_round_the_other_way():
    """A seed-independent computation (the shipped model's perplexity) prints the same on every seed of
    one CPU; another CPU may round its last digit the other way, so such a figure gets K units of that
    digit. Whole numbers and the words stay exact, and a cell without decimals is compared by nbval."""
    same = [("run", "perplexity 44.14 over 10,240 tokens, 0 of 800 flagged\n")] * 3
    e = reference.measure_cell(same)
    assert e["kind"] == "agreed" and e["skeleton"] == "perplexity § over §,§ tokens, § of § flagged\n"
    assert e["figures"][0]["band"] == pytest.approx([44.12, 44.16])
    assert [f["band"] for f in e["figures"][1:]] == [[10.0, 10.0], [240.0, 240.0], [0.0, 0.0], [800.0, 800.0]]
    e.update(source=reference.source_hash("print(p)"))
    pats = reference.sanitize_patterns()
    assert reference.check(e, "print(p)", _outs("perplexity 44.15 over 10,240 tokens, 0 of 800 flagged\n"), pats) == []
    assert reference.check(e, "print(p)", _outs("perplexity 44.19 over 10,240 tokens, 0 of 800 flagged\n"), pats)
    assert reference.check(e, "print(p)", _outs("perplexity 44.14 over 10,240 tokens, 1 of 800 flagged\n"), pats)
    assert reference.measure_cell([("run", "71,169 tokens, 3 layers\n")] * 3) == {"kind": "exact"}


def test_band_rule():
    assert reference.band([1.0, 1.0, 1.0], ["1.0", "1.0", "1.0"], None) == [0.8, 1.2]   # 2 printed units
    assert reference.band([2.0, 2.0, 2.0], ["2.0"] * 3, pooled_rel=0.25) == [1.0, 3.0]   # borrows the cell spread
    lo, hi = reference.band([10.0, 11.0, 12.0], ["10", "11", "12"], pooled_rel=0.5)
    assert (lo, hi) == (10.0 - 2 * 5.5, 12.0 + 2 * 5.5)     # the cell's pooled spread is larger
    assert reference.unit("0.412") == pytest.approx(0.001) and reference.unit("17") == 1
    assert reference.unit("1.5e-05") == pytest.approx(1e-6)


def test_numbers_and_skeleton():
    text = "loss 2.10. v1.2.3 and 77% of -3e-05"
    assert [p for _, p, _ in reference.numbers(text)] == ["2.10", "77", "-3e-05"]
    assert reference.skeleton(text) == "loss §. v1.2.3 and §% of §"
    assert reference.skeleton("a   0.5\n  b") == "a §\n b"


def _outs(text):
    return [nbformat.v4.new_output("stream", name="stdout", text=text)]


def test_check_passes_in_band_and_fails_outside(book):
    _, _, ref = book
    e, pats = ref["chapters"]["03_x"]["c2"], reference.sanitize_patterns()
    assert reference.check(e, "print(acc)", _outs("accuracy 0.770, loss 2.20.\n"), pats) == []
    probs = reference.check(e, "print(acc)", _outs("accuracy 0.500, loss 2.11.\n"), pats)
    assert len(probs) == 1 and "0.500 is outside its band" in probs[0]
    words = reference.check(e, "print(acc)", _outs("accuracy 0.80, loss 2.11, worse than TF-IDF.\n"), pats)
    assert "words of the output differ" in words[0]
    stale = reference.check(e, "print(acc, 1)", _outs("accuracy 0.80, loss 2.11.\n"), pats)
    assert "source changed" in stale[0]


def test_edited_cell_is_unmeasured(tmp_path, monkeypatch):
    chapters = tmp_path / "chapters"
    _nb(chapters / "03_x.ipynb", [("c2", "print(acc)  # edited", "accuracy 0.812\n")])
    for seed, cells in RUNS.items():
        _nb(tmp_path / "seeds" / seed / "quick" / "03_x.ipynb", cells)
    ref = reference.measure(sorted((tmp_path / "seeds").glob("*/quick")), chapters_dir=chapters)
    assert ref["chapters"]["03_x"]["c2"]["kind"] == "unmeasured"


def test_compare_cli(book, capsys, monkeypatch):
    tmp, chapters, _ = book
    monkeypatch.setattr(reference, "CHAPTERS_DIR", chapters)
    monkeypatch.setattr(reference.compare, "__defaults__", (chapters, "quick"))
    _nb(tmp / "mine" / "03_x.ipynb", [("c1", "print(n)", "71,169 tokens\n"),
                                     ("c2", "print(acc)", "accuracy 0.100, loss 2.11.\n"),
                                     ("c3", "print(sample)", "anything at all\n")])
    assert reference.main([str(tmp / "mine")]) == 1
    out = capsys.readouterr().out
    assert "03_x c2: 0.100 is outside its band" in out and "1 problem(s)" in out
    _nb(tmp / "ok" / "03_x.ipynb", RUNS["2024"])
    assert reference.main([str(tmp / "ok")]) == 0


def test_measure_cli_remeasures_one_chapter(book, monkeypatch, capsys):
    """--chapters: the named chapter is measured from the new runs, the others keep their entries."""
    tmp, chapters, old = book
    from gptbook.cli import run
    _nb(chapters / "04_y.ipynb", [("d1", "print(f1)", "F1 0.50\n")])
    monkeypatch.setattr(reference, "CHAPTERS_DIR", chapters)
    monkeypatch.setattr(run, "CHAPTERS_DIR", chapters)
    ref = json.loads(reference.reference_path().read_text())
    ref["chapters"]["04_y"] = {"d1": {"kind": "bands", "figures": [{"band": [0.4, 0.6], "seen": [0.5] * 3}]}}
    reference.reference_path().write_text(json.dumps(ref))
    def new_runs(accs):
        for seed, acc in zip("123", accs):
            _nb(tmp / "new" / seed / "03_x.ipynb", [("c1", "print(n)", "71,169 tokens\n"),
                                                   ("c2", "print(acc)", f"accuracy {acc}, loss 2.10.\n"),
                                                   ("c3", "print(sample)", "text\n")])
        return [str(tmp / "new" / s) for s in "123"]
    new = new_runs(["0.805", "0.800", "0.795"])          # inside c2's bands: c2 keeps its entry of 5 figures
    assert reference.main_measure(new + ["--chapters", "3", "--write"]) == 0
    assert json.loads(reference.reference_path().read_text())["chapters"]["03_x"]["c2"] == old["chapters"]["03_x"]["c2"]
    assert "1 banded cells keep their earlier bands" in capsys.readouterr().out
    new = new_runs(["0.700", "0.720", "0.710"])          # outside: c2 is measured from the new runs
    with pytest.raises(SystemExit, match="unknown chapter"):
        reference.main_measure(new + ["--chapters", "09", "--write"])
    with pytest.raises(SystemExit, match="04_y.ipynb"):                  # the runs hold no chapter 04
        reference.main_measure(new + ["--chapters", "04", "--write"])
    assert reference.main_measure(new + ["--chapters", "3", "--write"]) == 0
    got = json.loads(reference.reference_path().read_text())
    assert got["chapters"]["04_y"] == ref["chapters"]["04_y"]             # kept as it was
    assert got["chapters"]["03_x"]["c2"]["figures"][0]["seen"] == [0.7, 0.72, 0.71]
    assert got["runs"] == ["1337", "1338", "2024", "1", "2", "3"] and got["remeasured"] == {"03_x": ["1", "2", "3"]}


def test_adding_a_run_from_another_cpu_widens_the_bands(book, monkeypatch):
    """--add: one run made elsewhere joins the measured values; its figure's band is derived again."""
    tmp, chapters, old = book
    _nb(tmp / "other" / "03_x.ipynb", [("c1", "print(n)", "71,169 tokens\n"),
                                      ("c2", "print(acc)", "accuracy 0.900, loss 2.10.\n"),
                                      ("c3", "print(sample)", "text\n")])
    before = old["chapters"]["03_x"]["c2"]["figures"][0]["band"]
    assert not before[0] <= 0.9 <= before[1]
    assert reference.main_measure([str(tmp / "other"), "--add", "--write"]) == 0
    got = json.loads(reference.reference_path().read_text())
    acc = got["chapters"]["03_x"]["c2"]["figures"][0]
    assert acc["seen"] == [0.812, 0.79, 0.801, 0.9] and acc["band"][0] < 0.79 < 0.9 < acc["band"][1]
    assert got["chapters"]["03_x"]["c2"]["runs"][-1] == "other" and got["runs"][-1] == "other"
    _nb(tmp / "words" / "03_x.ipynb", [("c2", "print(acc)", "accuracy 0.9 and more words\n")])
    assert reference.main_measure([str(tmp / "words"), "--add"]) == 1       # words differ: not settled


def test_measure_cli_refuses_too_few_runs(tmp_path):
    with pytest.raises(SystemExit, match="at least 3"):
        reference.main_measure([str(tmp_path), str(tmp_path)])


@pytest.mark.slow
def test_nbval_uses_the_bands(book):
    """End to end through pytest + nbval: a figure in its band passes, one outside fails."""
    tmp, chapters, ref = book
    for name, value, want in (("pass", "0.8", 0), ("fail", "0.1", 1)):
        nb = nbformat.v4.new_notebook()
        c = nbformat.v4.new_code_cell(f'print("accuracy {value}05, loss 2.12.")')
        c.id, c.execution_count = "c2", 1
        c.outputs = _outs("accuracy 0.812, loss 2.10.\n")
        nb.cells.append(c)
        path = tmp / name / "03_x.ipynb"
        path.parent.mkdir()
        nbformat.write(nb, path)
        e = json.loads(reference.reference_path().read_text())
        e["chapters"]["03_x"]["c2"]["source"] = reference.source_hash(c.source)
        reference.reference_path().write_text(json.dumps(e))
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval", "--nbval-current-env",
                            "-p", "gptbook.cli.reference", "-p", "no:cacheprovider", str(path)],
                           cwd=tmp, capture_output=True, text=True)
        assert r.returncode == want, r.stdout[-3000:]
        if want:
            assert "outside the measured bands" in r.stdout and "0.105 is outside its band" in r.stdout


def test_nan_figures_are_not_compared():
    e = reference.measure_cell([(f"a {v} b {w}", f"a {v} b {w}\n") for v, w in
                                (("NaN", "1.5"), ("1.5", "2.0"), ("2.0", "1.7"))])
    assert e["kind"] == "bands" and e["figures"][0]["band"] is None and e["figures"][0]["seen"][0] == "NaN"
    e.update(source=reference.source_hash("x"))
    pats = reference.sanitize_patterns()
    assert reference.check(e, "x", _outs("a 99 b NaN\n"), pats) == []
    assert "outside its band" in reference.check(e, "x", _outs("a 99 b 9.0\n"), pats)[0]


def test_reader_runs_progress_bars_are_not_differences():
    pats = reference.sanitize_patterns()
    bar = nbformat.v4.new_output("display_data", data={
        "text/plain": "100%|##########| 600/600 [00:01<00:00, 500.0it/s]",
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2}})
    err = nbformat.v4.new_output("stream", name="stderr", text="training: 100%|###| 3/3\n")
    stored, mine = _outs("loss 2.1\n"), [bar, err] + _outs("loss 2.1\n")
    assert reference.full_text(mine, pats, progress=False) == reference.full_text(stored, pats, progress=False)
    assert reference.full_text(mine, pats) != reference.full_text(stored, pats)   # nbval's view keeps them
