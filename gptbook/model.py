"""A decoder-only GPT in plain PyTorch, written to be read.

Module names follow Hugging Face's GPT-2 (`transformer.wte`, `h[i].attn.c_attn`, `mlp.c_fc`, ...)
so that weights map one-to-one onto `transformers.GPT2LMHeadModel` (see `gptbook.hf`).
Tensor names follow nanoGPT: idx, targets, logits, B, T, C, q, k, v, att.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import GPTConfig   # the architecture's sizes live with the profiles that choose them

IGNORE_INDEX = -100     # a target with this id adds nothing to the loss (F.cross_entropy's default)


# Published configurations (vocab, context, layers, heads, width). Sources: GPT-1 paper
# (Radford et al. 2018, 40,478 BPE merges + specials, 512 ctx), GPT-2 paper and released
# checkpoints (Radford et al. 2019), GPT-3 paper table 2.1 (Brown et al. 2020).
PUBLISHED = {
    "GPT-1": GPTConfig(vocab_size=40478, block_size=512, n_layer=12, n_head=12, n_embd=768),
    "GPT-2 small": GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "GPT-2 medium": GPTConfig(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, n_embd=1024),
    "GPT-2 large": GPTConfig(vocab_size=50257, block_size=1024, n_layer=36, n_head=20, n_embd=1280),
    "GPT-2 XL": GPTConfig(vocab_size=50257, block_size=1024, n_layer=48, n_head=25, n_embd=1600),
    "GPT-3 175B": GPTConfig(vocab_size=50257, block_size=2048, n_layer=96, n_head=96, n_embd=12288),
}


def count_params(config: GPTConfig, include_embeddings: bool = True) -> int:
    """Parameter count computed from the configuration alone (tied lm_head counted once)."""
    C, L, V, T = config.n_embd, config.n_layer, config.vocab_size, config.block_size
    b = 1 if config.bias else 0
    ln = 2 * C if config.bias else C                 # weight (+ bias)
    attn = C * 3 * C + b * 3 * C + C * C + b * C     # c_attn + c_proj
    mlp = C * 4 * C + b * 4 * C + 4 * C * C + b * C  # c_fc + c_proj
    per_layer = 2 * ln + attn + mlp
    total = L * per_layer + ln                       # + ln_f
    if include_embeddings:
        total += V * C + T * C                       # wte (shared with lm_head) + wpe
    return total


LayerNorm = nn.LayerNorm   # torch's (bias=False since 2.1); chapter 01 and its exercise call it model.LayerNorm


class DeadlinePassed(RuntimeError):
    """Raised by a GPT's forward pass inside `GPT.deadline(at)` once time.monotonic() is past `at`."""


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention. x: (B, T, C) -> (B, T, C)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        # the heads' total width: n_embd as built; less after prune.drop_heads removes some heads
        self.head_size = config.n_embd // config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.flash = config.flash

    def forward(self, x, mask=None, layer_past=None):
        """mask: bool (B or 1, 1, T, S), True = may attend; None = plain causal.
        layer_past: (k, v) from earlier steps, each (B, nh, S-T, hs). Returns (y, (k, v))."""
        B, T, C = x.size()
        hs, inner = self.head_size, self.n_head * self.head_size
        q, k, v = self.c_attn(x).split(inner, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if layer_past is not None:
            # KV cache: the keys and values of earlier tokens do not change, so reuse them
            k = torch.cat([layer_past[0], k], dim=2)       # (B, nh, S, hs)
            v = torch.cat([layer_past[1], v], dim=2)       # (B, nh, S, hs)
        present = (k, v)
        S = k.size(2)
        if mask is None and T != S:
            # new queries sit at the end: query i may see keys 0 .. S-T+i
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        p = self.dropout if self.training else 0.0
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                               is_causal=mask is None)
        else:
            # softmax(q k^T / sqrt(hs)) v, with future positions set to -inf before the softmax
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, S)
            if mask is None:
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~mask, float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            y = att @ v                                          # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, inner)     # re-assemble the heads
        return self.resid_dropout(self.c_proj(y)), present


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU (tanh, as GPT-2) -> C."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, mask=None, layer_past=None):
        a, present = self.attn(self.ln_1(x), mask=mask, layer_past=layer_past)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, present


class GPTOutput(NamedTuple):
    logits: torch.Tensor
    loss: Optional[torch.Tensor] = None
    past_key_values: Optional[tuple] = None
    hidden_states: Optional[torch.Tensor] = None


class GPT(nn.Module):
    """Token + position embeddings, n_layer blocks, final LayerNorm, tied LM head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying (GPT-2, Press & Wolf 2017)
        # activation checkpointing: in training, each block keeps only its input for backward and
        # recomputes its activations there (torch.utils.checkpoint): less memory, one more forward
        self.checkpointing = False
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            # GPT-2 paper: scale residual projections by 1/sqrt(N), N = number of residual layers
            if pn.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, include_embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weights are one Parameter: counted once
        if not include_embeddings:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def _check_input(self, idx, past_len):
        if not torch.is_tensor(idx) or idx.dtype not in (torch.long, torch.int, torch.int32):
            raise TypeError(f"idx must be an integer tensor of token ids of shape (B, T), "
                            f"got {type(idx).__name__} {getattr(idx, 'dtype', '')}")
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}; "
                             f"for one sequence use idx[None] or idx.unsqueeze(0)")
        T = idx.size(1)
        if past_len + T > self.config.block_size:
            raise ValueError(f"sequence of {past_len + T} tokens is longer than block_size="
                             f"{self.config.block_size}; crop it to the last {self.config.block_size}")
        # the token VALUES cannot be checked while torch.export traces (ONNX export): the exported
        # graph holds only the math, so the check is left out there
        if idx.numel() and not torch.compiler.is_exporting() and (
                idx.min() < 0 or idx.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size}), got range "
                             f"[{int(idx.min())}, {int(idx.max())}]")

    def forward(self, idx, targets=None, past_key_values=None, attention_mask=None,
                position_ids=None, ignore_index: int = IGNORE_INDEX, logits: bool = True) -> GPTOutput:
        """idx: (B, T) token ids. targets: (B, T) or None. attention_mask: (B, S) 1 = real token,
        0 = padding, S = past + T. Returns GPTOutput(logits (B, T, V), loss, past_key_values, h).
        logits=False skips the LM head (logits None; no targets then): heads that read only the
        hidden states h save its B x T x V multiply, over a block's worth of work at a small width."""
        past_len = 0 if past_key_values is None else past_key_values[0][0].size(2)
        self._check_input(idx, past_len)
        B, T = idx.size()
        device = idx.device
        if position_ids is None:
            if attention_mask is not None:
                # left padding: real tokens are numbered 0, 1, 2, ... from the first real one
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_len:]
            else:
                position_ids = torch.arange(past_len, past_len + T, device=device)[None]
        mask = None
        if attention_mask is not None:
            S = past_len + T
            if attention_mask.shape != (B, S):
                raise ValueError(f"attention_mask must have shape (B, past+T) = {(B, S)}, "
                                 f"got {tuple(attention_mask.shape)}")
            causal = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=past_len)
            keep = attention_mask.bool()[:, None, None, :]           # (B, 1, 1, S)
            self_pos = torch.zeros(T, S, dtype=torch.bool, device=device)
            self_pos[torch.arange(T), torch.arange(past_len, S)] = True  # a pad query sees itself: no NaN
            mask = (causal & keep) | self_pos                         # (B, 1, T, S)
        x = self.transformer.wte(idx) + self.transformer.wpe(position_ids)  # (B, T, C)
        x = self.transformer.drop(x)
        presents = []
        for i, block in enumerate(self.transformer.h):
            layer_past = None if past_key_values is None else past_key_values[i]
            if self.checkpointing and self.training:
                x, present = checkpoint(block, x, mask, layer_past, use_reentrant=False)
            else:
                x, present = block(x, mask=mask, layer_past=layer_past)
            presents.append(present)
        x = self.transformer.ln_f(x)
        if not logits:
            if targets is not None:
                raise ValueError("targets need the logits: leave logits=True to get a loss")
            return GPTOutput(None, None, tuple(presents), x)
        logits = self.lm_head(x)                                       # (B, T, V)
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, "
                                 f"got {tuple(targets.shape)}")
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=ignore_index)
        return GPTOutput(logits, loss, tuple(presents), x)

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas=(0.9, 0.95)):
        """AdamW with decay on matrices only (not on biases, LayerNorm weights), as nanoGPT.
        beta2 = 0.95 (GPT-3), not Adam's 0.999: the second moment follows the changing gradient
        scale of language-model training sooner, which keeps the steps stable."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)

    @contextlib.contextmanager
    def deadline(self, at: float):
        """Inside the block, every forward pass of the calling thread first checks time.monotonic()
        and raises DeadlinePassed once it is past `at`; generate() runs one forward per token, so a
        generation stops within one token of its deadline (the HTTP service's request timeout).
        Other threads are not affected; leaving the block removes the check."""
        thread = threading.get_ident()

        def check(module, args):
            if threading.get_ident() == thread and time.monotonic() > at:
                raise DeadlinePassed("deadline passed")
        handle = self.register_forward_pre_hook(check)
        try:
            yield self
        finally:
            handle.remove()

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, **kwargs):
        """Shortcut for gptbook.generate.generate(self, idx, ...)."""
        from .generate import generate
        return generate(self, idx, max_new_tokens, **kwargs)
