"""Exercises for chapter 01 (architecture): mask, attention, heads, layer norm, block, parameters."""
from __future__ import annotations

import torch

from .. import mathx, model
from .core import FunctionProblem


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ref_causal_mask(T):
    return mathx.causal_mask(T)


class CausalMask(FunctionProblem):
    """causal_mask(T) -> bool tensor (T, T), True where query i may attend to key j (j <= i)."""
    name = "causal_mask"
    reference = staticmethod(_ref_causal_mask)
    uses = (mathx.causal_mask,)
    hints = ["Which keys may the token at position i look at? Itself and everything before it.",
             "torch.tril keeps the lower triangle (diagonal included) of a matrix.",
             "torch.ones(T, T, dtype=torch.bool).tril()"]

    def cases(self):
        return [(1,), (4,), (7,)]


def _ref_attention(q, k, v, mask=None):
    return mathx.attention(q, k, v, mask=mask)[0]


class ScaledDotProductAttention(FunctionProblem):
    """attention(q, k, v, mask=None) -> softmax(q k^T / sqrt(d_k), masked) v."""
    name = "attention"
    reference = staticmethod(_ref_attention)
    uses = (mathx.attention,)
    hints = ["scores = q @ k.transpose(-2, -1) has shape (..., T, S).",
             "Divide by math.sqrt(d_k) where d_k = q.size(-1); put -inf where mask is False "
             "(scores.masked_fill(~mask, float('-inf'))) before the softmax over the last axis.",
             "The result is softmax(scores, dim=-1) @ v."]

    def cases(self):
        g = _gen(1)
        q, k, v = (torch.randn(2, 5, 8, generator=g) for _ in range(3))
        q4, k4, v4 = (torch.randn(1, 2, 3, 4, generator=g) for _ in range(3))
        return [(q, k, v, None), (q, k, v, mathx.causal_mask(5)), (q4, k4, v4, mathx.causal_mask(3))]


def _ref_split_heads(x, n_head):
    return mathx.split_heads(x, n_head)


class SplitHeads(FunctionProblem):
    """split_heads(x, n_head): (B, T, C) -> (B, n_head, T, C // n_head), as CausalSelfAttention."""
    name = "split_heads"
    reference = staticmethod(_ref_split_heads)
    uses = (mathx.split_heads,)
    hints = ["First view the last axis as (n_head, head_size): x.view(B, T, n_head, C // n_head).",
             "Then swap the T and head axes with .transpose(1, 2)."]

    def cases(self):
        g = _gen(2)
        return [(torch.randn(2, 3, 8, generator=g), 2), (torch.randn(1, 4, 12, generator=g), 3),
                (torch.randn(1, 2, 6, generator=g), 1)]


def _ref_layer_norm(x, weight, bias, eps=1e-5):
    ln = model.LayerNorm(x.size(-1), bias=True, eps=eps)
    with torch.no_grad():
        ln.weight.copy_(weight)
        ln.bias.copy_(bias)
        return ln(x)


class LayerNormFromDefinition(FunctionProblem):
    """layer_norm(x, weight, bias, eps=1e-5): normalise over the last axis, then scale and shift."""
    name = "layer_norm"
    reference = staticmethod(_ref_layer_norm)
    uses = (model.LayerNorm.forward,)
    hints = ["mean and variance over the last axis: x.mean(-1, keepdim=True), "
             "x.var(-1, keepdim=True, unbiased=False).",
             "(x - mean) / sqrt(var + eps) * weight + bias. Note: the BIASED variance (divide by C)."]

    def cases(self):
        g = _gen(3)
        return [(torch.randn(2, 3, 8, generator=g) * 3 + 1, torch.randn(8, generator=g),
                 torch.randn(8, generator=g), 1e-5),
                (torch.randn(4, 5, generator=g), torch.ones(5), torch.zeros(5), 1e-5),
                (torch.randn(1, 6, generator=g) * 1e-3, torch.ones(6), torch.zeros(6), 1e-2)]


def _tiny_block(seed):
    torch.manual_seed(seed)
    cfg = model.GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16, flash=False)
    return model.Block(cfg).eval()


def _ref_block_forward(x, ln_1, attn, ln_2, mlp):
    x = x + attn(ln_1(x))
    return x + mlp(ln_2(x))


class BlockForward(FunctionProblem):
    """block_forward(x, ln_1, attn, ln_2, mlp): the pre-LayerNorm GPT block with two residuals."""
    name = "block_forward"
    reference = staticmethod(_ref_block_forward)
    uses = (model.Block.forward,)
    hints = ["GPT-2 normalises BEFORE each sub-layer (pre-LN), and adds the sub-layer's output "
             "back to its input (the residual).",
             "x = x + attn(ln_1(x)); then x = x + mlp(ln_2(x))."]

    def cases(self):
        out = []
        for seed in (0, 1):
            blk = _tiny_block(seed)
            x = torch.randn(2, 5, 16, generator=_gen(10 + seed))
            out.append((x, blk.ln_1, lambda h, blk=blk: blk.attn(h)[0], blk.ln_2, blk.mlp))
        return out

    def expected(self, x, ln_1, attn, ln_2, mlp):
        with torch.no_grad():
            return _ref_block_forward(x, ln_1, attn, ln_2, mlp)

    def verify(self, fn):
        with torch.no_grad():
            super().verify(fn)


def _ref_count_params(vocab_size, block_size, n_layer, n_head, n_embd):
    cfg = model.GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                          n_head=n_head, n_embd=n_embd)
    return model.count_params(cfg)


class CountParams(FunctionProblem):
    """count_params(vocab_size, block_size, n_layer, n_head, n_embd) -> int, GPT-2 layout, tied head."""
    name = "count_params"
    reference = staticmethod(_ref_count_params)
    uses = (model.count_params,)
    hints = ["Embeddings: wte is V x C, wpe is block_size x C; the LM head shares wte's weight.",
             "Per layer: two LayerNorms (weight + bias = 2C each), c_attn C x 3C + 3C, "
             "attn c_proj C x C + C, c_fc C x 4C + 4C, mlp c_proj 4C x C + C.",
             "Do not forget the final LayerNorm ln_f (2C). n_head does not change the count."]

    def cases(self):
        return [(64, 16, 2, 2, 32), (50257, 1024, 12, 12, 768), (40478, 512, 12, 12, 768),
                (100, 8, 3, 4, 8)]


PROBLEMS = [CausalMask, ScaledDotProductAttention, SplitHeads, LayerNormFromDefinition,
            BlockForward, CountParams]


def problems():
    """q1, q2, ... for the exercise notebook."""
    return [cls() for cls in PROBLEMS]


# Known-wrong answers used by the tests (each must be reported as incorrect).
WRONG = {
    "causal_mask": lambda T: torch.ones(T, T, dtype=torch.bool).triu(),
    "attention": lambda q, k, v, mask=None: torch.softmax(q @ k.transpose(-2, -1), -1) @ v,
    "split_heads": lambda x, n_head: x.view(x.size(0), n_head, x.size(1), -1),
    "layer_norm": lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True))
    / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b,
    "block_forward": lambda x, ln_1, attn, ln_2, mlp: mlp(ln_2(attn(ln_1(x)))),
    "count_params": lambda V, T, L, nh, C: V * C + T * C + L * 12 * C * C,
}
