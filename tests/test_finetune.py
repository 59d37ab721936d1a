"""gptbook.finetune.tasks on tiny configs: pooling, padding invariance, HF parity, label alignment."""
import pytest
import torch

from gptbook.finetune import tasks as finetune
from gptbook.finetune.tasks import IGNORE, GPTForSequenceClassification, GPTForTokenClassification
from gptbook.model import GPT

PAD = 1


def test_last_token_index_right_and_left_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert finetune.last_token_index(mask).tolist() == [2, 4, 4]


def test_head_pools_the_last_non_pad_token(tiny_config):
    clf = GPTForSequenceClassification(GPT(tiny_config), 3, PAD).eval()
    x = torch.tensor([[5, 6, 7, PAD, PAD]])
    h = clf.gpt(x[:, :3]).hidden_states[:, -1]          # hidden state of token 7
    torch.testing.assert_close(clf(x).logits, clf.score(h), rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_the_classification(tiny_config):
    clf = GPTForSequenceClassification(GPT(tiny_config), 3, PAD).eval()
    seqs = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    alone = torch.cat([clf(torch.tensor([s])).logits for s in seqs])
    right, mask = finetune.pad_right(seqs, PAD)
    from gptbook.generate import left_pad
    left, lmask = left_pad(seqs, PAD)
    torch.testing.assert_close(clf(right, attention_mask=mask).logits, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(clf(left, attention_mask=lmask).logits, alone, rtol=1e-4, atol=1e-5)
    assert finetune.predict(clf, seqs, PAD, batch_size=2).tolist() == alone.argmax(-1).tolist()


def test_matches_hf_gpt2_for_sequence_classification(tiny_config):
    from transformers import GPT2ForSequenceClassification
    from gptbook.hf import to_hf
    clf = GPTForSequenceClassification(GPT(tiny_config), 3, PAD).eval()
    hf = to_hf(clf.gpt, cls=GPT2ForSequenceClassification, num_labels=3, pad_token_id=PAD)
    assert hf.config.pad_token_id == PAD and hf.config.num_labels == 3
    hf.score.weight.data.copy_(clf.score.weight)
    x, mask = finetune.pad_right([[5, 6, 7, 8], [9, 10]], PAD)
    y = torch.tensor([0, 2])
    ours, theirs = clf(x, attention_mask=mask, labels=y), hf(input_ids=x, attention_mask=mask, labels=y)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-4, atol=1e-5)


def test_classifier_learns_a_memorisable_batch(tiny_config):
    from gptbook import config
    cfg = config.get_profile("quick", finetune_batch_size=4, warmup_steps=2, threads=None)
    clf = GPTForSequenceClassification(GPT(tiny_config), 2, PAD)
    seqs, labels = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]], [0, 1, 1, 0]
    hist = finetune.train_head(clf, seqs, labels, cfg, PAD, steps=40, learning_rate=1e-2)
    assert hist.train_loss[-1] < 0.2 * hist.train_loss[0]
    assert finetune.predict(clf, seqs, PAD).tolist() == labels


class CharTok:
    """A stand-in for tokenizers.Tokenizer: 'XY' words split into one token per character."""
    class Enc:
        def __init__(self, ids):
            self.ids = ids

    def encode(self, text):
        return self.Enc([2 + (ord(c) % 50) for c in text])

    def token_to_id(self, t):
        return 0


def test_token_labels_align_with_one_sub_token_per_word():
    label2id = {"O": 0, "B-PER": 1, "I-PER": 2}
    words, tags = ["Ann", "met", "Bo"], ["B-PER", "O", "B-PER"]
    ids, labels = finetune.align_token_labels(words, tags, CharTok(), label2id, max_len=100, at="first")
    assert len(ids) == len(labels) == 8
    assert labels == [1, IGNORE, IGNORE, 0, IGNORE, IGNORE, 1, IGNORE]
    _, last = finetune.align_token_labels(words, tags, CharTok(), label2id, max_len=100)
    assert last == [IGNORE, IGNORE, 1, IGNORE, IGNORE, 0, IGNORE, 1]
    gold, pred = finetune.word_tags([torch.tensor([0, 0, 1, 0, 0, 0, 0, 2])], [last], list(label2id))
    assert gold == [["B-PER", "O", "B-PER"]] and pred == [["B-PER", "O", "I-PER"]]
    ids, labels = finetune.align_token_labels(words, tags, CharTok(), label2id, max_len=4)
    assert len(ids) == len(labels) == 4
    with pytest.raises(ValueError, match="tags"):
        finetune.align_token_labels(words, tags[:2], CharTok(), label2id, 10)


def test_token_head_ignores_padding_labels(tiny_config):
    head = GPTForTokenClassification(GPT(tiny_config), 5, PAD).eval()
    seqs, labels = [[5, 6, 7], [8, 9]], [[1, 2, IGNORE], [3, 4]]
    x, mask = finetune.pad_right(seqs, PAD)
    y = torch.full_like(x, IGNORE)
    for i, l in enumerate(labels):
        y[i, :len(l)] = torch.tensor(l)
    out = head(x, attention_mask=mask, labels=y)
    assert out.logits.shape == (2, 3, 5)
    keep = y != IGNORE
    ref = torch.nn.functional.cross_entropy(out.logits[keep], y[keep])
    torch.testing.assert_close(out.loss, ref)
    preds = finetune.predict(head, seqs, PAD)
    assert [len(p) for p in preds] == [3, 2]


def test_stratified_split_is_disjoint_and_keeps_class_shares():
    labels = [0] * 500 + [1] * 100 + [2] * 400
    tr, va, te = finetune.stratified_split(labels, seed=0)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert sorted(tr + va + te) == list(range(1000))
    assert sum(labels[i] == 1 for i in te) == 20 and len(te) == 200
    sub = finetune.subsample(tr, [labels[i] for i in tr], 70, seed=0)
    assert len(sub) == 70 and sum(labels[i] == 1 for i in sub) == 7


def test_scores_macro_f1_weights_rare_class():
    s = finetune.scores([0, 0, 0, 0, 1], [0, 0, 0, 0, 0], ["a", "b"])
    assert s["accuracy"] == pytest.approx(0.8)
    assert s["macro_f1"] == pytest.approx((8 / 9) / 2)
    assert s["confusion"].tolist() == [[4, 0], [1, 0]]
