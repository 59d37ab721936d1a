"""Errata about the architecture and the math (chapters 01 and 02), each demonstrated by code.

Registered into `gptbook.errata.REGISTRY` when gptbook.errata imports this module.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .helpers import error_of, seeded, small, tiny_forward, tiny_gpt
from .registry import erratum
from ..model import PUBLISHED, GPTConfig, count_params


def _fmt(n: float) -> str:
    """Parameter count in words: 116.5M, 174.6B."""
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


@erratum("E1")
def _e1():
    from .helpers import gpt2_tok
    with seeded(0):
        m = tiny_gpt()
        x = torch.randint(2, 64, (1, 10))
        y = x.clone()
        y[0, 7] = (y[0, 7] + 1) % 64                      # change one LATER token
        with torch.no_grad():
            a, b = m(x).logits, m(y).logits
    before = (a[0, :7] - b[0, :7]).abs().max().item()   # positions 0..6 cannot see token 7
    after = (a[0, 7:] - b[0, 7:]).abs().max().item()
    assert before == 0.0 and after > 0, (before, after)
    tok = gpt2_tok()
    assert tok.mask_token is None
    return (f"changing token 7 changes logits at positions 0-6 by {before:.1f} (causal: no right "
            f"context to fill a [MASK] from) and at 7-9 by {after:.3f}; GPT-2's tokenizer has no "
            f"mask token (mask_token={tok.mask_token})")


@erratum("E2")
def _e2():
    import pkgutil

    import transformers.models
    from transformers import GPT2Model
    from .helpers import tiny_hf_config

    def by_hand(h, w_qkv, b_qkv, w_out, b_out):
        # softmax(QK^T / sqrt(d_k) + causal mask) V, heads re-assembled, output projection: nothing else
        q, k, v = (h @ w_qkv + b_qkv).split(16, dim=2)
        q, k, v = (t.view(1, 6, 2, 8).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(torch.ones(6, 6).triu(1).bool(), float("-inf"))
        return (F.softmax(s, -1) @ v).transpose(1, 2).reshape(1, 6, 16) @ w_out + b_out

    with seeded(0):
        hf = GPT2Model(tiny_hf_config()).eval()
        m = tiny_gpt(n_layer=1)
        x = torch.randn(1, 6, 16)
        ids = torch.randint(0, 64, (1, 6))
    seen = {}
    hook = hf.h[0].attn.register_forward_hook(
        lambda mod, args, kwargs, out: seen.update(h=args[0] if args else kwargs["hidden_states"], y=out[0]),
        with_kwargs=True)
    with torch.no_grad():
        hf(ids)                                         # GPT-2's own first attention layer, inside the model
        hook.remove()
        a = hf.h[0].attn                                # Conv1D stores W as (in, out): h @ W + b
        ref_hf = by_hand(seen["h"], a.c_attn.weight, a.c_attn.bias, a.c_proj.weight, a.c_proj.bias)
        diff_hf = (seen["y"] - ref_hf).abs().max().item()
        b = m.transformer.h[0].attn                     # nn.Linear stores W as (out, in)
        ref_book = by_hand(x, b.c_attn.weight.T, b.c_attn.bias, b.c_proj.weight.T, b.c_proj.bias)
        diff_book = (b(x)[0] - ref_book).abs().max().item()
    archs = [m.name for m in pkgutil.iter_modules(transformers.models.__path__)]
    dca = [n for n in archs if "dca" in n or "chain" in n]
    assert diff_hf < 1e-5 and diff_book < 1e-5 and not dca
    return (f"Hugging Face's GPT-2 attention layer, run inside the model, equals softmax(QK^T/sqrt(d_k) + "
            f"causal mask)V written by hand (max diff {small(diff_hf)}), and so does the book GPT's "
            f"({small(diff_book)}): no extra mechanism; none of transformers' {len(archs)} architectures "
            f"is a DCA ({dca})")


@erratum("E3")
def _e3():
    m, x, out = tiny_forward((1, 8))
    logits = out.logits[0]                                  # (T, V)
    ref = out.hidden_states[0] @ m.transformer.wte.weight.T  # h_t W_E^T
    M = 3
    recur = torch.stack([logits[i - M:i].sum(0) for i in range(M, 8)])  # scores_{i-1}+...+scores_{i-M}
    ok = (logits - ref).abs().max().item()
    bad = (logits[M:] - recur).abs().max().item()
    assert ok < 1e-5 and bad > 0.05
    return (f"logits == h_t W_E^T (max diff {small(ok)}); the document's recurrence with M={M} misses "
            f"the real logits by up to {bad:.2f}")


@erratum("E8")
def _e8():
    gpt3 = count_params(PUBLISHED["GPT-3 175B"])
    gpt3_6b7 = count_params(GPTConfig(vocab_size=50257, block_size=2048, n_layer=32, n_head=32,
                                      n_embd=4096))  # GPT-3 paper, table 2.1, "GPT-3 6.7B"
    assert 170e9 < gpt3 < 180e9 and 6.5e9 < gpt3_6b7 < 6.9e9 and gpt3_6b7 < gpt3
    return (f"GPT-3 computed from its configuration: {_fmt(gpt3)} (1750亿, not 1750B); the 6.7B model "
            f"of the GPT-3 paper: {_fmt(gpt3_6b7)}, {gpt3 / gpt3_6b7:.0f}x smaller than GPT-3")


@erratum("E10")
def _e10():
    n = count_params(PUBLISHED["GPT-1"])
    xl = count_params(PUBLISHED["GPT-2 XL"])
    assert n < 0.2e9 and xl > 1e9
    return (f"GPT-1 computed from its configuration: {_fmt(n)} parameters, {1e9 / n:.1f}x fewer than "
            f"10亿 (1B); GPT-2 XL: {_fmt(xl)}")


@erratum("E13")
def _e13():
    from transformers import GPT2LMHeadModel

    from ..hf import from_hf
    from ..model import count_params
    from .helpers import tiny_hf_config
    with seeded(0):
        hf = GPT2LMHeadModel(tiny_hf_config(n_layer=2))
    names = [n for n, _ in hf.named_modules()]
    enc = [n for n in names if "encoder" in n or "cross" in n]
    # the experiment: count GPT-2's parameters, and count what a decoder-only stack needs (embeddings,
    # n_layer x (attention + MLP + 2 LayerNorms), final LayerNorm). An encoder, or a cross-attention
    # reading one, would be weights beyond the second count.
    have = sum(p.numel() for p in hf.parameters())
    decoder_only = count_params(from_hf(hf).config)
    block = [n for n, _ in hf.transformer.h[0].named_children()]
    assert have == decoder_only and not enc and not hf.config.is_encoder_decoder
    return (f"GPT-2 (2 layers) has {have:,} parameters, exactly the {decoder_only:,} of embeddings + blocks "
            f"{block} + final norm: no weight is left for an encoder or a cross-attention; modules named "
            f"encoder/cross: {enc}; GPT2Config.is_encoder_decoder={hf.config.is_encoder_decoder}")


@erratum("E14")
def _e14():
    n, d_model, d_k = 5, 16, 8
    with seeded(0):
        X = torch.randn(n, d_model)
        W_doc = torch.randn(n, d_k)                  # "∈ R^{n x d_v}"
        shape_err = error_of(lambda: X @ W_doc)
        Wq, Wk, Wv = (0.25 * torch.randn(d_model, d_k) for _ in range(3))
        X2 = X.clone()
        X2[-1] += 1.0                                # change only the LAST token

        def attend(X, causal):
            q, k, v = ((X @ W)[None, None] for W in (Wq, Wk, Wv))
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)[0, 0]
        leak = (attend(X, False)[0] - attend(X2, False)[0]).abs().max().item()
        masked = (attend(X, True)[0] - attend(X2, True)[0]).abs().max().item()
    assert leak > 1e-3 and masked < 1e-6
    return (f"X (n={n}, d_model={d_model}) @ W in R^(n x d_v): {shape_err}; without the causal mask "
            f"changing the last token changes position 0's output by {leak:.3f} (sees the future), "
            f"with it by {small(masked, 1e-6)}")


@erratum("E16")
def _e16():
    with torch.no_grad(), seeded(1):
        m, x, out = tiny_forward((1, 6))
        h = out.hidden_states[0]                            # (n, C): h_1..h_n
        W = m.lm_head.weight.T                              # (C, V)
        p = F.softmax(h[-1] @ W, dim=-1)                    # correct: over the vocabulary
        num = torch.exp(h[-1] @ W)                          # (V,)
        doc = num / torch.exp(h @ W).sum(0)                 # document: denominator over positions j
        # h_{n+1} = sum_k alpha_k h_k with alpha depending on h_{n+1}: two guesses, two answers
        a1 = F.softmax(h @ h[-1], 0) @ h
        a2 = F.softmax(h @ torch.randn(16), 0) @ h
    ok = (p - F.softmax(out.logits[0, -1], -1)).abs().max().item()
    checks = {"p sums to 1": abs(p.sum().item() - 1) < 1e-5, "p is the model's": ok < 1e-5,
              "the document's p does not sum to 1": abs(doc.sum().item() - 1) > 0.1,
              "its h_(n+1) depends on the guess": (a1 - a2).abs().max().item() > 1e-3}
    assert all(checks.values()), checks
    return "; ".join([
        f"softmax over the vocabulary sums to {p.sum().item():.3f} and matches the model (max diff {small(ok)})",
        f"the document's fraction summed over the vocabulary gives {doc.sum().item():.2f}",
        "its self-referential h_(n+1) changes with the guess used for h_(n+1)",
    ])


@erratum("E40")
def _e40():
    with seeded(0):
        attn = tiny_gpt(n_layer=1).transformer.h[0].attn
        x = torch.randn(1, 6, 16)

        def weights():
            q, k, _ = attn.c_attn(x).split(16, dim=2)
            q, k = (t.view(1, 6, 2, 8).transpose(1, 2) for t in (q, k))
            future = torch.ones(6, 6).triu(1).bool()
            s = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(future, float("-inf"))
            return F.softmax(s, dim=-1), attn(x)[0]
        with torch.no_grad():
            A1, y1 = weights()
            attn.c_attn.weight[32:].normal_()          # new W^V (rows 2C..3C of c_attn)
            A2, y2 = weights()
            attn.c_attn.weight[:16].normal_()          # new W^Q
            A3, _ = weights()
    dv, dy, dq = ((A1 - A2).abs().max().item(), (y1 - y2).abs().max().item(), (A1 - A3).abs().max().item())
    assert dv == 0.0 and dy > 1e-3 and dq > 1e-3
    return (f"replacing W^V changes the attention weights by {dv:.1f} (the output by {dy:.3f}); replacing "
            f"W^Q changes the weights by {dq:.3f}")


@erratum("E41")
def _e41():
    import torch.nn as nn
    with seeded(0):
        x = 3 + 5 * torch.randn(4, 16)
        ln, drop = nn.LayerNorm(16), nn.Dropout(0.1)
        y_train = ln.train()(x)
        y_eval = ln.eval()(x)
        d_train = drop.train()(x)
    mean, std = y_eval.mean(-1).abs().max().item(), y_eval.std(-1, unbiased=False).mean().item()
    # what a normalisation does and a regulariser would not: the output ignores the input's scale and offset
    with torch.no_grad():
        moved = (ln(7.0 * x + 2.0) - y_eval).abs().max().item()
    assert torch.equal(y_train, y_eval) and not torch.equal(d_train, drop.eval()(x)) and mean < 1e-5
    assert moved < 1e-4
    return (f"LayerNorm output is identical in train and eval mode (dropout's is not: no noise); each row has "
            f"mean {small(mean)} and std {std:.3f}; LN(7x + 2) = LN(x) (max diff {small(moved, 1e-4)}): "
            f"it rescales, it does not penalise")
