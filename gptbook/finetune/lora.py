"""LoRA (Hu et al. 2021) on the book's GPT with `peft`, and what it costs next to full fine-tuning.

LoRA freezes a pre-trained weight W (out, in) and learns a low-rank change:
    W x  ->  W x + (alpha / r) * B (A x),   A: (r, in), B: (out, r), B starts at zero,
so training starts from exactly the pre-trained model and only r * (in + out) numbers per
matrix are trained. After training, B A can be added into W ("merged"): no extra inference cost.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import torch
import torch.nn as nn

TARGETS = ("c_attn", "c_proj")  # attention q/k/v and the output projections (attn and mlp)


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             target_modules: Sequence[str] = TARGETS, copy_model: bool = True) -> nn.Module:
    """A peft LoRA model around `model` (deep-copied unless copy_model=False): only the adapters train."""
    import peft
    if r <= 0:
        raise ValueError(f"LoRA rank r must be a positive int, got {r}")
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = set(target_modules) - names
    if missing:
        raise ValueError(f"target_modules {sorted(missing)} are not nn.Linear names of this model; "
                         f"choose from {sorted(names)}")
    base = copy.deepcopy(model) if copy_model else model
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                             target_modules=list(target_modules), bias="none")
    return peft.get_peft_model(base, config)


def merge(lora_model: nn.Module) -> nn.Module:
    """W <- W + (alpha/r) B A in every adapted layer; returns the plain model (a copy)."""
    return copy.deepcopy(lora_model).merge_and_unload()


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a shared (tied) Parameter is counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def training_state_bytes(model: nn.Module, adam_states: int = 2) -> int:
    """Bytes of weights + gradients + AdamW moments (2 per trainable number), counted from the tensors.
    Activations are not included: they are about the same for LoRA and full fine-tuning."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n += p.numel() * p.element_size()
        if p.requires_grad:
            n += (1 + adam_states) * p.numel() * p.element_size()
    return n


def measure(fn: Callable, device: torch.device):
    """Run fn() -> (result, seconds, peak bytes). Peak = torch.cuda.max_memory_allocated on a GPU;
    None on CPU, where PyTorch keeps no allocation statistics (tracemalloc does not see tensors)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return result, seconds, peak
