"""The robustness tricks document 004's FAQ names (「数据增强、对抗训练、模型集成」), each one small:
character-noise augmentation, adversarial training on the token embeddings (FGM), and an ensemble
of fine-tuned models. Chapter 03 measures each against the plain fine-tune, on clean and on noisy
test text, over seeds.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

import torch
import torch.nn as nn


def char_noise(text: str, rate: float, rng: random.Random) -> str:
    """`text` with about `rate` of its characters disturbed, each one independently: deleted, doubled
    or swapped with its neighbour (a typist's slips; for Chinese, where a character is a word, a
    dropped or repeated word). rate 0 returns the text unchanged."""
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    out, chars, i = [], list(text), 0
    while i < len(chars):
        c = chars[i]
        if rng.random() >= rate:
            out.append(c)
        else:
            kind = rng.randrange(3)
            if kind == 1:
                out += [c, c]                                     # doubled
            elif kind == 2 and i + 1 < len(chars):
                out += [chars[i + 1], c]                          # swapped with the next one
                i += 1
            # kind 0 (or a swap at the end): deleted
        i += 1
    return "".join(out) or text[:1]


def augment(rows: Sequence[tuple], copies: int, rate: float, seed: int) -> list:
    """Data augmentation: the (text, label) rows followed by `copies` noisy copies of each (char_noise
    at `rate`), labels kept. The same seed gives the same copies."""
    rng = random.Random(seed)
    return list(rows) + [(char_noise(t, rate, rng), y) for _ in range(copies) for t, y in rows]


def fgm(loss_fn: Callable, embedding: nn.Embedding, epsilon: float) -> Callable:
    """Adversarial training on the embeddings (FGM, Miyato et al. 2017, "Adversarial training methods
    for semi-supervised text classification"): loss_fn(model, x, y) -> a loss_fn that returns the clean
    loss plus the loss with each example's token embeddings moved by `epsilon` (L2 norm over the
    whole example) in the direction that raises the loss most, to first order. Text has no continuous
    input to perturb, so the perturbation goes where the tokens become vectors. One step costs about
    two plain ones."""
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")

    def adversarial_loss(model, x, y):
        caught = {}
        hook = embedding.register_forward_hook(lambda m, inp, out: caught.setdefault("e", out))
        try:
            clean = loss_fn(model, x, y)
        finally:
            hook.remove()
        grad, = torch.autograd.grad(clean, caught["e"], retain_graph=True)   # d loss / d embedding, (B, T, C)
        # the worst direction for each example, of L2 norm epsilon over all its tokens together
        # (Miyato et al.): most of it lands on the few tokens the prediction hangs on
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
        r = epsilon * grad / norm
        hook = embedding.register_forward_hook(lambda m, inp, out: out + r.detach())
        try:
            adversarial = loss_fn(model, x, y)
        finally:
            hook.remove()
        return clean + adversarial
    return adversarial_loss


TRICKS = ("plain fine-tune", "+ augmentation", "+ adversarial (FGM)", "ensemble of the plain runs")


def compare_tricks(gpt, tok, pool: Sequence[tuple], test: Sequence[tuple], cfg, seeds: Sequence[int],
                   labels: int = 500, steps: int = 80, learning_rate: float = 1e-3, max_len: int = 32,
                   noise: float = 0.25, epsilon: float = 0.1) -> list:
    """Each trick against the plain fine-tune of a sequence classifier on a copy of `gpt`, over
    `seeds`: for each seed a stratified subset of `labels` (text, label) rows of `pool`, the same head
    initialisation and batches for every trick; augmentation adds one char_noise copy of each text
    (rate `noise`), FGM perturbs the embeddings by `epsilon`; the ensemble averages the plain runs'
    probabilities. Scored by macro-F1 on `test` and on a noisy copy of it (char_noise at `noise`,
    the same copy for all). Returns rows {trick, seed, clean, noisy, seconds} (the ensemble: one row,
    seed None, seconds = its members' total)."""
    import copy
    import time

    from sklearn.metrics import f1_score

    from .tasks import GPTForSequenceClassification, encode, predict_proba, subsample, train_head
    pad_id = tok.token_to_id("<|pad|>")
    y_test = [y for _, y in test]
    rng = random.Random(cfg.seed)
    enc = {"clean": encode(tok, [t for t, _ in test], max_len),
           "noisy": encode(tok, [char_noise(t, noise, rng) for t, _ in test], max_len)}
    num_labels = len(set(y_test))
    rows, plain_proba = [], {"clean": [], "noisy": []}
    for seed in seeds:
        idx = subsample(list(range(len(pool))), [y for _, y in pool], labels, seed)
        train_rows = [pool[i] for i in idx]
        for trick in TRICKS[:3]:
            data = augment(train_rows, 1, noise, seed) if trick == "+ augmentation" else train_rows
            torch.manual_seed(seed)                                  # the same head for every trick
            clf = GPTForSequenceClassification(copy.deepcopy(gpt), num_labels, pad_id)
            wrap = (lambda f, clf=clf: fgm(f, clf.gpt.transformer.wte, epsilon)) if "FGM" in trick else None
            t0 = time.perf_counter()
            train_head(clf, encode(tok, [t for t, _ in data], max_len), [y for _, y in data], cfg, pad_id,
                       steps=steps, learning_rate=learning_rate, seed_offset=seed, wrap_loss=wrap)
            seconds = time.perf_counter() - t0
            row = {"trick": trick, "seed": seed, "seconds": seconds}
            for name, seqs in enc.items():
                proba = predict_proba(clf, seqs, pad_id)
                row[name] = f1_score(y_test, proba.argmax(-1).tolist(), average="macro", zero_division=0)
                if trick == TRICKS[0]:
                    plain_proba[name].append(proba)
            rows.append(row)
    ens = {"trick": TRICKS[3], "seed": None,
           "seconds": sum(r["seconds"] for r in rows if r["trick"] == TRICKS[0])}
    for name, probas in plain_proba.items():
        ens[name] = f1_score(y_test, torch.stack(probas).mean(0).argmax(-1).tolist(), average="macro",
                             zero_division=0)
    return rows + [ens]
