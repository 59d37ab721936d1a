"""The one sampling loop of the book, shared by chapters, widgets and the HTTP service."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F


def check_sampling(temperature: float = 1.0, top_k: Optional[int] = None,
                   top_p: Optional[float] = None, repetition_penalty: float = 1.0):
    """Raise a ValueError that says what is allowed for each sampling control."""
    # NaN passes every comparison below (NaN < 0 is False), so finiteness is checked first
    for name, value in (("temperature", temperature), ("top_p", top_p), ("repetition_penalty", repetition_penalty)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got {repetition_penalty}")


def apply_repetition_penalty(logits, idx, penalty: float):
    """CTRL-style penalty (Keskar et al. 2019): divide positive, multiply negative logits of seen tokens."""
    if penalty == 1.0:
        return logits
    seen = torch.gather(logits, 1, idx)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    # a tiny penalty (1e-300 is 0 in float32) would turn a seen logit into inf and the probabilities
    # into NaN; clamping to the largest finite value keeps the limit (that token wins) and changes
    # nothing for ordinary penalties
    finfo = torch.finfo(seen.dtype)
    return logits.scatter(1, idx, seen.clamp(finfo.min, finfo.max))


def sample_next(logits, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, generator: Optional[torch.Generator] = None):
    """Pick the next token from logits (B, V) -> (B, 1). temperature 0 = greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    scaled = logits / temperature
    # A temperature so small that logits / temperature overflows (1e-40 in float32), or that is 0 in
    # float32 (5e-324), gives inf or NaN and then NaN probabilities. That is the greedy limit, so such
    # a row keeps only its largest logit. Rows that stayed finite are untouched.
    overflow = ~torch.isfinite(scaled.amax(dim=-1, keepdim=True))
    if bool(overflow.any()):
        top = torch.full_like(logits, float("-inf")).scatter(1, logits.argmax(dim=-1, keepdim=True), 0.0)
        scaled = torch.where(overflow, top, scaled)
    logits = scaled
    if top_k is not None:
        # keep the k largest logits, drop the rest
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    if top_p is not None and top_p < 1.0:
        # nucleus: keep the smallest set of tokens whose probabilities add up to >= top_p
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cum = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cum - F.softmax(sorted_logits, dim=-1) >= top_p   # mass before this token already enough
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(1, sorted_idx, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
             top_p: Optional[float] = None, repetition_penalty: float = 1.0, use_cache: bool = True,
             attention_mask=None, eos_token_id: Optional[int] = None,
             generator: Optional[torch.Generator] = None,
             on_token: Optional[Callable[[torch.Tensor], bool]] = None,
             logits_processor: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None):
    """Append max_new_tokens to idx (B, T) and return (B, T + new).

    Batched prompts are LEFT-padded with attention_mask (B, T) marking real tokens, so every row's
    next token sits at the same position. With use_cache the keys and values of earlier tokens are
    kept (model.forward's past_key_values) and each step feeds only the newest token.
    on_token, when given, is called after each step with that step's new tokens (B, 1); returning
    True stops the generation there (the HTTP service streams text and ends at stop strings with it).
    logits_processor, when given, is called each step with (idx (B, T) so far, next-token logits (B, V)),
    after the repetition penalty and before sampling, and returns the logits to sample from: -inf on a
    token bans it (gptbook.apps.safety.WordFilter bans listed words this way).
    """
    check_sampling(temperature, top_k, top_p, repetition_penalty)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    block_size = model.config.block_size
    if use_cache and idx.size(1) + max_new_tokens > block_size:
        raise ValueError(f"prompt ({idx.size(1)}) + max_new_tokens ({max_new_tokens}) exceeds "
                         f"block_size={block_size}; use use_cache=False to slide the window")
    was_training = model.training
    model.eval()
    past, finished = None, torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    mask = attention_mask
    for _ in range(max_new_tokens):
        if use_cache and past is not None:
            out = model(idx[:, -1:], past_key_values=past, attention_mask=mask)
        else:
            # without a cache, recompute the whole (cropped) context every step
            cond = idx if idx.size(1) <= block_size else idx[:, -block_size:]
            cond_mask = None if mask is None else mask[:, -cond.size(1):]
            out = model(cond, attention_mask=cond_mask)
        past = out.past_key_values if use_cache else None
        # padding is not "seen" text: point pad slots at the row's last (real) token instead
        seen = idx if mask is None else torch.where(mask.bool(), idx, idx[:, -1:])
        logits = apply_repetition_penalty(out.logits[:, -1, :], seen, repetition_penalty)
        if logits_processor is not None:
            logits = logits_processor(idx, logits)
        idx_next = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
        if eos_token_id is not None:
            # rows that already produced EOS keep emitting EOS
            idx_next = idx_next.masked_fill(finished[:, None], eos_token_id)
            finished |= idx_next.squeeze(1) == eos_token_id
        idx = torch.cat([idx, idx_next], dim=1)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(idx_next, dtype=mask.dtype)], dim=1)
        if on_token is not None and on_token(idx_next):
            break
        if eos_token_id is not None and bool(finished.all()):
            break
    model.train(was_training)
    return idx


@torch.no_grad()
def generate_text(model, tok, prompt: str, max_new_tokens: int, crop: bool = False,
                  eos_token_id: Optional[int] = None, device=None, **kwargs) -> str:
    """The text `model` adds to `prompt`: encode, generate (kwargs as generate's; pass
    temperature=0.0 for greedy), keep only the new tokens, cut at eos_token_id, decode.
    tok: a tokenizers.Tokenizer, or anything whose encode(text) gives ids (a list, or .ids) and
    whose decode(ids) gives text. The answer gets the room the prompt leaves in the context (at most
    max_new_tokens); crop=True drops the prompt's start instead, so that all max_new_tokens fit."""
    ids = tok.encode(prompt)
    ids = list(getattr(ids, "ids", ids))
    block_size = model.config.block_size
    if crop:
        ids = ids[-(block_size - max_new_tokens):]
    device = device if device is not None else next(model.parameters()).device
    idx = torch.tensor([ids], device=device)
    out = generate(model, idx, min(max_new_tokens, block_size - len(ids)), eos_token_id=eos_token_id,
                   **kwargs)
    new = out[0, len(ids):].tolist()
    if eos_token_id is not None and eos_token_id in new:
        new = new[:new.index(eos_token_id)]
    return tok.decode(new)


def pad(sequences, pad_id: int, side: str = "left"):
    """List of token-id lists -> (idx (B, T), attention_mask (B, T) with 1 = real token), padded on
    the LEFT (for generation: every row's next token at the same position) or the RIGHT (for
    classification and training: every row starts at position 0)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pad needs a non-empty list of non-empty token sequences")
    T = max(len(s) for s in sequences)
    idx = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)
    for i, s in enumerate(sequences):
        cols = slice(T - len(s), T) if side == "left" else slice(0, len(s))
        idx[i, cols] = torch.tensor(s, dtype=torch.long)
        mask[i, cols] = 1
    return idx, mask


def left_pad(sequences, pad_id: int):
    """pad(sequences, pad_id, "left"): (idx (B, T), attention_mask (B, T)), padded on the LEFT."""
    return pad(sequences, pad_id, "left")
