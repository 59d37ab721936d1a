"""Small training experiments of chapter 03 §7: learning-rate sweeps, warm-up, over-fitting and
its remedies, early stopping, gradient accumulation. All of them run `train.train`."""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..config import Profile
from ..train import History, train


def cycle_batches(batches: Sequence) -> Callable:
    """get_batch(device) that returns the given (x, y) batches in order, round and round."""
    if not batches:
        raise ValueError("need at least one batch")
    state = {"i": 0}

    def get_batch(device="cpu"):
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        return x.to(device), y.to(device)
    return get_batch


def set_dropout(model: nn.Module, p: float) -> nn.Module:
    """Set every dropout probability of a GPT in place (nn.Dropout modules and SDPA's dropout_p)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        elif hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = p  # CausalSelfAttention passes it to scaled_dot_product_attention
    return model


def best_step(hist: History) -> tuple[int, float]:
    """Early stopping, looking back: (step, val loss) of the lowest validation loss (first if tied)."""
    if not hist.val_loss:
        raise ValueError("the History has no validation losses; pass get_val_batch to train()")
    i = min(range(len(hist.val_loss)), key=lambda j: (hist.val_loss[j], j))
    return hist.val_steps[i], hist.val_loss[i]


def stop_step(hist: History, patience: int) -> int:
    """Early stopping, online: the step at which training stops after `patience` evaluations
    without a new best validation loss (the last step if it never stops)."""
    best, waited = float("inf"), 0
    for step, v in zip(hist.val_steps, hist.val_loss):
        if v < best:
            best, waited = v, 0
        else:
            waited += 1
            if waited >= patience:
                return step
    return hist.val_steps[-1]


def run(model: nn.Module, make_batches: Callable, cfg: Profile, steps: int, learning_rate: float,
        warmup: bool = True, n_val_batches: int = 1, **changes) -> History:
    """One short `train.train` run. make_batches() -> (get_train, get_val), fresh each run so that
    every run sees the same data; each evaluation averages n_val_batches val batches.
    `changes` override Profile fields (weight_decay=..., eval_interval=...)."""
    run_cfg = dataclasses.replace(cfg, eval_iters=n_val_batches, **changes)
    if not warmup:
        run_cfg = dataclasses.replace(run_cfg, warmup_steps=0)
    get_train, get_val = make_batches()
    return train(model, get_train, run_cfg, get_val_batch=get_val, max_steps=steps,
                 learning_rate=learning_rate, progress=False)


def lr_sweep(make_model: Callable, make_batches: Callable, cfg: Profile, lrs: Sequence[float],
             steps: int, warmup: bool = True, n_val_batches: int = 1) -> list[dict]:
    """Final train and validation loss for each learning rate, each from a fresh make_model()."""
    rows = []
    for lr in lrs:
        h = run(make_model(), make_batches, cfg, steps, lr, warmup, n_val_batches,
                eval_interval=steps)
        rows.append({"learning_rate": lr, "train_loss": h.train_loss[-1], "val_loss": h.val_loss[-1]})
    return rows


def accumulation_matches_big_batch(make_model: Callable, x: torch.Tensor, y: torch.Tensor,
                                   cfg: Profile, micro: int, learning_rate: float = 1e-3):
    """One optimizer step on the batch (x, y) at once, and as `micro` accumulated micro-batches.
    Returns (model_big, model_accum). Equal only when every micro-batch has the same number of
    counted tokens (the loss is a mean per micro-batch); dropout must be 0."""
    if x.size(0) % micro:
        raise ValueError(f"batch size {x.size(0)} is not divisible by micro={micro}")
    one = dataclasses.replace(cfg, warmup_steps=0)
    big = make_model()
    train(big, cycle_batches([(x, y)]), one, max_steps=1, learning_rate=learning_rate, progress=False)
    acc = make_model()
    parts = list(zip(x.chunk(micro), y.chunk(micro)))
    train(acc, cycle_batches(parts), one, max_steps=1, learning_rate=learning_rate,
          grad_accum=micro, progress=False)
    return big, acc
