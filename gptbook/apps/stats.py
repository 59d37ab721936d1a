"""Confidence intervals for chapter 04's measurements: a proportion (Wilson's interval), a mean or a
macro-F1 over test items (the percentile bootstrap: resample the items with replacement), and a mean
over a crossed grid of sentence frames x word pairs (the two-way bootstrap: resample rows AND
columns, because sentences that share a frame, or a word pair, are not independent)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

Z95 = 1.959963984540054     # the standard normal's 97.5% quantile: two-sided 95%


def wilson(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """95% Wilson score interval of the proportion k / n. Unlike p ± z·s.e. it stays inside [0, 1]
    and is not empty at k = 0: 0 of 800 still allows a rate up to about 0.5%."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # at k = 0 (k = n) the bound is exactly 0 (1); computed, it would be off by a rounding error
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def resample_counts(n: int, n_boot: int = 2000, seed: int = 0) -> torch.Tensor:
    """(n_boot, n): how often each of n items is drawn in each bootstrap resample (rows sum to n).
    A statistic that is a ratio of sums over items then needs one matrix product per resample set."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (n_boot, n), generator=g)
    return torch.zeros(n_boot, n).scatter_add_(1, idx, torch.ones(n_boot, n))


def percentile(samples: torch.Tensor, level: float = 0.95) -> Tuple[float, float]:
    """The (lower, upper) percentile interval of bootstrap samples."""
    q = torch.quantile(samples.double(), torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.double))
    return float(q[0]), float(q[1])


def mean_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Tuple[float, float, float]:
    """(mean, lower, upper) of per-item values (N,); pass a - b of two systems on the same items
    for a paired interval of their difference."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    w = resample_counts(len(v), n_boot, seed).double()
    return float(v.mean()), *percentile(w @ v / len(v), level)


def macro_f1(y_true, y_pred, weights: Optional[torch.Tensor] = None):
    """Macro-F1 over the classes present in y_true or y_pred (sklearn's average="macro"); with
    weights (B, N) from resample_counts, one value per resample (B,)."""
    y, p = torch.as_tensor(y_true).long(), torch.as_tensor(y_pred).long()
    C = int(max(y.max(), p.max())) + 1
    true, pred = torch.nn.functional.one_hot(y, C).double(), torch.nn.functional.one_hot(p, C).double()
    w = torch.ones(1, len(y), dtype=torch.double) if weights is None else weights.double()
    tp = w @ (true * pred)                                     # (B, C) counts in each resample
    n_true, n_pred = w @ true, w @ pred
    present = (n_true + n_pred) > 0
    f1 = torch.where(present, 2 * tp / (n_true + n_pred).clamp(min=1e-12), torch.zeros_like(tp))
    out = f1.sum(1) / present.sum(1)
    return float(out[0]) if weights is None else out


def two_way_mean_ci(d, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Tuple[float, float, float]:
    """(mean, lower, upper) of a grid d (R, C), e.g. sentence frames x adjective pairs: each resample
    draws R rows and C columns with replacement (Owen's pigeonhole bootstrap), so the interval
    counts the frames AND the word pairs as samples, not R·C independent sentences."""
    d = torch.as_tensor(d, dtype=torch.float64)
    R, C = d.shape
    wr, wc = resample_counts(R, n_boot, seed).double(), resample_counts(C, n_boot, seed + 1).double()
    boot = torch.einsum("br,rc,bc->b", wr, d, wc) / (R * C)
    return float(d.mean()), *percentile(boot, level)


def sign(lo: float, hi: float) -> int:
    """+1 when an interval lies above 0, -1 below, 0 when it holds 0 (no difference beyond noise)."""
    return 1 if lo > 0 else -1 if hi < 0 else 0
