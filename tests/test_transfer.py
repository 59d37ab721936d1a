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
