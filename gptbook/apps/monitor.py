"""Sentiment monitoring of a text stream (document 000 §6.2, 金融舆情): a replayed stream with
injected negative surges, a rolling negative share, a threshold set on a calm period, alerts,
false / missed alarm counts, and the in-domain classifiers that make it work (TF-IDF + logistic
regression, the book's GPT with a classification head), trained on a training split only."""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch


@dataclass
class Stream:
    texts: List[str]
    labels: List[int]                    # gold sentiment of each text (0 neg, 1 neu, 2 pos)
    segments: List[Tuple[int, int]]      # injected surges [start, end): the ground truth to detect

    @property
    def injected(self) -> torch.Tensor:
        """(N,) bool: True inside an injected segment."""
        m = torch.zeros(len(self.texts), dtype=torch.bool)
        for s, e in self.segments:
            m[s:e] = True
        return m


def split_rows(rows: Sequence[tuple], train_share: float, seed: int) -> Tuple[list, list]:
    """Labelled rows [(text, label, ...)] -> (train, held_out), stratified by label (every class
    keeps its share in both). The held-out rows come in a random order drawn from `seed`: the order
    in which a replayed stream receives them. No row is in both parts."""
    from sklearn.model_selection import train_test_split
    if not 0 < train_share < 1:
        raise ValueError(f"train_share must be between 0 and 1, got {train_share}")
    idx = list(range(len(rows)))
    train, held = train_test_split(idx, train_size=train_share, stratify=[r[1] for r in rows],
                                   random_state=seed)
    held = sorted(held)
    random.Random(seed).shuffle(held)
    return [rows[i] for i in sorted(train)], [rows[i] for i in held]


def make_stream(rows: Sequence[tuple], length: int, n_segments: int, segment_len: int,
                neg_share: float = 0.8, seed: int = 0) -> Stream:
    """Replay `rows` [(text, label, ...)] in their order for `length` items and overwrite
    `n_segments` non-overlapping segments of `segment_len` with surge texts: round(neg_share *
    segment_len) negative ones and the rest non-negative, in a random order, drawn from the rows
    after the replayed part (so no text repeats)."""
    if n_segments * segment_len * 2 > length:
        raise ValueError("segments would cover more than half the stream; make it longer")
    base, pool = list(rows[:length]), list(rows[length:])
    neg = [r for r in pool if r[1] == 0]
    other = [r for r in pool if r[1] != 0]
    n_neg = round(neg_share * segment_len)
    if len(neg) < n_segments * n_neg or len(other) < n_segments * (segment_len - n_neg):
        raise ValueError(f"need {n_segments * n_neg} unused negative and {n_segments * (segment_len - n_neg)} "
                         f"other texts after the first {length} rows, have {len(neg)} and {len(other)}")
    rng = random.Random(seed)
    rng.shuffle(neg), rng.shuffle(other)
    # evenly spaced slots with a random offset each, so segments never touch
    slot = length // n_segments
    segments = []
    for j in range(n_segments):
        start = j * slot + rng.randrange(segment_len, slot - segment_len)
        segments.append((start, start + segment_len))
        fill = [neg.pop() for _ in range(n_neg)] + [other.pop() for _ in range(segment_len - n_neg)]
        rng.shuffle(fill)
        base[start:start + segment_len] = fill
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


def alert_onsets(share, threshold: float, window: int, rearm: Optional[float] = None) -> List[int]:
    """Indices where a new alert starts: the rolling share reaches `threshold` while the monitor is
    armed. An alert lasts until the share falls below `rearm` (default: the threshold itself); only
    then can the next one start, so a re-arm level below the threshold keeps a share that wobbles
    around the threshold from raising a burst of alerts. No alert before a full window."""
    low = threshold if rearm is None else rearm
    if low > threshold:
        raise ValueError(f"rearm ({rearm}) must not be above the threshold ({threshold})")
    s = torch.as_tensor(share, dtype=torch.float32).tolist()
    onsets, armed = [], True
    for i in range(window - 1, len(s)):
        if armed and s[i] >= threshold:
            onsets.append(i)
            armed = False
        elif not armed and s[i] < low:
            armed = True
    return onsets


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


def calibrated_threshold(calm_flags, window: int, k: float = 3.0, spread: str = "binomial") -> float:
    """A threshold set without seeing any surge, from a calm period only (a control-chart rule):
    the calm level plus k standard deviations of the share in one window, rounded to 0.01.
    spread="binomial": level p = share of True in the calm period, standard deviation
    sqrt(p (1 - p) / window), what independent texts give; it needs only p, which a calm period
    measures well. spread="empirical": mean and standard deviation of the rolling share over the
    calm period (full windows only); it also sees texts that come in bursts, but a calm period
    holds few independent windows, so its spread is a noisy estimate.
    Either way it adapts to the classifier: one that calls most texts negative gets a high threshold."""
    flags = torch.as_tensor(calm_flags, dtype=torch.float32)
    if len(flags) <= window:
        raise ValueError(f"the calm period needs more than window={window} items, got {len(flags)}")
    if spread == "binomial":
        p = float(flags.mean())
        return round(p + k * (p * (1 - p) / window) ** 0.5, 2)
    if spread == "empirical":
        share = rolling_share(flags, window)[window - 1:]
        return round(float(share.mean() + k * share.std()), 2)
    raise ValueError(f"spread must be 'binomial' or 'empirical', got {spread!r}")


def run_monitor(flags, calm_flags, segments, window: int, k: float = 3.0) -> dict:
    """The whole monitor, scored: threshold from the calm flags alone (calibrated_threshold), alerts
    on the stream's rolling share, re-armed once the share falls back below halfway between the calm
    level and the threshold, counted against the injected segments (alarm_counts).
    -> {"calm share", "threshold", "onsets", **alarm_counts}"""
    calm = float(torch.as_tensor(calm_flags, dtype=torch.float32).mean())
    threshold = calibrated_threshold(calm_flags, window, k)
    onsets = alert_onsets(rolling_share(flags, window), threshold, window,
                          rearm=min(threshold, (calm + threshold) / 2))
    return {"calm share": calm, "threshold": threshold, "onsets": onsets,
            **alarm_counts(onsets, segments, window)}


def sweep(neg_flags, segments, window: int, thresholds, rearm: Optional[float] = None) -> List[dict]:
    """alarm_counts for each threshold (the trade-off between false and missed alarms)."""
    share = rolling_share(neg_flags, window)
    rows = []
    for t in thresholds:
        onsets = alert_onsets(share, t, window, rearm=None if rearm is None else min(rearm, t))
        rows.append({"threshold": float(t), **alarm_counts(onsets, segments, window)})
    return rows


def plot_stream(share, segments, onsets, threshold: float, title: str = "", ax=None, window: int = 1):
    """Rolling negative share over the stream (from the first full window on), injected segments
    shaded, the threshold, alerts marked."""
    import matplotlib.pyplot as plt
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(8, 3.2))
    share = torch.as_tensor(share, dtype=torch.float32)
    for k, (s, e) in enumerate(segments):
        ax.axvspan(s, e, color="tab:red", alpha=0.15, label="injected surge" if k == 0 else None)
    x = torch.arange(window - 1, len(share))
    ax.plot(x.numpy(), share[window - 1:].numpy(), lw=1.2, label=f"negative share, last {window}"
            if window > 1 else "rolling negative share")
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"alert threshold {threshold:g}")
    if onsets:
        ax.plot(onsets, share[onsets].numpy(), "v", color="tab:red", ms=9, label="alert")
    ax.set(xlabel="position in the stream (texts)", ylabel="share predicted negative",
           xlim=(0, len(share)), ylim=(0, max(1.0, threshold + 0.05)), title=title)   # a threshold above 1 never fires
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)   # outside: the data stays visible
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- in-domain classifiers

class TfidfClassifier:
    """Character n-gram TF-IDF + logistic regression, trained on the texts it is given. Character
    2- to 5-grams (inside word boundaries) see `soooo`, `#fail` and misspellings, which tweets are
    full of, as close to the words they come from; class weights balance the labels, so the rarer
    negative class is not traded away for accuracy on the common one."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], C: float = 5.0):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                                          min_df=2)
        self.model = LogisticRegression(C=C, class_weight="balanced", max_iter=1000)
        self.model.fit(self.vectorizer.fit_transform(list(texts)), list(labels))

    def predict(self, texts: Sequence[str]) -> torch.Tensor:
        """list of N strings -> (N,) predicted labels"""
        return torch.as_tensor(self.model.predict(self.vectorizer.transform(list(texts))), dtype=torch.long)


def gpt_classifier(cfg, texts: Sequence[str], labels: Sequence[int], num_labels: int = 3,
                   steps: Optional[int] = None, progress: bool = False):
    """The book's pre-trained GPT (a fresh copy, the caller's stays as it is) with a sequence-
    classification head, fine-tuned on (texts, labels) with chapter 03's recipe (tasks.train_head,
    cfg.finetune_* settings, `steps` or cfg.finetune_steps). Cached: the file name carries the
    pre-trained model, the settings and a checksum of the training rows, so other data trains anew.
    Returns (model in eval mode on CPU, tokenizer, History); classify with `predict_gpt`."""
    from ..finetune import tasks
    from ..train import History, cached_model, model_path, pretrained, pretrained_key
    gpt, tok, _ = pretrained(cfg, progress=progress)
    pad_id = tok.token_to_id("<|pad|>")
    model = tasks.GPTForSequenceClassification(gpt, num_labels, pad_id)
    steps = steps or cfg.finetune_steps
    digest = zlib.crc32("\n".join(f"{t}\t{y}" for t, y in zip(texts, labels)).encode("utf-8"))
    path = model_path("monitor", pretrained_key(cfg), steps, cfg.finetune_batch_size, cfg.finetune_lr,
                      f"{digest:08x}")

    def build():
        torch.manual_seed(cfg.seed)
        torch.nn.init.normal_(model.score.weight, std=0.02)
        hist = tasks.train_head(model, tasks.encode(tok, texts, cfg.block_size), [int(y) for y in labels],
                                cfg, pad_id, steps=steps, progress=progress)
        return model.cpu(), {"history": hist.to_dict()}
    model, extra = cached_model(path, build, "the in-domain GPT classifier", into=model,
                                rebuild="the next run of chapter 04 fine-tunes it again")
    return model, tok, History(**extra["history"])


def predict_gpt(model, tok, texts: Sequence[str], max_len: int, batch_size: int = 64) -> torch.Tensor:
    """(N,) labels predicted by a GPTForSequenceClassification (book tokenizer, first max_len tokens).
    Texts go through in order of length, so a batch pads little; the labels come back in input order."""
    from ..finetune import tasks
    seqs = tasks.encode(tok, texts, max_len)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    pred = tasks.predict(model, [seqs[i] for i in order], tok.token_to_id("<|pad|>"), batch_size=batch_size)
    out = torch.empty_like(pred)
    out[torch.tensor(order, dtype=torch.long)] = pred
    return out
