"""Knowledge distillation (Hinton, Vinyals and Dean 2015, arXiv 1503.02531): a small student learns
from a large teacher's whole next-token distribution, not only from the one token that came next.

The student's loss mixes the usual cross-entropy on the data with the KL divergence from the
teacher's distribution, both softened by a temperature τ (multiplied back by τ² so the soft term's
gradients keep their size as τ changes). Training reuses `gptbook.train.train` with this loss."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import train as training


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
            temperature: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """alpha * CE(student, targets) + (1 - alpha) * τ² KL(teacher_τ || student_τ), averaged over
    positions. Logits (B, T, V), targets (B, T). alpha=1 is plain language-model training."""
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"need temperature > 0 and alpha in [0, 1]; got {temperature}, {alpha}")
    V = student_logits.size(-1)
    s, t = student_logits.reshape(-1, V), teacher_logits.reshape(-1, V)
    hard = F.cross_entropy(s, targets.reshape(-1))
    soft = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                    log_target=True, reduction="batchmean") * temperature ** 2
    return alpha * hard + (1 - alpha) * soft


def distill(student: nn.Module, teacher: nn.Module, get_batch: Callable, cfg, steps: int,
            temperature: float = 2.0, alpha: float = 0.5, learning_rate: Optional[float] = None,
            progress: bool = True) -> training.History:
    """Train `student` in place on batches from get_batch(device) -> (x, y) against the frozen
    `teacher` (same tokenizer). Returns the History of gptbook.train.train."""
    teacher.eval().requires_grad_(False)

    def loss_fn(net, x, y):
        with torch.no_grad():
            teacher.to(x.device)
            t_logits = teacher(x).logits
        return kd_loss(net(x).logits, t_logits, y, temperature, alpha)

    return training.train(student, get_batch, cfg, max_steps=steps, learning_rate=learning_rate,
                          progress=progress, loss_fn=loss_fn)
