"""gptbook.finetune.transfer: pooled features ignore padding; the probe sees a signal when there is one."""
import numpy as np
import torch

from gptbook.finetune import transfer


def test_pooled_features_ignore_padding(tiny_model):
    seqs = [[1, 2, 3, 4], [5, 6]]
    both = transfer.pooled_features(tiny_model, seqs, pad_id=0)
    alone = transfer.pooled_features(tiny_model, seqs[1:], pad_id=0)
    np.testing.assert_allclose(both[1], alone[0], atol=1e-5)
    assert both.shape == (2, tiny_model.config.n_embd)


def test_probe_separates_informative_from_random_features():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2] * 100)
    informative = np.eye(3)[y] * 2 + rng.normal(size=(300, 3))        # class shows in the features
    noise = rng.normal(size=(300, 3))
    feats = {"informative": (informative[:200], informative[200:]), "noise": (noise[:200], noise[200:])}
    rows = transfer.probe_curve(feats, y[:200], y[200:], budgets=[30, None], seeds=[0, 1, 2])
    assert len(rows) == 2 * 3 * 2 and {r["labels"] for r in rows} == {30, 200}
    s = {(r["features"], r["labels"]): r for r in transfer.summarize(rows)}
    assert s[("informative", 30)]["mean"] > s[("noise", 30)]["mean"] + 0.3
    assert s[("informative", 200)]["seeds"] == 3 and s[("noise", 200)]["se"] >= 0
    assert torch.tensor(s[("noise", 200)]["mean"]).item() < 0.5


def test_probe_fits_a_subset_once(monkeypatch):
    """Every seed draws all labels at None: one fit, not one per seed, and the same scores as fitting each."""
    rng = np.random.default_rng(1)
    y = np.array([0, 1] * 60)
    X = np.eye(2)[y] + rng.normal(size=(120, 2))
    feats = {"x": (X[:80], X[80:])}
    fits, real = [], transfer.fit_probe
    monkeypatch.setattr(transfer, "fit_probe", lambda a, b: fits.append(len(b)) or real(a, b))
    rows = transfer.probe_curve(feats, y[:80], y[80:], budgets=[20, None], seeds=[0, 1, 2])
    assert sorted(fits) == [20, 20, 20, 80]
    once = {r["seed"]: r["macro_f1"] for r in rows if r["labels"] == 80}
    p = real(X[:80], y[:80]).predict(X[80:])
    from sklearn.metrics import f1_score
    assert set(once.values()) == {f1_score(y[80:], p, average="macro")}


def test_probe_standardises_dense_features_and_leaves_sparse_ones():
    """A model's states have columns of very different scale: the probe standardises them (the same
    fit for any rescaling of a column), and TF-IDF's sparse rows go in as they are."""
    from scipy.sparse import csr_matrix
    rng = np.random.default_rng(2)
    y = np.array([0, 1] * 50)
    X = np.eye(2)[y] + rng.normal(size=(100, 2))
    scaled = X * np.array([1e-3, 1e3])                       # one column tiny, one huge
    p = transfer.fit_probe(X, y).predict(X)
    assert (transfer.fit_probe(scaled, y).predict(scaled) == p).all()
    sparse = transfer.fit_probe(csr_matrix(np.abs(X)), y)
    assert type(sparse).__name__ == "LogisticRegression"     # no scaler in front of sparse rows


class _CharTok:
    """Just enough of a tokenizer for the fine-tuning helpers: one id per character."""

    def token_to_id(self, t):
        return {"<|pad|>": 1, "<|endoftext|>": 0}[t]

    def encode(self, text):
        return type("Enc", (), {"ids": [2 + ord(c) % 60 for c in text]})()


def test_strategies_train_what_they_say(tiny_model):
    from gptbook.finetune.lora import param_counts
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    counts = {}
    for s in transfer.STRATEGIES:
        clf = transfer.strategy_classifier(tiny_model, s, num_labels=3, pad_id=1, lora_rank=2)
        counts[s] = param_counts(clf)[0]
        assert clf.score.weight.requires_grad                                     # the head always trains
    head = 3 * tiny_model.config.n_embd
    assert counts["head only"] == head
    t = tiny_model.transformer
    top = sum(p.numel() for p in [*t.h[-1].parameters(), *t.ln_f.parameters()])
    assert counts["top block + head"] == head + top
    assert counts["all layers"] == param_counts(tiny_model)[1] + head
    assert head < counts["IA3 + head"] < counts["LoRA r=8 + head"] < counts["top block + head"]
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in before.items())   # a copy was trained
    try:
        transfer.strategy_classifier(tiny_model, "everything", 3, 1)
        raise AssertionError("an unknown strategy must be refused")
    except ValueError as e:
        assert "choose one of" in str(e)


def test_compare_strategies_rows(tiny_model):
    from gptbook import config
    cfg = config.get_profile("quick").__class__(name="t", finetune_steps=4, finetune_batch_size=4,
                                                 eval_interval=2, eval_iters=1, block_size=16, lora_rank=2)
    rows = [("ab" * (i % 3 + 1), i % 2) for i in range(12)]
    out = transfer.compare_strategies(tiny_model, _CharTok(), rows, rows[:4], rows[4:], 2, cfg,
                                      strategies=["head only", "all layers"])
    assert [r["strategy"] for r in out] == ["head only", "all layers"]
    assert out[0]["trainable"] < out[1]["trainable"] and out[0]["state_mb"] < out[1]["state_mb"]
    assert out[0]["history"].val_steps == [0, 2, 3] and 0 <= out[1]["macro_f1"] <= 1


def test_heldout_split_is_disjoint_and_about_a_fifth():
    rows = [(f"review number {i}", i % 3) for i in range(2000)]
    pool, test = transfer.heldout_split(rows)
    assert len(pool) + len(test) == 2000 and not {r[0] for r in pool} & {r[0] for r in test}
    assert 300 < len(test) < 500
    assert transfer.heldout_split(rows)[1] == test


def _cfg(**kw):
    from gptbook import config
    return config.get_profile("quick").__class__(name="t", finetune_steps=3, finetune_batch_size=4,
                                                  block_size=16, **kw)


def test_recall_by_novelty_splits_seen_from_unseen_names():
    from gptbook.finetune import tasks
    chars = [list("张三去北京"), list("李四去上海")]
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    pred = [["B-PER", "I-PER", "O", "O", "O"], ["O", "O", "O", "B-LOC", "I-LOC"]]
    r = tasks.recall_by_novelty(chars, gold, pred, known={"张三", "北京"})
    assert r == {"seen": 0.5, "unseen": 0.5, "unseen_share": 0.5}
    assert tasks.recall_by_novelty(chars, gold, gold, known=set())["unseen"] == 1.0


def test_tagger_curve_scores_each_init_and_the_dictionary_on_the_same_subsets(tiny_model):
    sents = [(list("张三去北京了"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]),
             (list("李四在上海"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"])] * 6
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    import copy
    rows = transfer.tagger_curve({"a": lambda: copy.deepcopy(tiny_model), "b": lambda: copy.deepcopy(tiny_model)},
                                 _CharTok(), sents[:10], sents[10:], tags, [4, None], [0, 1], _cfg())
    assert len(rows) == 2 * 2 * 3 and {r["labels"] for r in rows} == {4, 10}
    d = [r for r in rows if r["features"] == "dictionary of the same sentences"]
    assert all(r["recall_unseen"] == 0 for r in d)           # a dictionary cannot find a name it never saw
    assert all(r["entity_f1"] == 1.0 for r in d if r["labels"] == 10)   # every test name is in training
    a = {(r["labels"], r["seed"]): r["entity_f1"] for r in rows if r["features"] == "a"}
    b = {(r["labels"], r["seed"]): r["entity_f1"] for r in rows if r["features"] == "b"}
    assert a == b                                             # same init, subset, head and batches: same score


def test_dialogue_heldout_split_keeps_every_question_on_one_side():
    from gptbook import data
    from gptbook.finetune import tasks
    pool, test = transfer.dialogue_heldout_split(data.load_dialogues("english"))
    assert not tasks.shared_questions(pool, test), "a held-out question is also in the fine-tuning pool"
    assert all(data.heldout(q) for q, *_ in test) and not any(data.heldout(q) for q, *_ in pool)
    assert len(test) > 100 and len(pool) > 4 * len(test) // 2


def test_dialogue_curve_rows(tiny_model):
    import copy
    pairs = [(f"question {i}", f"answer {i % 4}", "t") for i in range(40)]
    rows = transfer.dialogue_curve({"a": lambda: copy.deepcopy(tiny_model)}, _CharTok(), pairs[:30], pairs[30:],
                                   [10, None], [0], _cfg())
    assert [(r["labels"], r["features"]) for r in rows] == [(10, "a"), (30, "a")]
    assert all(0 < r["loss"] < 10 for r in rows)


def test_at_and_gap_read_a_summary_in_budget_order():
    rows = [{"features": f, "labels": n, "seed": s, "macro_f1": v}
            for f, n, s, v in [("a", 100, 0, 0.5), ("a", 100, 1, 0.7), ("a", 10, 0, 0.2), ("a", 10, 1, 0.2),
                               ("b", 100, 0, 0.4), ("b", 100, 1, 0.4), ("b", 10, 0, 0.1), ("b", 10, 1, 0.3)]]
    s = transfer.summarize(rows)
    assert [round(v, 9) for v in transfer.at(s, "a")] == [0.2, 0.6]
    assert [round(v, 9) for v in transfer.at(s, "a", "se")] == [0.0, 0.1]
    diff, two_se = transfer.gap(s, "a", "b")
    assert [round(d, 9) for d in diff] == [0.0, 0.2] and [round(e, 9) for e in two_se] == [0.2, 0.2]
    xs, means, errs = transfer.curves(s)
    assert xs == [10, 100] and list(means) == ["a", "b"] and [round(e, 9) for e in errs["b"]] == [0.2, 0.0]
