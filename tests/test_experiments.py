import copy

import pytest
import torch

from gptbook import config
from gptbook.finetune import experiments
from gptbook.model import GPT
from gptbook.train import History


def _cfg():
    return config.get_profile("quick", threads=None)


def test_accumulation_equals_big_batch(tiny_config):
    torch.manual_seed(0)
    base = GPT(tiny_config)  # dropout 0
    x = torch.randint(0, tiny_config.vocab_size, (8, 12))
    y = torch.roll(x, -1, dims=1)
    big, acc = experiments.accumulation_matches_big_batch(lambda: copy.deepcopy(base), x, y,
                                                          _cfg(), micro=4)
    moved = False
    for (n, p), q, p0 in zip(big.named_parameters(), acc.parameters(), base.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=n)
        moved |= not torch.equal(p, p0)
    assert moved  # the step did change the weights


def test_accumulation_differs_from_a_different_batch(tiny_config):
    torch.manual_seed(0)
    base = GPT(tiny_config)
    x = torch.randint(0, tiny_config.vocab_size, (8, 12))
    y = torch.roll(x, -1, dims=1)
    big, _ = experiments.accumulation_matches_big_batch(lambda: copy.deepcopy(base), x, y, _cfg(), 2)
    half, _ = experiments.accumulation_matches_big_batch(lambda: copy.deepcopy(base), x[:4], y[:4],
                                                         _cfg(), 2)
    assert any(not torch.allclose(p, q) for p, q in zip(big.parameters(), half.parameters()))


def test_best_step_and_stop_step():
    h = History(val_steps=[0, 10, 20, 30, 40, 50], val_loss=[3.0, 2.0, 1.5, 1.7, 1.5, 2.5])
    assert experiments.best_step(h) == (20, 1.5)  # first of the tied minima
    assert experiments.stop_step(h, patience=2) == 40
    assert experiments.stop_step(h, patience=3) == 50
    with pytest.raises(ValueError):
        experiments.best_step(History())


def test_set_dropout(tiny_config):
    m = experiments.set_dropout(GPT(tiny_config), 0.3)
    assert m.transformer.drop.p == 0.3 and m.transformer.h[0].attn.dropout == 0.3
    x = torch.randint(0, tiny_config.vocab_size, (2, 8))
    m.train()
    assert not torch.equal(m(x).logits, m(x).logits)
    with pytest.raises(ValueError):
        experiments.set_dropout(m, 1.0)


def test_lr_sweep_runs_and_early_stopping_on_a_real_run(tiny_config):
    torch.manual_seed(0)
    base = GPT(tiny_config)
    data = torch.randint(0, tiny_config.vocab_size, (4, 12))
    val = torch.randint(0, tiny_config.vocab_size, (4, 12))

    def batches():
        return (experiments.cycle_batches([(data[:, :-1], data[:, 1:])]),
                experiments.cycle_batches([(val[:, :-1], val[:, 1:])]))
    rows = experiments.lr_sweep(lambda: copy.deepcopy(base), batches, _cfg(), [1e-5, 1e-2], steps=30)
    assert [r["learning_rate"] for r in rows] == [1e-5, 1e-2]
    assert rows[1]["train_loss"] < rows[0]["train_loss"] - 0.5  # memorises at a working lr
    h = experiments.run(copy.deepcopy(base), batches, _cfg(), 60, 1e-2, eval_interval=5)
    step, v = experiments.best_step(h)
    assert v == min(h.val_loss) and h.val_loss[h.val_steps.index(step)] == v
