"""Exercises: every problem's checks, the notebooks' nbgrader metadata, release and grading.

Grading executes 15 notebooks in Jupyter kernels (5 sources, 5 released copies, one damaged
submission, two that monkeypatch the checker, one whose kernel dies, and nbgrader autograde of four
submissions); one module-scoped fixture runs them in 3 threads. The tests that grade in kernels are
marked slow: `make unit` leaves them out, `make test` runs them.
"""
import copy
import importlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn as nn

from gptbook import generate, mathx, model
from gptbook.exercises import CHAPTERS, CORRECT, INCORRECT, NOT_ATTEMPTED, cli
from gptbook.exercises.core import problem_named

ROOT = Path(__file__).resolve().parents[1]
MODULES = {k: importlib.import_module(f"gptbook.exercises.ch{k}") for k in CHAPTERS}
PROBLEMS = [(k, q) for k, m in MODULES.items() for q in m.problems()]
IDS = [f"ch{k}-{q.name}" for k, q in PROBLEMS]
SOURCES = {k: ROOT / "exercises" / v / f"{v}_exercises.ipynb" for k, v in CHAPTERS.items()}


def _stub(*args, **kwargs):
    raise NotImplementedError()


class _StubClass:
    def __init__(self, *args):
        raise NotImplementedError()


class _WrongLoRA(MODULES["03"]._RefLoRALinear):
    """A wrong LoRA: B random, so the layer no longer starts as the pre-trained one."""

    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        self.B = nn.Parameter(torch.randn(base.out_features, r))


F = torch.nn.functional

# A known-wrong answer for every problem: each must be reported as incorrect, with a message.
WRONG = {
    # 01 architecture
    "causal_mask": lambda T: torch.ones(T, T, dtype=torch.bool).triu(),
    "attention": lambda q, k, v, mask=None: torch.softmax(q @ k.transpose(-2, -1), -1) @ v,
    "split_heads": lambda x, n_head: x.view(x.size(0), n_head, x.size(1), -1),
    "layer_norm": lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True))
    / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b,
    "block_forward": lambda x, ln_1, attn, ln_2, mlp: mlp(ln_2(attn(ln_1(x)))),
    "count_params": lambda V, T, L, nh, C: V * C + T * C + L * 12 * C * C,
    # 02 math
    "softmax": lambda x, dim=-1: x.exp() / x.exp().sum(dim, keepdim=True),
    "cross_entropy": lambda logits, targets: -torch.softmax(logits, -1)[torch.arange(len(targets)),
                                                                       targets].log().sum(),
    "perplexity": lambda logits, targets: F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1)),
    "next_token_targets": lambda idx: (idx, idx),
    "sequence_logprob": lambda logits, idx: torch.log_softmax(logits, -1).gather(
        -1, idx[:, :, None]).squeeze(-1).sum(-1),
    "entropy": lambda p: -(p * p.log()).sum(-1),
    # 03 fine-tuning
    "LoRALinear": _WrongLoRA,
    "masked_instruction_loss": lambda logits, idx, prompt_lens: F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), idx[:, 1:].reshape(-1)),
    "lr_at": lambda step, max_lr, min_lr, warmup, total: max_lr * min(1.0, step / warmup),
    "last_token_index": lambda mask: torch.full((mask.size(0),), mask.size(1) - 1),
    "bio_spans": lambda tags: [(t[2:], i, i) for i, t in enumerate(tags) if t != "O"],
    "macro_f1": lambda y_true, y_pred, n: sum(a == b for a, b in zip(y_true, y_pred)) / len(y_true),
    # 04 applications
    "cosine_top_k": lambda query, docs, k: torch.topk(docs @ query, min(k, docs.size(0))).indices,
    "rolling_alert": lambda flags, window, threshold: [i for i, f in enumerate(flags) if f],
    "few_shot_prompt": lambda examples, query, instruction: instruction + " " + query,
    "nucleus_mask": lambda logits, top_p: F.softmax(logits, -1).cumsum(-1) <= top_p,
    "greedy_decode": lambda gpt, idx, n: torch.cat([idx, idx[:, -1:].repeat(1, n)], 1),
    # 05 deployment
    "kv_cache_update": lambda past, k, v: (k, v),
    "quantize_int8": lambda x: (x.to(torch.int8), 1.0),
    "validate_request": lambda req: [] if isinstance(req, dict) and "prompt" in req else ["prompt"],
    "left_pad": lambda seqs, pad_id: generate.left_pad(seqs, pad_id)[0].flip(1),
    "latency_percentile": lambda lat, p: sorted(lat)[int(p / 100 * (len(lat) - 1))],
    "prune_magnitude": lambda w, amount: w * (w > 0),
}


@pytest.fixture(autouse=True)
def _no_grader(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("GPTBOOK_GRADING", raising=False)


# ---------------------------------------------------------------- every problem

@pytest.mark.parametrize("ch,q", PROBLEMS, ids=IDS)
def test_reference_passes(ch, q):
    out = q.evaluate(q.reference)
    assert out.status == CORRECT, out


def test_judging_in_parallel_threads_is_correct():
    """The grader judges several submissions at once in threads; problems whose cases build a
    module from torch's global generator must not draw each other's numbers (CI once failed two
    source notebooks this way). The grader side draws from the global generator only inside
    core.seeded, which holds a lock."""
    observed = [(q, q.observe(q.reference)) for _, q in PROBLEMS]     # in the kernel: one thread

    def judge_all(_):                                                    # in the grader: many
        return [(q.name, q.judge(obs).status) for q, obs in observed]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = [r for rs in pool.map(judge_all, range(12)) for r in rs]
    assert [name for name, status in results if status != CORRECT] == []
    state = torch.get_rng_state()
    problem_named("block_forward").cases()
    assert torch.equal(state, torch.get_rng_state()), "building cases moved the learner's global generator"


@pytest.mark.parametrize("ch,q", PROBLEMS, ids=IDS)
def test_stub_is_not_attempted(ch, q):
    stub = _StubClass if isinstance(q.reference, type) else _stub
    out = q.evaluate(stub)
    assert out.status == NOT_ATTEMPTED and "NotImplementedError" in out.message, out


@pytest.mark.parametrize("ch,q", PROBLEMS, ids=IDS)
def test_wrong_answer_is_incorrect_with_message(ch, q):
    out = q.evaluate(WRONG[q.name])
    assert out.status == INCORRECT, out
    assert len(out.message) > 20 and ("expected" in out.message or "must" in out.message
                                      or "initialise" in out.message), out.message


@pytest.mark.parametrize("ch,q", PROBLEMS, ids=IDS)
def test_check_never_raises_and_grade_raises_under_grader(ch, q, capsys, monkeypatch):
    def boom(*args):
        raise ZeroDivisionError("boom")

    for fn in (boom, _stub, None, "not a function", lambda *a: object()):
        q.check(fn)                                        # displays, never raises
    assert "boom" in capsys.readouterr().out
    q.grade(boom)                                          # no grader: displays like check
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match=f"{q.name}: incorrect.*ZeroDivisionError"):
        q.grade(boom)
    with pytest.raises(AssertionError, match="not attempted"):
        q.grade(_StubClass if isinstance(q.reference, type) else _stub)
    q.grade(boom, strict=False)                            # strict=False: displays, never raises


def test_messages_name_the_input_and_types():
    q = problem_named("causal_mask")
    out = q.evaluate(lambda T: torch.ones(T, T).tril())    # float instead of bool
    assert out.status == INCORRECT and "causal_mask(1)" in out.message and "dtype torch.bool" in out.message
    out = q.evaluate(lambda T: [[1]])
    assert "expected a tensor" in out.message and "list" in out.message
    out = problem_named("macro_f1").evaluate(lambda *a: "0.5")
    assert "expected a number" in out.message


def test_call_time_limit_stops_an_infinite_loop(monkeypatch):
    monkeypatch.setenv("GPTBOOK_CALL_TIMEOUT", "0.5")

    def forever(T):
        while True:
            pass

    out = problem_named("causal_mask").evaluate(forever)
    assert out.status == INCORRECT and "did not finish within 0.5 s" in out.message


def test_hint_and_solution_show_reference_and_gptbook_source(capsys):
    q = problem_named("nucleus_mask")
    q.hint(1)
    q.hint(99)                                             # clamps to the last hint
    src = q.solution_source()
    assert "def _ref_nucleus_mask" in src and "def sample_next" in src
    q.solution()
    out = capsys.readouterr().out
    assert "Hint 1 of 3" in out and "Hint 3 of 3:" in out and "Solution" in out


# ---------------------------------------------------------------- references agree with gptbook

def test_references_agree_with_gptbook_model():
    torch.manual_seed(0)
    cfg = model.GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8, flash=False)
    attn = model.CausalSelfAttention(cfg).eval()
    x = torch.randn(2, 5, 8)
    q, k, v = attn.c_attn(x).split(8, dim=2)
    ch01 = MODULES["01"]
    heads = [mathx.split_heads(t, 2) for t in (q, k, v)]   # the split_heads reference
    y = ch01._ref_attention(*heads, mathx.causal_mask(5))
    with torch.no_grad():
        want, (k_model, v_model) = attn(x)
        torch.testing.assert_close(attn.c_proj(mathx.merge_heads(y)), want)
        # the KV-cache update is what the model keeps: feed 3 tokens, then 2 more
        _, past = attn(x[:, :3])
        _, present = attn(x[:, 3:], layer_past=past)
        k_new, v_new = heads[1][:, :, 3:], heads[2][:, :, 3:]
        for a, b in zip(MODULES["05"]._ref_kv_cache_update(past, k_new, v_new), present):
            torch.testing.assert_close(a, b)
    ln = nn.LayerNorm(8)
    torch.testing.assert_close(ch01._ref_layer_norm(x, ln.weight, ln.bias), ln(x))
    blk = model.Block(cfg).eval()
    with torch.no_grad():
        mine = ch01._ref_block_forward(x, blk.ln_1, lambda h: blk.attn(h)[0], blk.ln_2, blk.mlp)
        torch.testing.assert_close(mine, blk(x)[0])
    gpt = model.GPT(cfg.replace(n_layer=2)).eval()
    assert ch01._ref_count_params(16, 8, 2, 2, 8) == gpt.num_params()


def test_sequence_logprob_agrees_with_mathx():
    torch.manual_seed(1)
    gpt = model.GPT(model.GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8)).eval()
    idx = torch.randint(16, (3, 7))
    with torch.no_grad():
        got = MODULES["02"]._ref_sequence_logprob(gpt(idx).logits, idx)
    torch.testing.assert_close(got, mathx.sequence_logprob(gpt, idx))


def test_instruction_loss_agrees_with_model_forward():
    torch.manual_seed(2)
    gpt = model.GPT(model.GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8)).eval()
    idx, prompt_lens = torch.randint(16, (2, 6)), torch.tensor([2, 3])
    targets = idx.roll(-1, dims=1)
    targets[:, -1] = -100
    for b, p in enumerate(prompt_lens.tolist()):
        targets[b, : p - 1] = -100                       # predicting prompt tokens does not count
    with torch.no_grad():
        out = gpt(idx, targets=targets)
        torch.testing.assert_close(MODULES["03"]._ref_instruction_loss(out.logits, idx, prompt_lens), out.loss)


def test_lora_reference_agrees_with_peft():
    peft = pytest.importorskip("peft")
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 4))
    lora = peft.get_peft_model(copy.deepcopy(net), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["0"]))
    layer = lora.base_model.model[0]
    mine = MODULES["03"]._RefLoRALinear(copy.deepcopy(net[0]), r=2, alpha=4.0)
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
        mine.A.copy_(layer.lora_A["default"].weight)
        mine.B.copy_(layer.lora_B["default"].weight)
    x = torch.randn(3, 6)
    torch.testing.assert_close(mine(x), lora(x))


def test_int8_and_percentile_references_are_gptbook_deploy():
    from gptbook.deploy import bench, quantize
    x = torch.randn(3, 4)
    q, scale = MODULES["05"]._ref_quantize_int8(x)
    q_rows, _ = quantize.quantize_per_row(x.reshape(1, -1))
    assert q.dtype == torch.int8 and torch.equal(q.flatten(), q_rows[0])
    assert (q.float() * scale - x).abs().max() <= scale / 2 + 1e-6
    assert MODULES["05"]._ref_latency_percentile([1.0, 2.0, 3.0, 10.0], 95) == bench.percentiles([1, 2, 3, 10])["p95"]


def test_validate_request_agrees_with_the_service():
    serve = pytest.importorskip("gptbook.deploy.serve")
    from pydantic import ValidationError
    Req = serve.request_model(serve.ServeSettings(), vocab_size=64)
    for (req,) in problem_named("validate_request").cases():
        if not isinstance(req, dict):
            continue
        bad = MODULES["05"]._ref_validate_request(req)
        try:
            Req(**req)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == (not bad), (req, bad)


def test_nucleus_mask_agrees_with_sample_next():
    g = torch.Generator().manual_seed(4)
    logits = torch.log(torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]))[None]
    for top_p in (0.3, 0.5, 0.6, 0.75, 0.93):   # away from the cumulative sums .4 .65 .8 .9 .96
        keep = MODULES["04"]._ref_nucleus_mask(logits, top_p)[0]
        draws = generate.sample_next(logits.repeat(3000, 1), temperature=1.0, top_p=top_p, generator=g)
        assert set(draws.flatten().tolist()) == set(keep.nonzero().flatten().tolist()), top_p


# ---------------------------------------------------------------- notebooks: metadata and solutions

def _cells(ch):
    return nbformat.read(SOURCES[ch], as_version=4).cells


@pytest.mark.parametrize("ch", list(CHAPTERS))
def test_notebook_metadata_is_valid_nbgrader(ch):
    nb = nbformat.read(SOURCES[ch], as_version=4)
    nbformat.validate(nb)
    graded = [cli.meta(c) for c in nb.cells if cli.meta(c)]
    ids = [m["grade_id"] for m in graded]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)
    for m in graded:
        assert m["schema_version"] == 3
        assert set(m) >= {"grade", "solution", "locked", "grade_id"}
        if m["grade"]:
            assert m["locked"] and m["points"] > 0 and not m["solution"]
        if m["solution"]:
            assert not m["locked"]
    names = [q.name for q in MODULES[ch].problems()]
    assert len(names) >= 5
    assert {f"test_{n}" for n in names} | set(names) | {"setup"} == set(ids)
    for c in nb.cells:
        assert c.cell_type == "markdown" or (not c.outputs and c.execution_count is None)
        if cli.meta(c).get("solution"):
            assert c.source.count("### BEGIN SOLUTION") == c.source.count("### END SOLUTION") >= 1


@pytest.mark.parametrize("ch", list(CHAPTERS))
def test_notebook_solutions_agree_with_package_references(ch):
    cells = _cells(ch)
    ns = {}
    for c in cells:
        if cli.meta(c).get("grade_id") == "setup" or cli.meta(c).get("solution"):
            exec(compile(c.source, f"<{ch}:{cli.meta(c)['grade_id']}>", "exec"), ns)
    for q in MODULES[ch].problems():
        out = q.evaluate(ns[q.name])
        assert out.status == CORRECT, out


@pytest.mark.parametrize("ch", list(CHAPTERS))
def test_release_strips_solutions(ch, tmp_path):
    stripped = cli.strip_solutions(nbformat.read(SOURCES[ch], as_version=4))
    for c in stripped.cells:
        assert "BEGIN SOLUTION" not in c.source
        if cli.meta(c).get("solution"):
            assert "raise NotImplementedError()" in c.source and "# YOUR CODE HERE" in c.source
    ns = {}
    for c in stripped.cells:
        if cli.meta(c).get("grade_id") == "setup" or cli.meta(c).get("solution"):
            exec(compile(c.source, "<release>", "exec"), ns)
    assert all(q.evaluate(ns[q.name]).status == NOT_ATTEMPTED for q in MODULES[ch].problems())


# ---------------------------------------------------------------- grading executes notebooks

def _tampered(tmp):
    """Chapter 01's source, damaged in every way a submission can be."""
    nb = nbformat.read(SOURCES["01"], as_version=4)
    by_id = {cli.meta(c).get("grade_id"): c for c in nb.cells}
    by_id["causal_mask"].source = "while True:\n    pass"                       # top-level loop: cell timeout
    by_id["attention"].source = "def attention(q, k, v, mask=None):\n    while True:\n        pass"
    by_id["test_layer_norm"].source = "pass  # edited test"
    by_id["layer_norm"].source = ("from gptbook.exercises import core  # switch the grader off for good\n"
                                  "core._GRADING_AT_IMPORT = False\n"
                                  "def layer_norm(x, weight, bias, eps=1e-5):\n"
                                  "    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)")
    by_id["block_forward"].source = ("import os\nos.environ.pop('GPTBOOK_GRADING', None)  # try to switch "
                                     "the grader off\ndef block_forward(x, ln_1, attn, ln_2, mlp):\n"
                                     "    return 'hello'")
    drop = {by_id["setup"].id, by_id["test_split_heads"].id, by_id["count_params"].id}
    nb.cells = [c for c in nb.cells if c.id not in drop]
    nb.cells.insert(3, nbformat.v4.new_code_cell("raise RuntimeError('a stray error')"))
    nb.cells.append(nbformat.v4.new_code_cell("import os\nos._exit(1)"))          # the kernel dies at the end
    path = tmp / "01_architecture_exercises.ipynb"
    nbformat.write(nb, path)
    return path


# A submission that patches the checker instead of answering (the probe of 2026-11-28 got full
# marks with it under both graders): every answer is the stub.
MONKEYPATCH = ("import gptbook.exercises.core as _c\n"
               "_c.Problem.evaluate = lambda self, fn: _c.Outcome(_c.CORRECT, '', self.name)\n"
               "_c.Problem.grade = lambda self, fn, strict=None: None\n")


def _monkeypatched(nb):
    """The released copy of `nb` (all stubs) with MONKEYPATCH at the top of the first answer cell."""
    nb = cli.strip_solutions(nb)
    first = next(c for c in nb.cells if cli.meta(c).get("solution"))
    first.source = MONKEYPATCH + first.source
    return nb


def _dies_after_first_answer(nb):
    """The source (all correct), but the kernel dies in the second answer cell."""
    nb = copy.deepcopy(nb)
    answers = [c for c in nb.cells if cli.meta(c).get("solution")]
    answers[1].source += "\nimport os\nos._exit(1)"
    return nb


def _nbgrader_pipeline(course):
    """nbgrader generate_assignment + autograde of chapter 01, with the repository's judge, for a
    full-marks (alice), an empty (bob), a monkeypatching (mallory) and a dying (carol) submission
    -> {student: (score, max_score)}, or None when nbgrader is not installed."""
    try:
        from nbgrader.api import Gradebook
    except ImportError:
        return None
    a = "01_architecture"
    (course / "source" / a).mkdir(parents=True)
    (course / "source" / a / SOURCES["01"].name).write_bytes(SOURCES["01"].read_bytes())
    db = f"sqlite:///{course / 'gradebook.db'}"
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.db_url = {db!r}\nc.Execute.timeout = 60\n"
        "from gptbook.exercises.nbgrader_judge import configure\nconfigure(c)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    env.pop("GPTBOOK_GRADING", None)
    run = lambda *args: subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=400, check=True)
    run("generate_assignment", a, "--create", "--force")
    source = nbformat.read(SOURCES["01"], as_version=4)
    released = nbformat.read(course / "release" / a / SOURCES["01"].name, as_version=4)
    for student, nb in (("alice", source), ("bob", released), ("mallory", _monkeypatched(source)),
                        ("carol", _dies_after_first_answer(source))):
        (course / "submitted" / student / a).mkdir(parents=True)
        nbformat.write(nb, course / "submitted" / student / a / SOURCES["01"].name)
    run("autograde", a, "--create", "--force")
    with Gradebook(db) as gb:
        return {s: (gb.find_submission(a, s).score, gb.find_submission(a, s).max_score)
                for s in ("alice", "bob", "mallory", "carol")}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Reports for every source notebook, every released notebook and one tampered submission."""
    tmp = tmp_path_factory.mktemp("grading")
    released = {p.parent.name: p for p in cli.release(tmp / "release")}
    jobs = {("source", ch): (SOURCES[ch], 60) for ch in CHAPTERS}
    jobs.update({("release", ch): (released[CHAPTERS[ch]], 60) for ch in CHAPTERS})
    jobs[("tampered", "01")] = (_tampered(tmp), 20)
    for ch, make in (("01", _monkeypatched), ("03", _monkeypatched), ("01", _dies_after_first_answer)):
        kind = "monkeypatch" if make is _monkeypatched else "dies"
        path = tmp / kind / ch / SOURCES[ch].name
        path.parent.mkdir(parents=True)
        nbformat.write(make(nbformat.read(SOURCES[ch], as_version=4)), path)
        jobs[(kind, ch)] = (path, 30)
    with ThreadPoolExecutor(max_workers=3) as pool:
        nbgrader_job = pool.submit(_nbgrader_pipeline, tmp / "course")
        futures = {k: pool.submit(cli.grade_notebook, p, SOURCES[k[1]], t) for k, (p, t) in jobs.items()}
        out = {k: f.result() for k, f in futures.items()}
        try:
            out["nbgrader"] = nbgrader_job.result()
        except subprocess.CalledProcessError as e:
            out["nbgrader"] = f"nbgrader failed: {e.stderr[-2000:]}"
        return out


@pytest.mark.slow
@pytest.mark.parametrize("ch", list(CHAPTERS))
def test_source_notebook_gets_full_marks(graded, ch):
    rep = graded[("source", ch)]
    assert rep.max_score > 0 and rep.score == rep.max_score, rep.text()
    assert len(rep.rows) == len(MODULES[ch].PROBLEMS)


@pytest.mark.slow
@pytest.mark.parametrize("ch", list(CHAPTERS))
def test_released_notebook_scores_zero_not_attempted(graded, ch):
    rep = graded[("release", ch)]
    assert rep.score == 0 and rep.max_score > 0 and not rep.error, rep.text()
    assert all(r.status == NOT_ATTEMPTED for r in rep.rows), rep.text()


@pytest.mark.slow
def test_tampered_submission_is_graded_problem_by_problem(graded):
    rep = graded[("tampered", "01")]
    rows = {r.problem: r for r in rep.rows}
    assert rows["causal_mask"].status == "timeout" and rows["causal_mask"].points == 0
    assert rows["attention"].status == INCORRECT and "did not finish" in rows["attention"].message
    assert rows["split_heads"].status == CORRECT                       # deleted test cell restored
    assert rows["layer_norm"].status == INCORRECT and rows["layer_norm"].points == 0  # edited test restored
    assert rows["block_forward"].status == INCORRECT and "expected a tensor" in rows["block_forward"].message
    assert rows["count_params"].status == NOT_ATTEMPTED                # deleted answer cell -> stub
    assert rep.score == 1 and rep.max_score == 8
    assert "kernel" in rep.error.lower() or "dead" in rep.error.lower(), rep.error


@pytest.mark.slow
def test_grade_cli_exits_zero_on_garbage(tmp_path):
    bad = tmp_path / "02_math_exercises.ipynb"
    bad.write_text("{ this is not json")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "gptbook", "exercises", "grade", str(bad), "--timeout", "5",
                          "--json", "reports.json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    [rep] = json.loads((tmp_path / "reports.json").read_text())     # the scores as data, not parsed from text
    assert (rep["score"], rep["max_score"]) == (0, 7) and len(rep["rows"]) == 6, rep
    assert "cannot read the submission" in rep["error"] and all(r["points"] == 0 for r in rep["rows"]), rep
    assert "Total: 0 / 7" in res.stdout                              # and the same for a human


@pytest.mark.slow
def test_nbgrader_generate_and_autograde(graded):
    scores = graded["nbgrader"]
    if scores is None:
        pytest.skip("nbgrader is not installed")
    assert isinstance(scores, dict), scores
    assert scores["alice"] == (8.0, 8.0) and scores["bob"] == (0.0, 8.0), scores
    assert scores["mallory"] == (0.0, 8.0), scores          # the patched checker earns nothing
    assert scores["carol"] == (1.0, 8.0), scores            # nbgrader alone would void the notebook


@pytest.mark.slow
@pytest.mark.parametrize("ch", ["01", "03"])
def test_monkeypatching_the_checker_scores_zero(graded, ch):
    rep = graded[("monkeypatch", ch)]
    assert rep.max_score > 0 and rep.score == 0, rep.text()
    assert all(r.status == NOT_ATTEMPTED for r in rep.rows), rep.text()


@pytest.mark.slow
def test_a_dying_kernel_costs_only_the_problems_after_it(graded):
    rep = graded[("dies", "01")]
    rows = {r.problem: r for r in rep.rows}
    assert rows["causal_mask"].status == CORRECT and rep.score == 1, rep.text()
    assert all(r.status == "not run" for r in rep.rows[1:]) and "kernel died" in rep.error, rep.text()


def test_release_removes_hidden_tests():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("q1.grade(f)\n### BEGIN HIDDEN TESTS\nassert f(2) == 4\n### END HIDDEN TESTS\n")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "test_f", "locked": True, "points": 1,
                                 "solution": False, "schema_version": 3, "task": False}
    nb.cells.append(cell)
    assert cli.strip_solutions(nb).cells[0].source.strip() == "q1.grade(f)"


def test_every_problem_has_its_text_and_missing_texts_are_refused():
    from gptbook.exercises import core
    names = {q.name for _, q in PROBLEMS}
    assert names == set(core._texts())                    # no problem without text, no stale text
    for k, q in PROBLEMS:
        assert core.problem_text(q.name)["chapter"] == k and q.hints and (q.__doc__ or "").strip()
    with pytest.raises(KeyError, match="problems.toml"):
        core.function_problem("no_such_problem", reference=len)(lambda: [])


# ---------------------------------------------------------------- the judge: records read outside the kernel

def test_wire_round_trip_is_plain_data(tmp_path):
    from gptbook.exercises import core
    import numpy as np
    value = [torch.arange(3), (1, 2.5, "x", None, True), {"a": torch.zeros(2, dtype=torch.bool), 3: [4]},
             np.float32(0.5), nn.Linear(2, 2), np.zeros(2), nn.Parameter(torch.ones(2))]
    path = tmp_path / "rec.pt"
    torch.save(core.to_wire(value), path)
    back = core.from_wire(torch.load(path, weights_only=True))   # no code runs while reading
    assert torch.equal(back[0], torch.arange(3)) and back[1] == (1, 2.5, "x", None, True)
    assert torch.equal(back[2]["a"], torch.zeros(2, dtype=torch.bool)) and back[2][3] == [4]
    assert back[3] == 0.5 and type(back[3]) is float
    assert isinstance(back[4], core.Foreign) and back[4].type_name == "Linear" and "module" in back[4].text
    assert back[5].type_name == "ndarray" and type(back[6]) is torch.Tensor
    loop = []
    loop.append(loop)
    assert core.from_wire(core.to_wire(loop))                    # a list that contains itself: cut off
    for bad in ("x", ["tensor", 3], ["v", object()], ["dict", [[1]]], ["nope", 1]):
        with pytest.raises(ValueError):
            core.from_wire(bad)
    q = problem_named("causal_mask")
    out = q.judge([{"value": core.to_wire(nn.Linear(2, 2))}])
    assert out.status == INCORRECT and "expected a tensor, got Linear" in out.message, out


def _planned(tmp_path, name):
    from gptbook.exercises import judge
    return judge.Planned(f"test_{name}", name, tmp_path / f"{name}.pt", None, None)


@pytest.mark.parametrize("ch,q", [PROBLEMS[0], next(p for p in PROBLEMS if p[1].name == "LoRALinear")],
                         ids=["causal_mask", "LoRALinear"])
def test_record_then_judge_in_another_place(ch, q, tmp_path):
    from gptbook.exercises import core, judge
    p = _planned(tmp_path, q.name)
    stub = _StubClass if isinstance(q.reference, type) else _stub
    for answer, status in ((q.reference, CORRECT), (stub, NOT_ATTEMPTED), (WRONG[q.name], INCORRECT)):
        core.record(q.name, lambda answer=answer: answer, str(p.path))
        assert judge.judge_record(p).status == status
    core.record(q.name, lambda: undefined_name, str(p.path))  # noqa: F821 - the learner never defined it
    out = judge.judge_record(p)
    assert out.status == INCORRECT and "not defined" in out.message


def test_judge_trusts_no_claim_only_values(tmp_path):
    """The grader recomputes the reference: a record must contain the right values, and a file that
    is not a record (or not for this problem) is incorrect, not an error of the grader."""
    from gptbook.exercises import core, judge
    p = _planned(tmp_path, "causal_mask")
    assert judge.judge_record(p) is None                       # not recorded: the caller says why
    wrong = [{"value": core.to_wire(torch.ones(T, T, dtype=torch.bool))} for T in (1, 4, 7)]
    for rec in ({"problem": "causal_mask", "observations": wrong},
                {"problem": "causal_mask", "observations": [{"status": "correct"}]},
                {"problem": "causal_mask", "observations": wrong[:1] + [{"value": ["v", True]}]},
                {"problem": "causal_mask", "observations": "correct"},
                {"problem": "attention", "observations": []}, ["not", "a", "dict"]):
        torch.save(rec, p.path)
        assert judge.judge_record(p).status == INCORRECT, rec
    p.path.write_bytes(b"not a torch file")
    assert "unreadable" in judge.judge_record(p).message


def test_add_record_cells_after_known_test_cells(tmp_path):
    from gptbook.exercises import judge
    nb = nbformat.read(SOURCES["01"], as_version=4)
    custom = nbformat.v4.new_code_cell("assert True")
    custom.metadata["nbgrader"] = {"grade": True, "grade_id": "test_teachers_own", "locked": True,
                                   "points": 1, "solution": False, "schema_version": 3, "task": False}
    nb.cells.append(custom)
    n = len(nb.cells)
    plan = judge.add_record_cells(nb, tmp_path)
    assert sorted(plan) == sorted(f"test_{q.name}" for q in MODULES["01"].problems())
    assert len(nb.cells) == n + len(plan)
    for p in plan.values():
        i = next(i for i, c in enumerate(nb.cells) if c is p.test_cell)
        assert nb.cells[i + 1] is p.record_cell and judge.is_record_cell(p.record_cell)
        assert f"lambda: {p.problem}" in p.record_cell.source and str(p.path) in p.record_cell.source


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "abc"])
def test_grade_timeout_cannot_be_switched_off(bad, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["grade", str(tmp_path / "x.ipynb"), "--timeout", bad])
    assert e.value.code == 2
    assert "--timeout" in capsys.readouterr().err
    with pytest.raises(ValueError, match="positive number of seconds|number of seconds"):
        cli.grade_notebook(tmp_path / "x.ipynb", timeout=float(bad) if bad != "abc" else bad)


def test_grade_missing_submission_is_an_error_naming_it(capsys, tmp_path):
    missing = tmp_path / "nope" / "01_architecture_exercises.ipynb"
    assert cli.main(["grade", str(missing)]) == 2
    assert f"submission not found: {missing}" in capsys.readouterr().err
    rep = cli.grade_notebook(missing)
    assert rep.error == f"submission not found: {missing}" and not rep.rows
    with pytest.raises(SystemExit):
        cli.main(["grade", str(missing), "--source", str(tmp_path / "no_source.ipynb")])


def test_nbgrader_config_installs_the_judge():
    pytest.importorskip("nbgrader")
    from traitlets.config import Config
    from nbgrader.preprocessors import Execute
    from gptbook.exercises.nbgrader_judge import JudgedExecute, configure
    c = Config()
    configure(c)
    steps = c.Autograde.autograde_preprocessors
    assert JudgedExecute in steps and Execute not in steps
    assert "configure(c)" in (ROOT / "nbgrader_config.py").read_text()
