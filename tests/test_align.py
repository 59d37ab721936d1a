import copy
import math

import pytest
import torch
import torch.nn.functional as F

from gptbook.finetune import align
from gptbook.model import GPT, IGNORE_INDEX


class _Tok:
    """A character tokenizer with the book's special ids (eos 0, pad 1), enough for these tests."""

    def encode(self, s):
        return type("E", (), {"ids": [2 + (ord(c) % 60) for c in s]})()

    def token_to_id(self, s):
        return {"<|endoftext|>": 0, "<|pad|>": 1}[s]


def _examples(block_size=40):
    tok = _Tok()
    pairs = [("hi", "hello there"), ("2+2?", "four"), ("name?", "gpt"), ("sky?", "blue")]
    return [align.encode_pair(tok, p, r, block_size) for p, r in pairs]


def test_encode_pair_masks_the_prompt():
    tok = _Tok()
    ids, labels = align.encode_pair(tok, "hi", "yo", block_size=64)
    n_prompt = len(tok.encode(align.format_prompt("hi")).ids)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == 0  # response + eos are counted
    ids2, labels2 = align.encode_pair(tok, "hi", "yo", block_size=64, mask_prompt=False)
    assert ids2 == ids and labels2 == ids


def test_masked_loss_ignores_prompt_tokens(tiny_config):
    cfg = tiny_config.replace(block_size=64)
    model = GPT(cfg).eval()
    x, y = align.collate(_examples(block_size=63), pad_id=1)
    loss = model(x, y).loss
    # the loss is CE over the response positions only
    logits = model(x).logits
    keep = y != IGNORE_INDEX
    ref = F.cross_entropy(logits[keep], y[keep])
    torch.testing.assert_close(loss, ref)
    # no gradient reaches the logits at prompt (and padding) positions
    store = {}

    def keep_grad(module, inputs, out):
        out.retain_grad()
        store["out"] = out

    h = model.lm_head.register_forward_hook(keep_grad)
    model(x, y).loss.backward()
    h.remove()
    g = store["out"].grad.abs().sum(-1)                    # (B, T)
    assert torch.all(g[~keep] == 0) and torch.all(g[keep] > 0)
    # but turning prompt labels on (mask_prompt=False) does change it
    full = [align.encode_pair(_Tok(), p, r, 63, mask_prompt=False)
            for p, r in [("hi", "hello there"), ("2+2?", "four"), ("name?", "gpt"), ("sky?", "blue")]]
    xf, yf = align.collate(full, pad_id=1)
    assert torch.equal(xf, x)
    assert not torch.allclose(model(xf, yf).loss, loss)


def test_collate_pads_right_and_shifts():
    ex = [([5, 6, 7, 0], [-100, 6, 7, 0]), ([8, 9], [-100, 9])]
    x, y = align.collate(ex, pad_id=1)
    assert x.tolist() == [[5, 6, 7], [8, 1, 1]]
    assert y.tolist() == [[6, 7, 0], [9, -100, -100]]


def test_dpo_loss_is_log2_when_policy_equals_reference(tiny_config):
    cfg = tiny_config.replace(block_size=64)
    model = GPT(cfg)
    ref = copy.deepcopy(model)
    tok = _Tok()
    enc = align.encode_preferences(tok, [("hi", "hello", "four"), ("sky?", "blue", "gpt")], 63)
    x, y = align.preference_batch_fn(enc, 2, 1, torch.Generator().manual_seed(0))()
    loss = align.dpo_loss_fn(ref, beta=0.5)(model, x, y)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)
    m = align.preference_metrics(model, ref, enc, pad_id=1)
    assert math.isclose(m["dpo_loss"], math.log(2), rel_tol=1e-6) and m["reward_margin"] == 0.0


def test_preference_logprobs_and_the_margin_dpo_moves(tiny_config):
    """logprob_margin is the model's own preference; against a reference equal to the starting model,
    DPO's reward margin is beta times its change."""
    cfg = tiny_config.replace(block_size=64)
    model = GPT(cfg)
    start = copy.deepcopy(model).eval()
    enc = align.encode_preferences(_Tok(), [("hi", "hello", "olleh"), ("sky?", "blue sky", "sky blue"),
                                            ("name?", "gpt", "tpg")], 63)
    w, l = align.preference_logprobs(model, enc, pad_id=1, batch_size=2)
    assert w.shape == l.shape == (3,) and (w < 0).all()
    x, y = align.collate([e[0] for e in enc], 1)
    torch.testing.assert_close(w, align.sequence_logprob(model.eval(), x, y))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    m = align.preference_metrics(model, start, enc, pad_id=1, beta=0.2)
    w1, l1 = align.preference_logprobs(model, enc, pad_id=1)
    assert math.isclose(m["logprob_margin"], (w1 - l1).mean().item(), rel_tol=1e-5)
    assert math.isclose(m["reward_margin"], 0.2 * ((w1 - l1) - (w - l)).mean().item(), rel_tol=1e-4, abs_tol=1e-6)
    assert m["logprob_prefers_chosen"] == (w1 > l1).float().mean().item()


def test_dpo_loss_formula():
    pw, pl, rw, rl = (torch.tensor([v]) for v in (-1.0, -3.0, -2.0, -2.5))
    loss, a, b = align.dpo_loss(pw, pl, rw, rl, beta=0.2)
    expected = -math.log(1 / (1 + math.exp(-0.2 * ((-1 + 2) - (-3 + 2.5)))))
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert math.isclose((a - b).item(), 0.2 * 1.5, rel_tol=1e-6)


def test_sequence_logprob_counts_only_labelled_positions(tiny_config):
    model = GPT(tiny_config).eval()
    x = torch.randint(2, tiny_config.vocab_size, (2, 6))
    y = torch.full_like(x, IGNORE_INDEX)
    y[:, 3:] = x[:, 3:]
    lp = align.sequence_logprob(model, x, y)
    logp = model(x).logits.log_softmax(-1)
    ref = logp[:, 3:].gather(-1, x[:, 3:, None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(lp, ref)


@pytest.mark.slow
def test_dpo_steps_increase_the_margin(tiny_config):
    cfg = tiny_config.replace(block_size=64)
    torch.manual_seed(0)
    model = GPT(cfg)
    ref = copy.deepcopy(model).eval()
    enc = align.encode_preferences(_Tok(), [("hi", "hello", "four"), ("sky?", "blue", "gpt"),
                                            ("name?", "gpt", "hello there")], 63)
    before = align.preference_metrics(model, ref, enc, pad_id=1)
    x, y = align.preference_batch_fn(enc, 3, 1, torch.Generator().manual_seed(0))()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = align.dpo_loss_fn(ref, beta=0.1)
    model.train()
    for _ in range(15):
        loss_fn(model, x, y).backward()
        opt.step()
        opt.zero_grad()
    after = align.preference_metrics(model, ref, enc, pad_id=1)
    assert after["reward_margin"] > before["reward_margin"] + 1e-3
    assert after["dpo_loss"] < before["dpo_loss"]


def test_split_and_preference_pairs():
    pairs = [(f"q{i % 7}", f"a{i}", "t" + str(i % 3)) for i in range(30)]
    tr, va = align.split_pairs(pairs, 0.3, seed=1)
    assert len(tr) + len(va) == 30 and not {p[0] for p in tr} & {p[0] for p in va}
    prefs = align.preference_pairs(pairs, seed=0)
    topic = {a: t for _, a, t in pairs}
    assert all(w != l and topic[w] != topic[l] for _, w, l in prefs)
    shuf = align.preference_pairs([("q", "one two three", "t"), ("p", "yes", "t")], rejected="shuffled")
    assert sorted(shuf[0][2].split()) == ["one", "three", "two"] and shuf[0][2] != "one two three"
    assert shuf[1][2] == "sey"
    with pytest.raises(ValueError):
        align.preference_pairs(pairs, rejected="random")


def test_batch_fn_rejects_empty():
    with pytest.raises(ValueError):
        align.batch_fn([], 2, 1, torch.Generator())
