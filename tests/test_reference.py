"""`gptbook compare`: the reader's figures against the stored quick-profile outputs."""
import json

import nbformat

from gptbook import reference


def _nb(path, outputs):
    nb = nbformat.v4.new_notebook()
    for src, text in outputs:
        c = nbformat.v4.new_code_cell(src)
        c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(c)
    nbformat.write(nb, path)


def test_identical_run_has_no_diffs(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir(), run.mkdir()
    cells = [("print(loss)", "val loss 1.234, accuracy 0.81\n"), ("# NBVAL_IGNORE_OUTPUT\nt", "took 3.2 s\n")]
    _nb(ref / "03_x.ipynb", cells)
    _nb(run / "03_x.ipynb", cells)
    diffs, n, notes = reference.compare(run, chapters_dir=ref)
    assert diffs == [] and n == 2 and notes == []


def test_planted_deviation_is_reported(tmp_path, capsys, monkeypatch):
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir(), run.mkdir()
    _nb(ref / "03_x.ipynb", [("print(loss)", "val loss 1.234, accuracy 0.81\n"),
                             ("# NBVAL_IGNORE_OUTPUT", "took 3.2 s\n")])
    _nb(run / "03_x.ipynb", [("print(loss)", "val loss 1.240, accuracy 0.60\n"),
                             ("# NBVAL_IGNORE_OUTPUT", "took 9.9 s\n")])   # timing: ignored
    diffs, n, _ = reference.compare(run, rtol=0.05, chapters_dir=ref)
    assert len(diffs) == 1
    d = diffs[0]
    assert (d.reference, d.observed) == (0.81, 0.60) and "accuracy" in d.context
    assert abs(d.rel - 0.2593) < 1e-3
    monkeypatch.setattr(reference, "CHAPTERS_DIR", ref)
    monkeypatch.setattr(reference.compare, "__defaults__", (0.05, 1e-6, ref))
    assert reference.main([str(run)]) == 1
    out = capsys.readouterr().out
    assert "reference 0.81, yours 0.6" in out and "1 beyond" in out


def test_missing_chapter_is_a_note(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir(), run.mkdir()
    _nb(ref / "04_y.ipynb", [("x", "1\n")])
    diffs, n, notes = reference.compare(run, chapters_dir=ref)
    assert n == 0 and "04_y: not in" in notes[0]
