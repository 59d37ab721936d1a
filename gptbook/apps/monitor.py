"""Sentiment monitoring of a text stream (document 000 §6.2, 金融舆情): a replayed stream with
injected negative shifts, a rolling negative share, threshold alerts, false / missed alarm counts."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch


@dataclass
class Stream:
    texts: List[str]
    labels: List[int]                    # gold sentiment of each text (0 neg, 1 neu, 2 pos)
    segments: List[Tuple[int, int]]      # injected shifts [start, end): the ground truth to detect

    @property
    def injected(self) -> torch.Tensor:
        """(N,) bool: True inside an injected segment."""
        m = torch.zeros(len(self.texts), dtype=torch.bool)
        for s, e in self.segments:
            m[s:e] = True
        return m


def make_stream(rows: Sequence[tuple], length: int, n_segments: int, segment_len: int,
                neg_share: float = 0.8, seed: int = 0) -> Stream:
    """Replay `rows` [(text, label, ...)] in their file order for `length` items and overwrite
    `n_segments` non-overlapping segments of `segment_len` with texts that are negative with
    probability `neg_share` (drawn from the rows after the replayed part, so none repeats)."""
    if n_segments * segment_len * 2 > length:
        raise ValueError("segments would cover more than half the stream; make it longer")
    base, pool = list(rows[:length]), list(rows[length:])
    neg = [r for r in pool if r[1] == 0]
    other = [r for r in pool if r[1] != 0]
    need = n_segments * segment_len
    if len(neg) < need or len(other) < need:
        raise ValueError(f"need {need} unused negative and other texts after the first {length} rows")
    rng = random.Random(seed)
    rng.shuffle(neg), rng.shuffle(other)
    # evenly spaced slots with a random offset each, so segments never touch
    slot = length // n_segments
    segments = []
    for j in range(n_segments):
        start = j * slot + rng.randrange(segment_len, slot - segment_len)
        segments.append((start, start + segment_len))
        for i in range(start, start + segment_len):
            base[i] = neg.pop() if rng.random() < neg_share else other.pop()
    return Stream([r[0] for r in base], [int(r[1]) for r in base], segments)


def rolling_share(flags, window: int) -> torch.Tensor:
    """Share of True among the last `window` items (fewer at the start). (N,) -> (N,) float."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    x = torch.as_tensor(flags, dtype=torch.float32)
    c = torch.cat([torch.zeros(1), x.cumsum(0)])                   # (N + 1,)
    i = torch.arange(1, len(x) + 1)
    lo = (i - window).clamp(min=0)
    return (c[i] - c[lo]) / (i - lo).float()


def alert_onsets(share, threshold: float, window: int) -> List[int]:
    """Indices where the rolling share rises to >= threshold (a new alert); no alert is raised
    before a full window has been seen."""
    s = torch.as_tensor(share)
    above = s >= threshold
    above[:window - 1] = False
    prev = torch.cat([torch.zeros(1, dtype=torch.bool), above[:-1]])
    return torch.nonzero(above & ~prev).flatten().tolist()


def alarm_counts(onsets: Sequence[int], segments: Sequence[Tuple[int, int]], window: int) -> dict:
    """Score alerts against injected segments. An alert counts for a segment if it starts inside
    [start, end + window) (the rolling window lags by up to `window` items); a segment with no such
    alert is missed; alerts that match no segment are false alarms. delay = items from start."""
    hit, delays, false = set(), [], 0
    for o in onsets:
        j = next((j for j, (s, e) in enumerate(segments) if s <= o < e + window), None)
        if j is None:
            false += 1
        elif j not in hit:
            hit.add(j)
            delays.append(o - segments[j][0])
    return {"alerts": len(onsets), "detected": len(hit), "missed": len(segments) - len(hit),
            "false_alarms": false,
            "mean_delay": sum(delays) / len(delays) if delays else float("nan")}


def calibrated_threshold(calm_flags, window: int, k: float = 3.0) -> float:
    """A threshold set without seeing any surge: the mean of the rolling share over a calm period
    plus k of its standard deviations (full windows only; a control-chart rule), rounded to 0.01.
    It adapts to the classifier: one that calls most texts negative gets a high threshold."""
    share = rolling_share(calm_flags, window)[window - 1:]
    if len(share) < 2:
        raise ValueError(f"the calm period needs more than window={window} items, got {len(calm_flags)}")
    return round(float(share.mean() + k * share.std()), 2)


def sweep(neg_flags, segments, window: int, thresholds) -> List[dict]:
    """alarm_counts for each threshold (the trade-off between false and missed alarms)."""
    share = rolling_share(neg_flags, window)
    return [{"threshold": float(t), **alarm_counts(alert_onsets(share, t, window), segments, window)}
            for t in thresholds]


def plot_stream(share, segments, onsets, threshold: float, title: str = "", ax=None):
    """Rolling negative share over the stream, injected segments shaded, alerts marked."""
    import matplotlib.pyplot as plt
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(8, 3.2))
    share = torch.as_tensor(share)
    for k, (s, e) in enumerate(segments):
        ax.axvspan(s, e, color="tab:red", alpha=0.15, label="injected shift" if k == 0 else None)
    ax.plot(share.numpy(), lw=1.2, label="rolling negative share")
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"alert threshold {threshold:g}")
    if onsets:
        ax.plot(onsets, share[onsets].numpy(), "v", color="tab:red", ms=9, label="alert")
    ax.set(xlabel="position in the stream (texts)", ylabel="share predicted negative",
           ylim=(0, max(1.0, threshold + 0.05)), title=title)     # a threshold above 1 never fires
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)   # outside: the data stays visible
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
