"""The math of chapter 02, as small functions the chapter derives and the tests check.

softmax and cross-entropy from their definitions, perplexity, the log-probability of a sequence
under the autoregressive factorisation, scaled dot-product attention with its weights, the
1/sqrt(d_k) measurements, and the two pre-training objectives (causal LM and BERT's masked LM)
run on the same GPT layers.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .model import IGNORE_INDEX


# ---------------------------------------------------------------- softmax, entropy, cross-entropy

def softmax(x: torch.Tensor, dim: int = -1, temperature: float = 1.0) -> torch.Tensor:
    """Numerically stable softmax of x / temperature along dim (same shape as x)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use argmax for the limit 0), got {temperature}")
    z = x / temperature
    # softmax(z) = softmax(z - c) for any constant c; c = max keeps exp() <= 1, so no overflow
    z = z - z.amax(dim=dim, keepdim=True)
    e = z.exp()
    return e / e.sum(dim=dim, keepdim=True)


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats of distributions p along dim, with 0 log 0 = 0."""
    return -(p * p.clamp_min(1e-30).log()).sum(dim)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean of -log softmax(logits)[target] from the definition. logits (N, V), targets (N,) -> ()."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"need logits (N, V) and targets (N,), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}; flatten with .view(-1, V) and .view(-1)")
    keep = targets != ignore_index
    # log softmax(z)_y = z_y - log sum_j exp(z_j), with the log-sum-exp taken stably
    logp = logits[keep] - torch.logsumexp(logits[keep], dim=-1, keepdim=True)  # (N', V)
    return -logp.gather(-1, targets[keep][:, None]).mean()


def perplexity(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """exp(mean cross-entropy in nats). logits (..., V), targets (...) -> () tensor."""
    V = logits.size(-1)
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must match logits without the vocabulary "
                         f"axis {tuple(logits.shape[:-1])}")
    ce = F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1), ignore_index=ignore_index)
    return ce.exp()


# ---------------------------------------------------------------- the autoregressive factorisation

def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] at every position, 0 where the target is IGNORE_INDEX.
    logits (B, T, V), targets (B, T) -> (B, T)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    keep = targets != IGNORE_INDEX
    return logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep  # (B, T)


@torch.no_grad()
def token_logprobs(model, idx: torch.Tensor) -> torch.Tensor:
    """log p(x_t | x_<t) for t = 1..T-1 from ONE forward pass. idx (B, T) -> (B, T-1)."""
    if idx.dim() != 2 or idx.size(1) < 2:
        raise ValueError(f"idx must be (B, T) with T >= 2 (x_0 is only context), got {tuple(idx.shape)}")
    # position t-1 predicts x_t
    return target_logprobs(model(idx).logits[:, :-1], idx[:, 1:])   # (B, T-1)


def sequence_logprob(model, idx: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """log p(x_1..x_{T-1} | x_0) = sum_t log p(x_t | x_<t). idx (B, T) -> (B,), without gradients.
    With targets (B, T), labelled as GPT.forward takes them (targets[t] follows idx[:t+1],
    IGNORE_INDEX = not counted): the sum of log p(targets_t | idx_<=t) over the counted positions,
    with gradients (DPO trains on it)."""
    if targets is None:
        return token_logprobs(model, idx).sum(-1)
    return target_logprobs(model(idx).logits, targets).sum(-1)


# ---------------------------------------------------------------- attention

def causal_mask(T: int, device=None) -> torch.Tensor:
    """Bool (T, T), True where query i may attend to key j (j <= i)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def attention(q, k, v, mask: Optional[torch.Tensor] = None, causal: bool = False,
              scale: Optional[float] = None):
    """softmax(q k^T * scale, masked) v. q (..., T, d_k), k (..., S, d_k), v (..., S, d_v)
    -> (y (..., T, d_v), att (..., T, S)). mask: bool, True = may attend. scale None = 1/sqrt(d_k)."""
    if q.size(-1) != k.size(-1) or k.size(-2) != v.size(-2):
        raise ValueError(f"need q (.., T, d_k), k (.., S, d_k), v (.., S, d_v); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale              # (..., T, S)
    if causal:
        mask = causal_mask(q.size(-2), q.device) if mask is None else mask & causal_mask(q.size(-2), q.device)
    if mask is not None:
        # a disallowed key gets -inf, so exp(-inf) = 0: it receives no weight
        scores = scores.masked_fill(~mask, float("-inf"))
    att = torch.softmax(scores, dim=-1)                     # each row sums to 1 over the keys
    return att @ v, att


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, n_head, T, C // n_head): multi-head is a reshape, not more weights."""
    B, T, C = x.shape
    if C % n_head:
        raise ValueError(f"C={C} is not divisible by n_head={n_head}")
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) -> (B, T, nh * hs): concatenate the heads again."""
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)


def attention_stats(d_k: int, scaled: bool, T: int = 32, n: int = 256,
                    generator: Optional[torch.Generator] = None) -> dict:
    """Measure what the scale does for random unit-variance q, k (n rows of T keys, dim d_k):
    variance of the scores, mean softmax entropy / log T, mean largest weight, the share of
    saturated rows (largest weight > 0.99) and the median gradient norm that reaches the scores."""
    q = torch.randn(n, 1, d_k, generator=generator)        # (n, 1, d_k): one query per row
    k = torch.randn(n, T, d_k, generator=generator)        # (n, T, d_k)
    g = torch.randn(n, 1, T, generator=generator)          # a random upstream gradient on the weights
    scores = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(d_k) if scaled else 1.0)  # (n, 1, T)
    scores.requires_grad_(True)
    att = torch.softmax(scores, dim=-1)
    (att * g).sum().backward()                              # d(att . g)/d scores = J_softmax^T g
    att = att.detach()
    return {"var_scores": scores.detach().var().item(),
            "entropy_ratio": (entropy(att) / math.log(T)).mean().item(),
            "max_weight": att.amax(-1).mean().item(),
            "saturated": (att.amax(-1) > 0.99).float().mean().item(),
            "grad_norm": scores.grad.norm(dim=-1).median().item()}


# ---------------------------------------------------------------- causal LM versus masked LM

def layers_logits(model, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The GPT's own layers run with any visibility mask: bool (T, T), True = may attend.
    causal_mask(T) gives model(idx).logits; all True gives a bidirectional (BERT-style) encoder.
    idx (B, T) -> logits (B, T, V)."""
    T = idx.size(1)
    if mask.shape != (T, T) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool (T, T) = ({T}, {T}) tensor, got {mask.dtype} {tuple(mask.shape)}")
    tr = model.transformer
    x = tr.drop(tr.wte(idx) + tr.wpe(torch.arange(T, device=idx.device)))  # (B, T, C)
    for block in tr.h:
        x, _ = block(x, mask=mask[None, None])                              # mask (1, 1, T, T)
    return model.lm_head(tr.ln_f(x))                                         # (B, T, V)


def mlm_corrupt(idx: torch.Tensor, mask_id: int, vocab_size: int, mask_prob: float = 0.15,
                generator: Optional[torch.Generator] = None):
    """BERT's masked-LM corruption: pick mask_prob of the positions; of those 80% -> mask_id,
    10% -> a random token, 10% unchanged. Returns (inputs (B, T), targets (B, T) with IGNORE_INDEX
    where nothing is to be predicted)."""
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    u = torch.rand(idx.shape, generator=generator)
    r = torch.rand(idx.shape, generator=generator)
    chosen = u < mask_prob
    targets = torch.where(chosen, idx, torch.full_like(idx, IGNORE_INDEX))
    random_ids = torch.randint(vocab_size, idx.shape, generator=generator)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(idx, mask_id), idx)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_ids, inputs)
    return inputs, targets


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors of real tokens (sentence embeddings, GPT features). (B, T, C), (B, T) -> (B, C)."""
    m = attention_mask.unsqueeze(-1).to(last_hidden.dtype)          # (B, T, 1)
    return (last_hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)       # (B, C)
