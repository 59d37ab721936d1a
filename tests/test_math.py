import math

import pytest
import torch
import torch.nn.functional as F

from gptbook import mathx
from gptbook.model import GPT


def test_softmax_matches_torch_and_is_invariant_to_a_constant():
    x = torch.randn(4, 10) * 5
    torch.testing.assert_close(mathx.softmax(x), F.softmax(x, dim=-1))
    torch.testing.assert_close(mathx.softmax(x + 123.0), mathx.softmax(x))
    # temperature divides the logits
    torch.testing.assert_close(mathx.softmax(x, temperature=2.0), F.softmax(x / 2.0, dim=-1))


def test_softmax_is_stable_where_the_naive_one_overflows():
    x = torch.tensor([1000.0, 999.0, 0.0])
    naive = x.exp() / x.exp().sum()
    assert torch.isnan(naive).any()
    p = mathx.softmax(x)
    assert torch.isfinite(p).all() and abs(p.sum().item() - 1) < 1e-6
    assert p[0] > p[1] > p[2]


def test_softmax_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        mathx.softmax(torch.zeros(3), temperature=0.0)


def test_cross_entropy_from_definition_matches_torch():
    logits, targets = torch.randn(20, 7), torch.randint(7, (20,))
    targets[3] = -100
    torch.testing.assert_close(mathx.cross_entropy(logits, targets),
                               F.cross_entropy(logits, targets, ignore_index=-100))
    with pytest.raises(ValueError, match="flatten"):
        mathx.cross_entropy(logits[None], targets[None])


def test_perplexity_is_exp_cross_entropy_and_uniform_is_V():
    logits, targets = torch.randn(2, 5, 11), torch.randint(11, (2, 5))
    ce = F.cross_entropy(logits.view(-1, 11), targets.view(-1))
    torch.testing.assert_close(mathx.perplexity(logits, targets), ce.exp())
    V = 37
    uniform = torch.zeros(3, 8, V)
    assert mathx.perplexity(uniform, torch.randint(V, (3, 8))).item() == pytest.approx(V, rel=1e-5)


def test_sequence_logprob_equals_token_by_token_sum(tiny_config):
    model = GPT(tiny_config).eval()
    idx = torch.randint(tiny_config.vocab_size, (2, 9))
    stepwise = torch.zeros(2)
    with torch.no_grad():
        for t in range(1, idx.size(1)):
            logits = model(idx[:, :t]).logits[:, -1]           # sees x_<t only
            stepwise += F.log_softmax(logits, -1).gather(-1, idx[:, t:t + 1]).squeeze(-1)
    torch.testing.assert_close(mathx.sequence_logprob(model, idx), stepwise, atol=1e-5, rtol=1e-5)
    # and minus the mean token log-prob is the model's own loss
    loss = model(idx[:, :-1], idx[:, 1:]).loss
    torch.testing.assert_close(-mathx.token_logprobs(model, idx).mean(), loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_sdpa(causal):
    q, k, v = torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 5)
    y, att = mathx.attention(q, k, v, causal=causal)
    torch.testing.assert_close(y, F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 3, 6))
    if causal:
        assert (att.triu(1) == 0).all()


def test_multi_head_is_a_reshape_of_the_models_attention(tiny_config):
    model = GPT(tiny_config).eval()
    attn = model.transformer.h[0].attn
    x = torch.randn(2, 7, tiny_config.n_embd)
    q, k, v = attn.c_attn(x).split(tiny_config.n_embd, dim=2)
    heads = [mathx.split_heads(t, tiny_config.n_head) for t in (q, k, v)]
    y, _ = mathx.attention(*heads, causal=True)
    with torch.no_grad():
        ours = attn.c_proj(mathx.merge_heads(y))
        torch.testing.assert_close(ours, attn(x)[0], atol=1e-5, rtol=1e-5)


def test_scale_keeps_score_variance_near_one():
    g = torch.Generator().manual_seed(0)
    big = mathx.attention_stats(256, scaled=False, generator=g)
    ok = mathx.attention_stats(256, scaled=True, generator=g)
    assert 200 < big["var_scores"] < 320 and 0.8 < ok["var_scores"] < 1.25
    assert ok["entropy_ratio"] > big["entropy_ratio"]
    assert ok["grad_norm"] > 10 * big["grad_norm"]  # the median row of the unscaled one is saturated


def test_layers_logits_with_causal_mask_equals_forward(tiny_config):
    for flash in (True, False):
        model = GPT(tiny_config.replace(flash=flash)).eval()
        idx = torch.randint(tiny_config.vocab_size, (2, 10))
        with torch.no_grad():
            torch.testing.assert_close(mathx.layers_logits(model, idx, mathx.causal_mask(10)),
                                       model(idx).logits, atol=1e-5, rtol=1e-5)
            full = mathx.layers_logits(model, idx, torch.ones(10, 10, dtype=torch.bool))
            # bidirectional: changing the LAST token changes the FIRST position's logits
            idx2 = idx.clone()
            idx2[:, -1] = (idx2[:, -1] + 1) % tiny_config.vocab_size
            full2 = mathx.layers_logits(model, idx2, torch.ones(10, 10, dtype=torch.bool))
            assert not torch.allclose(full[:, 0], full2[:, 0])
            causal2 = model(idx2).logits
            torch.testing.assert_close(causal2[:, 0], model(idx).logits[:, 0])
    with pytest.raises(ValueError, match="bool"):
        mathx.layers_logits(model, idx, torch.ones(10, 10))


def test_mlm_corrupt_follows_bert():
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(2, 50, (64, 128))
    inputs, targets = mathx.mlm_corrupt(idx, mask_id=50, vocab_size=50, generator=g)
    chosen = targets != -100
    assert 0.13 < chosen.float().mean() < 0.17
    assert (targets[chosen] == idx[chosen]).all()
    assert (inputs[~chosen] == idx[~chosen]).all()
    masked = (inputs[chosen] == 50).float().mean().item()
    assert 0.77 < masked < 0.83


def test_entropy_of_uniform_is_log_n():
    assert mathx.entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(math.log(8))
    assert mathx.entropy(torch.tensor([1.0, 0.0])).item() == 0.0


def test_sequence_logprob_with_targets_is_the_labelled_sum_with_gradients(tiny_config):
    """One implementation for chapter 02 (log p of a sequence) and DPO (log p of the labelled part)."""
    from gptbook.model import GPT, IGNORE_INDEX
    torch.manual_seed(0)
    model = GPT(tiny_config).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 7))
    whole = mathx.sequence_logprob(model, idx)                             # (B,), no gradients
    assert not whole.requires_grad
    labelled = mathx.sequence_logprob(model, idx[:, :-1], idx[:, 1:])
    torch.testing.assert_close(labelled, whole, rtol=1e-5, atol=1e-5)
    targets = idx[:, 1:].clone()
    targets[:, :3] = IGNORE_INDEX                                          # a prompt: not counted
    part = mathx.sequence_logprob(model, idx[:, :-1], targets)
    torch.testing.assert_close(part, mathx.token_logprobs(model, idx)[:, 3:].sum(-1), rtol=1e-5, atol=1e-5)
    part.sum().backward()
    assert model.transformer.wte.weight.grad is not None
