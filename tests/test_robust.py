"""gptbook.finetune.robust: augmentation, adversarial training on the embeddings (FGM), ensembles."""
import random

import pytest
import torch

from gptbook import config
from gptbook.finetune import robust, tasks
from gptbook.finetune.tasks import GPTForSequenceClassification
from gptbook.model import GPT

PAD = 0


def test_char_noise_disturbs_about_the_rate_and_repeats_with_the_seed():
    text = "这部电影真的很好看，演员也不错" * 20
    assert robust.char_noise(text, 0.0, random.Random(0)) == text
    a, b = robust.char_noise(text, 0.1, random.Random(1)), robust.char_noise(text, 0.1, random.Random(1))
    assert a == b and a != text
    # deletions shorten, doublings lengthen, swaps keep: the length moves by far less than the rate
    assert abs(len(a) - len(text)) < 0.1 * len(text)
    changed = sum(x != y for x, y in zip(a, text))
    assert changed > 0.05 * len(text)
    assert all(robust.char_noise("ab", 1.0, random.Random(s)) for s in range(20))       # never empty
    with pytest.raises(ValueError, match="rate"):
        robust.char_noise(text, 1.5, random.Random(0))


def test_augment_keeps_the_rows_and_their_labels():
    rows = [("good film", 1), ("bad film", 0)]
    out = robust.augment(rows, copies=2, rate=0.2, seed=0)
    assert out[:2] == rows and len(out) == 6 and [y for _, y in out] == [1, 0, 1, 0, 1, 0]
    assert out == robust.augment(rows, copies=2, rate=0.2, seed=0)


def _batch(tiny_config):
    torch.manual_seed(0)
    clf = GPTForSequenceClassification(GPT(tiny_config), 2, PAD)
    x = torch.randint(1, tiny_config.vocab_size, (4, 8))
    return clf, x, torch.tensor([0, 1, 1, 0])


def test_fgm_adds_the_loss_at_the_worst_nearby_embeddings_and_leaves_the_model_alone(tiny_config):
    clf, x, y = _batch(tiny_config)

    def plain(m, x, y):
        return m(x, labels=y).loss
    clean = plain(clf, x, y)
    total = robust.fgm(plain, clf.gpt.transformer.wte, epsilon=1.0)(clf, x, y)
    adversarial = total - clean
    assert adversarial > clean                      # the perturbation points uphill
    random_dir = torch.randn(4, 8, tiny_config.n_embd)
    random_dir = random_dir / random_dir.flatten(1).norm(dim=1).view(-1, 1, 1)
    hook = clf.gpt.transformer.wte.register_forward_hook(lambda m, i, o: o + random_dir)
    with torch.no_grad():
        noisy = plain(clf, x, y)
    hook.remove()
    assert adversarial > noisy                      # more than a random step of the same size
    total.backward()
    assert clf.gpt.transformer.wte.weight.grad is not None
    with torch.no_grad():
        assert torch.allclose(plain(clf, x, y), clean)   # no hook left behind
    with pytest.raises(ValueError, match="epsilon"):
        robust.fgm(plain, clf.gpt.transformer.wte, 0.0)


def test_train_head_trains_adversarially_and_validates_plainly(tiny_config):
    cfg = config.get_profile("quick", finetune_batch_size=4, warmup_steps=2, threads=None, eval_interval=5,
                             eval_iters=1)
    clf = GPTForSequenceClassification(GPT(tiny_config), 2, PAD)
    seqs, labels = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]], [0, 1, 1, 0]
    hist = tasks.train_head(clf, seqs, labels, cfg, PAD, steps=40, learning_rate=1e-2, val=(seqs, labels),
                            wrap_loss=lambda f: robust.fgm(f, clf.gpt.transformer.wte, 0.5))
    assert tasks.predict(clf, seqs, PAD).tolist() == labels
    # the training loss holds two losses, the validation loss one
    assert hist.train_loss[-1] > hist.val_loss[-1]


def test_predict_proba_agrees_with_predict(tiny_config):
    torch.manual_seed(0)
    clf = GPTForSequenceClassification(GPT(tiny_config), 3, PAD)
    seqs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    p = tasks.predict_proba(clf, seqs, PAD)
    assert torch.allclose(p.sum(-1), torch.ones(3)) and torch.equal(p.argmax(-1), tasks.predict(clf, seqs, PAD))


class CharTok:
    """One token per character (ids 2..51), pad 0."""
    class Enc:
        def __init__(self, ids):
            self.ids = ids

    def encode(self, text):
        return self.Enc([2 + ord(c) % 50 for c in text])

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def token_to_id(self, t):
        return 0


def test_compare_tricks_scores_every_trick_on_every_seed_and_the_ensemble(tiny_config):
    cfg = config.get_profile("quick", finetune_batch_size=4, warmup_steps=2, threads=None)
    rng = random.Random(0)
    pool = [("".join(rng.choice("ab") for _ in range(6)), 0) for _ in range(20)] + \
           [("".join(rng.choice("yz") for _ in range(6)), 1) for _ in range(20)]
    test = pool[::4]
    rows = robust.compare_tricks(GPT(tiny_config), CharTok(), pool, test, cfg, seeds=[0, 1], labels=12, steps=30,
                                 learning_rate=1e-2, max_len=8)
    assert [(r["trick"], r["seed"]) for r in rows] == [(t, s) for s in (0, 1) for t in robust.TRICKS[:3]] + [
        (robust.TRICKS[3], None)]
    assert all(0 <= r["clean"] <= 1 and 0 <= r["noisy"] <= 1 and r["seconds"] > 0 for r in rows)
    assert rows[-1]["clean"] == 1.0                   # a trivially separable task: the ensemble gets it all
