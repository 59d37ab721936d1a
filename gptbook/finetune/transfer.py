"""Does pre-training help? Chapter 03 measures it two ways. The plainest: freeze a model, take the
mean of its last hidden states over each text as features, and fit a logistic regression on a
growing number of labelled examples ("a linear probe"). The same probe on a randomly initialised copy
of the same architecture is the control: whatever the pre-trained features add over it is what
pre-training taught. Several seeds (different labelled subsets) give error bars. The second is
fine-tuning itself: the same steps from pre-trained and from random weights, over a growing label
budget (finetune_curve). Both run on a split that no seed changes, heldout_split: its test texts are
the ones data.heldout() keeps out of the broad model's pre-training."""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from ..generate import pad
from ..mathx import mean_pool


@torch.no_grad()
def pooled_features(model, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int = 128,
                    by_length: bool = False) -> np.ndarray:
    """(N, C): the mean of the model's final hidden states over each sequence's real tokens, rows in
    input order. by_length=True batches sequences of like length together (less padding)."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i])) if by_length else list(range(len(seqs)))
    out = torch.empty(len(seqs), model.config.n_embd)
    for i in range(0, len(seqs), batch_size):
        rows = order[i:i + batch_size]
        x, mask = pad([seqs[j] for j in rows], pad_id, side="right")
        h = model(x.to(device), attention_mask=mask.to(device)).hidden_states.float()
        out[rows] = mean_pool(h, mask.to(device)).cpu()
    model.train(was)
    return out.numpy()


def probe_curve(features: Dict[str, tuple], y_train: Sequence[int], y_test: Sequence[int],
                budgets: Sequence[Optional[int]], seeds: Sequence[int]) -> list:
    """features {name: (X_train, X_test)} -> rows {features, labels, seed, accuracy, macro_f1}: a
    class-balanced logistic regression trained on a stratified subset of `labels` training examples
    (None = all), one row per (name, budget, seed). The subsets are the same for every name."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from .tasks import subsample
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    rows = []
    for n in budgets:
        for seed in seeds:
            idx = subsample(list(range(len(y_train))), y_train.tolist(), n, seed)
            for name, (X_tr, X_te) in features.items():
                clf = LogisticRegression(max_iter=3000, class_weight="balanced").fit(X_tr[idx], y_train[idx])
                p = clf.predict(X_te)
                rows.append({"features": name, "labels": len(idx), "seed": seed,
                             "accuracy": accuracy_score(y_test, p),
                             "macro_f1": f1_score(y_test, p, average="macro", zero_division=0)})
    return rows


def summarize(rows: Sequence[dict], metric: str = "macro_f1") -> list:
    """Mean and standard error over seeds, per (features, labels)."""
    groups: Dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["features"], r["labels"]), []).append(r[metric])
    out = []
    for (name, n), v in groups.items():
        sd = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
        out.append({"features": name, "labels": n, "mean": float(np.mean(v)), "se": sd / math.sqrt(len(v)),
                    "seeds": len(v)})
    return out


def heldout_split(rows: Sequence, text: Callable = lambda r: r[0]) -> tuple:
    """(pool, test): the rows whose text data.heldout() reserves are the test set, the rest the pool
    that labelled subsets are drawn from. The broad model was pre-trained on the pool's text (not its
    labels) and never on the test's: domain-adaptive pre-training without a leak."""
    from ..data import heldout
    pool = [r for r in rows if not heldout(text(r))]
    test = [r for r in rows if heldout(text(r))]
    return pool, test


def finetune_curve(inits: Dict[str, Callable], tok, pool: Sequence, test: Sequence, num_labels: int,
                   budgets: Sequence[Optional[int]], seeds: Sequence[int], cfg, steps: Optional[int] = None,
                   learning_rate: Optional[float] = None) -> list:
    """inits {name: () -> GPT} -> rows {features, labels, seed, accuracy, macro_f1}: for each budget
    and seed, a stratified subset of the (text, label) pool fine-tunes a fresh sequence classifier on
    each init (the whole model, the same steps, batches and head initialisation), scored on test."""
    from sklearn.metrics import accuracy_score, f1_score

    from .tasks import GPTForSequenceClassification, encode, predict, subsample, train_head
    pad_id = tok.token_to_id("<|pad|>")
    seqs = encode(tok, [t for t, _ in pool], cfg.block_size)
    ys = [y for _, y in pool]
    test_seqs, y_test = encode(tok, [t for t, _ in test], cfg.block_size), [y for _, y in test]
    rows = []
    for n in budgets:
        for seed in seeds:
            idx = subsample(list(range(len(pool))), ys, n, seed)
            for name, make in inits.items():
                gpt = make()
                torch.manual_seed(seed)                    # the same head for every init
                model = GPTForSequenceClassification(gpt, num_labels, pad_id)
                train_head(model, [seqs[i] for i in idx], [ys[i] for i in idx], cfg, pad_id, steps=steps,
                           learning_rate=learning_rate, seed_offset=seed)
                p = predict(model, test_seqs, pad_id).tolist()
                rows.append({"features": name, "labels": len(idx), "seed": seed,
                             "accuracy": accuracy_score(y_test, p),
                             "macro_f1": f1_score(y_test, p, average="macro", zero_division=0)})
    return rows
