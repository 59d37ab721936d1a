"""Errata about the architecture and the math (chapters 01 and 02), each demonstrated by code.

Registered into `gptbook.errata.REGISTRY` on import (gptbook.errata imports this module).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errata import erratum, error_of, seeded, small, tiny_gpt
from .model import PUBLISHED, GPTConfig, count_params


def _fmt(n: float) -> str:
    """Parameter count in words: 116.5M, 174.6B."""
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


@erratum("E1", "000", "§1.1, §1.2, §3.2.1", "02",
         "其核心创新在于使用了自回归语言模型和掩码语言模型（Masked Language Model, MLM）进行预训练",
         "GPT models (GPT-1 to GPT-4) are pre-trained with the causal next-token objective only; "
         "masked-LM is BERT's objective and needs bidirectional attention, which a GPT does not have.")
def _e1():
    from .errata import gpt2_tok
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


@erratum("E2", "000", "§1.1", "01",
         "引入了深度链式注意力机制（Deep Chain of Causal Attentions, DCA）来提高模型的表达能力和推理能力",
         "No published GPT model has a 'deep chain attention (DCA)' mechanism. GPT attention is "
         "ordinary multi-head causal self-attention: softmax(QK^T/sqrt(d_k) + causal mask) V, "
         "stacked once per block.")
def _e2():
    import pkgutil

    import transformers.models
    from transformers import GPT2Model
    from .errata import tiny_hf_config
    with seeded(0):
        hf = GPT2Model(tiny_hf_config())
        m = tiny_gpt(n_layer=1)
        x = torch.randn(1, 6, 16)
        attn = m.transformer.h[0].attn
        with torch.no_grad():
            y, _ = attn(x)
            q, k, v = attn.c_attn(x).split(16, dim=2)
            q, k, v = (t.view(1, 6, 2, 8).transpose(1, 2) for t in (q, k, v))
            s = q @ k.transpose(-2, -1) / math.sqrt(8)
            s = s.masked_fill(torch.ones(6, 6).triu(1).bool(), float("-inf"))
            ref = attn.c_proj((F.softmax(s, -1) @ v).transpose(1, 2).reshape(1, 6, 16))
    diff = (y - ref).abs().max().item()
    classes = sorted({type(mod).__name__ for mod in hf.modules() if "Attention" in type(mod).__name__})
    archs = [m.name for m in pkgutil.iter_modules(transformers.models.__path__)]
    dca = [n for n in archs if "dca" in n or "chain" in n]
    assert diff < 1e-5 and classes == ["GPT2Attention"] and not dca
    return (f"attention classes in GPT-2: {classes}; none of transformers' {len(archs)} "
            f"architectures is a DCA ({dca}); the book "
            f"GPT's attention equals softmax(QK^T/sqrt(d_k)+causal mask)V by hand (max diff {small(diff)})")


@erratum("E3", "000", "§4.2", "02",
         "其中，$\\text{scores}_i$ 为模型对输入文本 $x$ 中第 $i$ 个词的预测得分，计算公式为： $$ "
         "\\text{scores}_i = \\text{scores}_{i-1} + \\text{scores}_{i-2} + \\ldots + \\text{scores}_{i-M} $$",
         "Logits are not a running sum of earlier scores: the last hidden state h_t is multiplied by the "
         "(tied) embedding matrix, logits_t = h_t W_E^T, then softmax over the vocabulary. The document's "
         "'MLM formula' is a verbatim copy of its AR formula.")
def _e3():
    with seeded(0):
        m = tiny_gpt()
        x = torch.randint(0, 64, (1, 8))
        with torch.no_grad():
            out = m(x)
    logits = out.logits[0]                                  # (T, V)
    ref = out.hidden_states[0] @ m.transformer.wte.weight.T  # h_t W_E^T
    M = 3
    recur = torch.stack([logits[i - M:i].sum(0) for i in range(M, 8)])  # scores_{i-1}+...+scores_{i-M}
    ok = (logits - ref).abs().max().item()
    bad = (logits[M:] - recur).abs().max().item()
    assert ok < 1e-5 and bad > 0.05
    return (f"logits == h_t W_E^T (max diff {small(ok)}); the document's recurrence with M={M} misses "
            f"the real logits by up to {bad:.2f}")


@erratum("E8", "001", "§3.1", "01",
         "GPT-3.5的参数量约为6.7B,比GPT-3的1750B有所增加",
         "GPT-3 has 175B parameters (the document itself says 1750亿 = 175B in §2), not 1750B; 6.7B is "
         "the size of a smaller GPT-3 variant and 26x LESS than 175B; OpenAI has not published GPT-3.5's size.")
def _e8():
    gpt3 = count_params(PUBLISHED["GPT-3 175B"])
    gpt3_6b7 = count_params(GPTConfig(vocab_size=50257, block_size=2048, n_layer=32, n_head=32,
                                      n_embd=4096))  # GPT-3 paper, table 2.1, "GPT-3 6.7B"
    assert 170e9 < gpt3 < 180e9 and 6.5e9 < gpt3_6b7 < 6.9e9 and gpt3_6b7 < gpt3
    return (f"GPT-3 computed from its configuration: {_fmt(gpt3)} (1750亿, not 1750B); the 6.7B model "
            f"of the GPT-3 paper: {_fmt(gpt3_6b7)}, {gpt3 / gpt3_6b7:.0f}x smaller than GPT-3")


@erratum("E10", "002", "§1.1", "01",
         "GPT-1基于Transformer架构和自回归语言模型，在预训练阶段使用了超过10亿个参数",
         "GPT-1 (2018) has about 117M parameters (12 layers, d=768, 12 heads, 512 context, 40,478-token "
         "BPE vocabulary); the first OpenAI GPT past one billion was GPT-2 XL (2019; published as 1.5B, 1.56B counted here).")
def _e10():
    n = count_params(PUBLISHED["GPT-1"])
    xl = count_params(PUBLISHED["GPT-2 XL"])
    assert n < 0.2e9 and xl > 1e9
    return (f"GPT-1 computed from its configuration: {_fmt(n)} parameters, {1e9 / n:.1f}x fewer than "
            f"10亿 (1B); GPT-2 XL: {_fmt(xl)}")


@erratum("E13", "003", "§3.1, §4.1",  "01",
         "**Transformer架构**：由多个编码器和解码器组成，每个编码器和解码器都由多头自注意力和前馈神经网络构成。"
         " … **解码器输出**：将解码器输出与编码器输出拼接，通过多个解码器层进行解码",
         "GPT is decoder-only: a stack of identical blocks (masked self-attention + MLP), no encoder, "
         "no cross-attention and nothing concatenated from an encoder.")
def _e13():
    from transformers import GPT2LMHeadModel
    from .errata import tiny_hf_config
    with seeded(0):
        m = tiny_gpt()
        hf = GPT2LMHeadModel(tiny_hf_config(n_layer=2))
    top = [n for n, _ in m.transformer.named_children()]
    block = [n for n, _ in m.transformer.h[0].named_children()]
    names = [n for n, _ in list(m.named_modules()) + list(hf.named_modules())]
    enc = [n for n in names if "encoder" in n or "cross" in n]
    assert not enc and not hf.config.is_encoder_decoder
    return (f"book GPT transformer = {top}, each block = {block}; modules named encoder/cross "
            f"in the book GPT and HF GPT-2: {enc}; "
            f"GPT2Config.is_encoder_decoder={hf.config.is_encoder_decoder}")


@erratum("E14", "003", "§4.2", "01",
         "以GPT模型的多头自注意力机制为例，推导如下： $$ W^Q = W^V = W^K = "
         "\\mathbb{R}^{d_k \\times d_v} \\in \\mathbb{R}^{n \\times d_v} $$",
         "W^Q, W^K, W^V are three different learned matrices of shapes (d_model, d_k), (d_model, d_k) and "
         "(d_model, d_v), not equal and not n x d_v (n is the sequence length); and GPT attention adds a "
         "causal mask so position i cannot see j > i, which the formula omits.")
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


@erratum("E16", "004", "§4.2", "02",
         "$$ p(x_{n+1}|x_1, x_2, ..., x_n) = \\frac{\\exp(h_{n+1}W_{out})}{\\sum_{j=1}^{N}\\exp(h_jW_{out})} "
         "$$ 其中 $N$ 为词汇表大小。",
         "The next-token distribution is softmax over the VOCABULARY of the last position's logits: "
         "p(x_{n+1}=v | x_<=n) = exp(h_n W_out[:, v]) / sum_{u in vocab} exp(h_n W_out[:, u]); the document "
         "sums over positions j, and defines h_{n+1} through attention weights that need h_{n+1} itself.")
def _e16():
    with seeded(0):
        m = tiny_gpt()
        x = torch.randint(0, 64, (1, 6))
        with torch.no_grad():
            out = m(x)
        h = out.hidden_states[0]                            # (n, C): h_1..h_n
        W = m.lm_head.weight.T                              # (C, V)
        p = F.softmax(h[-1] @ W, dim=-1)                    # correct: over the vocabulary
        num = torch.exp(h[-1] @ W)                          # (V,)
        doc = num / torch.exp(h @ W).sum(0)                 # document: denominator over positions j
        # h_{n+1} = sum_k alpha_k h_k with alpha depending on h_{n+1}: two guesses, two answers
        a1 = F.softmax(h @ h[-1], 0) @ h
        a2 = F.softmax(h @ torch.randn(16), 0) @ h
    ok = (p - F.softmax(out.logits[0, -1], -1)).abs().max().item()
    assert abs(p.sum().item() - 1) < 1e-5 and ok < 1e-5
    assert abs(doc.sum().item() - 1) > 0.1 and (a1 - a2).abs().max().item() > 1e-3
    return (f"softmax over the vocabulary sums to {p.sum().item():.3f} and matches the model (max diff "
            f"{small(ok)}); the document's fraction summed over the vocabulary gives {doc.sum().item():.2f}; "
            f"its self-referential h_(n+1) changes with the guess used for h_(n+1)")


@erratum("E40", "003", "§4.1", "01",
         "**自注意力机制**：计算自注意力权重 $W^Q=\\{w_{ij}\\}$ 和 $W^K=\\{w_{ij}\\}$，通过点积计算注意力权重 "
         "$A=\\{a_{ij}\\}$。 - **多头自注意力**：通过多组 $W^V$ 计算多头注意力权重",
         "W^Q, W^K, W^V are learned projection matrices, not attention weights. The attention weights "
         "A = softmax(QK^T/sqrt(d_k)) come from the queries and keys only; W^V shapes the values that A "
         "averages, so changing W^V leaves A unchanged.")
def _e40():
    with seeded(0):
        m = tiny_gpt(n_layer=1)
        attn = m.transformer.h[0].attn
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


@erratum("E41", "003", "§2.1", "01",
         "**层归一化**：一种正则化技术，用于加速模型的训练，提高模型的稳定性。",
         "Layer normalisation is a normalisation, not a regulariser: it rescales every token vector to "
         "zero mean and unit variance, then applies a learned scale and shift; it adds no noise or "
         "penalty and behaves the same in training and evaluation (unlike dropout).")
def _e41():
    import torch.nn as nn
    with seeded(0):
        x = 3 + 5 * torch.randn(4, 16)
        ln, drop = nn.LayerNorm(16), nn.Dropout(0.1)
        y_train = ln.train()(x)
        y_eval = ln.eval()(x)
        d_train = drop.train()(x)
    mean, std = y_eval.mean(-1).abs().max().item(), y_eval.std(-1, unbiased=False).mean().item()
    assert torch.equal(y_train, y_eval) and not torch.equal(d_train, drop.eval()(x)) and mean < 1e-5
    return (f"LayerNorm output is identical in train and eval mode (dropout's is not); each row has mean "
            f"{small(mean)} and std {std:.3f}")
