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
