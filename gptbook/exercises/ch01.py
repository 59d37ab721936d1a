"""Exercises for chapter 01 (architecture): mask, attention, heads, layer norm, block, parameters."""
from __future__ import annotations

import torch

from .. import mathx, model
from .core import function_problem, gen, problems_of, seeded


@function_problem("causal_mask", reference=mathx.causal_mask)
def causal_mask_cases():
    return [(1,), (4,), (7,)]


def _ref_attention(q, k, v, mask=None):
    return mathx.attention(q, k, v, mask=mask)[0]     # (output, weights): the output only


@function_problem("attention", reference=_ref_attention, uses=(mathx.attention,))
def attention_cases():
    g = gen(1)
    q, k, v = (torch.randn(2, 5, 8, generator=g) for _ in range(3))
    q4, k4, v4 = (torch.randn(1, 2, 3, 4, generator=g) for _ in range(3))
    return [(q, k, v, None), (q, k, v, mathx.causal_mask(5)), (q4, k4, v4, mathx.causal_mask(3))]


@function_problem("split_heads", reference=mathx.split_heads)
def split_heads_cases():
    g = gen(2)
    return [(torch.randn(2, 3, 8, generator=g), 2), (torch.randn(1, 4, 12, generator=g), 3),
            (torch.randn(1, 2, 6, generator=g), 1)]


def _ref_layer_norm(x, weight, bias, eps=1e-5):
    ln = model.LayerNorm(x.size(-1), bias=True, eps=eps)
    with torch.no_grad():
        ln.weight.copy_(weight)
        ln.bias.copy_(bias)
        return ln(x)


@function_problem("layer_norm", reference=_ref_layer_norm, uses=(model.LayerNorm.forward,))
def layer_norm_cases():
    g = gen(3)
    return [(torch.randn(2, 3, 8, generator=g) * 3 + 1, torch.randn(8, generator=g),
             torch.randn(8, generator=g), 1e-5),
            (torch.randn(4, 5, generator=g), torch.ones(5), torch.zeros(5), 1e-5),
            (torch.randn(1, 6, generator=g) * 1e-3, torch.ones(6), torch.zeros(6), 1e-2)]


def _ref_block_forward(x, ln_1, attn, ln_2, mlp):
    x = x + attn(ln_1(x))
    return x + mlp(ln_2(x))


@function_problem("block_forward", reference=_ref_block_forward, uses=(model.Block.forward,),
                  no_grad=True)
def block_forward_cases():
    out = []
    for seed in (0, 1):
        with seeded(seed):
            blk = model.Block(model.GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16,
                                              flash=False)).eval()
        x = torch.randn(2, 5, 16, generator=gen(10 + seed))
        out.append((x, blk.ln_1, lambda h, blk=blk: blk.attn(h)[0], blk.ln_2, blk.mlp))
    return out


def _ref_count_params(vocab_size, block_size, n_layer, n_head, n_embd):
    return model.count_params(model.GPTConfig(vocab_size=vocab_size, block_size=block_size,
                                              n_layer=n_layer, n_head=n_head, n_embd=n_embd))


@function_problem("count_params", reference=_ref_count_params, uses=(model.count_params,))
def count_params_cases():
    return [(64, 16, 2, 2, 32), (50257, 1024, 12, 12, 768), (40478, 512, 12, 12, 768), (100, 8, 3, 4, 8)]


PROBLEMS = [causal_mask_cases, attention_cases, split_heads_cases, layer_norm_cases,
            block_forward_cases, count_params_cases]


def problems():
    """q1, q2, ... for the exercise notebook."""
    return problems_of(PROBLEMS)
