"""Does pre-training help? Chapter 03 measures it two ways. The plainest: freeze a model, take the
mean of its last hidden states over each text as features, and fit a logistic regression on a
growing number of labelled examples ("a linear probe"). The same probe on a randomly initialised copy
of the same architecture is the control: whatever the pre-trained features add over it is what
pre-training taught. Several seeds (different labelled subsets) give error bars. The second is
fine-tuning itself: the same steps from pre-trained and from random weights, over a growing label
budget (finetune_curve). Both run on a split that no seed changes, heldout_split: its test texts are
the ones data.heldout() keeps out of the broad model's pre-training."""
from __future__ import annotations

import copy
import math
import time
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
        h = model(x.to(device), attention_mask=mask.to(device), logits=False).hidden_states.float()
        out[rows] = mean_pool(h, mask.to(device)).cpu()
    model.train(was)
    return out.numpy()


def fit_probe(X, y):
    """The linear probe: a class-balanced logistic regression on frozen features X (N, C), fitted.
    Dense features (a model's states) are standardised first: their columns differ in scale by orders
    of magnitude, and on the raw states the solver needs ten times the time to converge (on 8,450
    movie snippets, 4.5 s against 0.5 s, the same macro-F1 to within 0.002). Sparse TF-IDF rows are
    already on one scale and go in as they are."""
    from scipy.sparse import issparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    lr = LogisticRegression(max_iter=3000, class_weight="balanced")
    return (lr if issparse(X) else make_pipeline(StandardScaler(), lr)).fit(X, y)


def probe_curve(features: Dict[str, tuple], y_train: Sequence[int], y_test: Sequence[int],
                budgets: Sequence[Optional[int]], seeds: Sequence[int]) -> list:
    """features {name: (X_train, X_test)} -> rows {features, labels, seed, accuracy, macro_f1}: a
    class-balanced logistic regression trained on a stratified subset of `labels` training examples
    (None = all), one row per (name, budget, seed). The subsets are the same for every name. A subset
    that another seed already drew (every seed draws all labels at None) is fitted once: the same
    rows give the same probe, so its rows repeat that fit's scores (standard error 0)."""
    from sklearn.metrics import accuracy_score, f1_score

    from .tasks import subsample
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    rows, fitted = [], {}
    for n in budgets:
        for seed in seeds:
            idx = subsample(list(range(len(y_train))), y_train.tolist(), n, seed)
            for name, (X_tr, X_te) in features.items():
                key = (name, tuple(idx))
                if key not in fitted:
                    p = fit_probe(X_tr[idx], y_train[idx]).predict(X_te)
                    fitted[key] = {"accuracy": accuracy_score(y_test, p),
                                   "macro_f1": f1_score(y_test, p, average="macro", zero_division=0)}
                rows.append({"features": name, "labels": len(idx), "seed": seed, **fitted[key]})
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


def at(summary: Sequence[dict], name: str, key: str = "mean") -> list:
    """One line of a summarize() table: its `key` ("mean" or "se") at each label budget, smallest first."""
    return [r[key] for r in sorted((r for r in summary if r["features"] == name), key=lambda r: r["labels"])]


def gap(summary: Sequence[dict], a: str, b: str) -> tuple:
    """(a's mean minus b's, two standard errors of that difference) at each label budget, smallest first."""
    return ([x - y for x, y in zip(at(summary, a), at(summary, b))],
            [2 * math.hypot(x, y) for x, y in zip(at(summary, a, "se"), at(summary, b, "se"))])


def curves(summary: Sequence[dict]) -> tuple:
    """(label budgets, {line: means}, {line: two standard errors}) of a summarize() table whose lines
    share their budgets: the arguments viz.plot_curves takes."""
    names = list(dict.fromkeys(r["features"] for r in summary))
    return (sorted({r["labels"] for r in summary}), {n: at(summary, n) for n in names},
            {n: [2 * e for e in at(summary, n, "se")] for n in names})


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
                   learning_rate: Optional[float] = None, pool_states: str = "last",
                   max_len: Optional[int] = None, group_by_length: bool = True) -> list:
    """inits {name: () -> GPT} -> rows {features, labels, seed, accuracy, macro_f1}: for each budget
    and seed, a stratified subset of the (text, label) pool fine-tunes a fresh sequence classifier on
    each init (the whole model, the same steps, batches and head initialisation), scored on test.
    pool_states: the classifier reads the "last" token's state or the "mean" of all of them. Texts are
    cut to max_len tokens (default cfg.block_size). Training batches group texts of like length
    (tasks.train_head's group_by_length), which saves a third of the work on movie snippets."""
    from sklearn.metrics import accuracy_score, f1_score

    from .tasks import GPTForSequenceClassification, encode, predict, subsample, train_head
    pad_id = tok.token_to_id("<|pad|>")
    max_len = max_len or cfg.block_size
    seqs = encode(tok, [t for t, _ in pool], max_len)
    ys = [y for _, y in pool]
    test_seqs, y_test = encode(tok, [t for t, _ in test], max_len), [y for _, y in test]
    rows = []
    for n in budgets:
        for seed in seeds:
            idx = subsample(list(range(len(pool))), ys, n, seed)
            for name, make in inits.items():
                gpt = make()
                torch.manual_seed(seed)                    # the same head for every init
                model = GPTForSequenceClassification(gpt, num_labels, pad_id, pool=pool_states)
                train_head(model, [seqs[i] for i in idx], [ys[i] for i in idx], cfg, pad_id, steps=steps,
                           learning_rate=learning_rate, seed_offset=seed, group_by_length=group_by_length)
                p = predict(model, test_seqs, pad_id).tolist()
                rows.append({"features": name, "labels": len(idx), "seed": seed,
                             "accuracy": accuracy_score(y_test, p),
                             "macro_f1": f1_score(y_test, p, average="macro", zero_division=0)})
    return rows


# ---------------------------------------------------------------- which parameters to fine-tune

STRATEGIES = ("head only", "top block + head", "all layers", "LoRA r=8 + head", "IA3 + head")


def strategy_classifier(gpt, strategy: str, num_labels: int, pad_id: int, lora_rank: int = 8):
    """A sequence classifier on a COPY of gpt in which only `strategy`'s parameters train (the head
    always does): the head alone, the last transformer block and final LayerNorm too, everything,
    LoRA adapters on the attention and projection matrices (peft), or IA3's learned rescaling of
    keys, values and the feed-forward input (peft: the second parameter-efficient method)."""
    import peft

    from .lora import add_lora
    from .tasks import GPTForSequenceClassification
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    body = copy.deepcopy(gpt)
    if strategy.startswith("LoRA"):
        body = add_lora(body, r=lora_rank, copy_model=False)
    elif strategy.startswith("IA3"):
        body = peft.get_peft_model(body, peft.IA3Config(target_modules=["c_attn", "mlp.c_proj"],
                                                        feedforward_modules=["mlp.c_proj"]))
    else:
        for p in body.parameters():
            p.requires_grad = strategy == "all layers"
        if strategy == "top block + head":
            for p in [*body.transformer.h[-1].parameters(), *body.transformer.ln_f.parameters()]:
                p.requires_grad = True
    return GPTForSequenceClassification(body, num_labels, pad_id)


def compare_strategies(gpt, tok, train_rows: Sequence, val_rows: Sequence, test_rows: Sequence, num_labels: int,
                       cfg, strategies: Sequence[str] = STRATEGIES, steps: Optional[int] = None,
                       learning_rates: Optional[Dict[str, float]] = None, group_by_length: bool = True) -> list:
    """One fine-tuning run per strategy on the same (text, label) rows, batches and head initialisation:
    rows {strategy, trainable, total, state_mb, seconds, macro_f1, history, model}. The History has the
    validation loss on val_rows every cfg.eval_interval steps (to see whether training has flattened).
    Training batches group texts of like length (tasks.train_head's group_by_length)."""
    from sklearn.metrics import f1_score

    from .lora import param_counts, training_state_bytes
    from .tasks import encode, predict, train_head
    pad_id = tok.token_to_id("<|pad|>")
    enc = {name: (encode(tok, [t for t, _ in rows], cfg.block_size), [y for _, y in rows])
           for name, rows in (("train", train_rows), ("val", val_rows), ("test", test_rows))}
    out = []
    for strategy in strategies:
        torch.manual_seed(cfg.seed)                        # the same head for every strategy
        clf = strategy_classifier(gpt, strategy, num_labels, pad_id, cfg.lora_rank)
        trainable, total = param_counts(clf)
        lr = (learning_rates or {}).get(strategy)
        t0 = time.perf_counter()
        hist = train_head(clf, *enc["train"], cfg, pad_id, steps=steps, learning_rate=lr, val=enc["val"],
                          group_by_length=group_by_length)
        seconds = time.perf_counter() - t0
        pred = predict(clf, enc["test"][0], pad_id).tolist()
        out.append({"strategy": strategy, "trainable": trainable, "total": total,
                    "state_mb": training_state_bytes(clf) / 2**20, "seconds": seconds,
                    "macro_f1": f1_score(enc["test"][1], pred, average="macro", zero_division=0),
                    "history": hist, "model": clf})
    return out


# ---------------------------------------------------------------- the other tasks: NER and dialogue

def _subset(n_items: int, n: Optional[int], seed: int) -> list:
    """n of range(n_items) drawn by seed (sorted), or all of them when n is None or too large."""
    import random
    if not n or n >= n_items:
        return list(range(n_items))
    return sorted(random.Random(seed).sample(range(n_items), n))


def tagger_curve(inits: Dict[str, Callable], tok, pool: Sequence, test: Sequence, tag_names: Sequence[str],
                 budgets: Sequence[Optional[int]], seeds: Sequence[int], cfg, max_len: Optional[int] = None,
                 steps: Optional[int] = None, learning_rate: Optional[float] = None,
                 group_by_length: bool = True) -> list:
    """Named entities, pre-trained against random: pool/test [(chars, BIO tags)] -> rows {features,
    labels, seed, entity_f1, token_accuracy}. For each budget and seed, a random subset of `labels`
    training sentences fine-tunes a fresh token classifier on each init (the whole model, the same
    steps, batches and head), and builds the dictionary tagger (tasks.dictionary_tagger) from the
    same sentences: the baseline that knows exactly the labels the models saw. Every tagger is scored
    on the same test characters (sentences cut to max_len tokens, default cfg.block_size // 2); rows
    also hold recall_seen / recall_unseen (tasks.recall_by_novelty: entities whose string the subset's
    labels contain, or not) and unseen_share. Training batches group sentences of like length
    (tasks.train_head's group_by_length)."""
    from .tasks import (IGNORE_INDEX, GPTForTokenClassification, align_token_labels, dictionary_tagger,
                        entity_spans, ner_scores, predict, recall_by_novelty, train_head, word_tags)
    max_len = max_len or cfg.block_size // 2
    pad_id, label2id = tok.token_to_id("<|pad|>"), {t: i for i, t in enumerate(tag_names)}
    enc = {}                                   # pool index -> (ids, labels), only the sentences a subset draws

    def encoded(i):
        if i not in enc:
            enc[i] = align_token_labels(*pool[i], tok, label2id, max_len)
        return enc[i]
    enc_test = [align_token_labels(c, t, tok, label2id, max_len) for c, t in test]
    gold = [[tag_names[y] for y in l if y != IGNORE_INDEX] for _, l in enc_test]
    rows = []
    for n in budgets:
        for seed in seeds:
            idx = _subset(len(pool), n, seed)
            dict_tag = dictionary_tagger([pool[i] for i in idx])
            known = {"".join(pool[i][0][s:e]) for i in idx for s, e, _ in entity_spans(pool[i][1])}
            preds = {"dictionary of the same sentences": [dict_tag(c[:len(g)]) for (c, _), g in zip(test, gold)]}
            subset = [encoded(i) for i in idx]
            for name, make in inits.items():
                torch.manual_seed(seed)                    # the same head for every init
                tagger = GPTForTokenClassification(make(), len(tag_names), pad_id)
                train_head(tagger, [ids for ids, _ in subset], [l for _, l in subset], cfg, pad_id,
                           steps=steps, learning_rate=learning_rate, seed_offset=seed,
                           group_by_length=group_by_length)
                out = predict(tagger, [ids for ids, _ in enc_test], pad_id)
                preds[name] = word_tags(out, [l for _, l in enc_test], tag_names)[1]
            for name, p in preds.items():
                novel = recall_by_novelty([c for c, _ in test], gold, p, known)
                rows.append({"features": name, "labels": len(idx), "seed": seed, **ner_scores(gold, p),
                             "recall_seen": novel["seen"], "recall_unseen": novel["unseen"],
                             "unseen_share": novel["unseen_share"]})
    return rows


def dialogue_heldout_split(pairs: Sequence) -> tuple:
    """(pool, test) of dialogue pairs for transfer: test = the pairs whose question data.heldout()
    keeps out of the broad model's pre-training, less any whose question (after tasks.normalize)
    also occurs in the pool; repeated pairs are kept once on each side."""
    from ..data import heldout
    from .tasks import normalize, unique_pairs
    unique = unique_pairs(pairs)
    pool = [p for p in unique if not heldout(p[0])]
    asked = {normalize(p[0]) for p in pool}
    return pool, [p for p in unique if heldout(p[0]) and normalize(p[0]) not in asked]


def dialogue_curve(inits: Dict[str, Callable], tok, pool: Sequence, test: Sequence,
                   budgets: Sequence[Optional[int]], seeds: Sequence[int], cfg, steps: Optional[int] = None,
                   learning_rate: Optional[float] = None) -> list:
    """Dialogue, pre-trained against random: rows {features, labels, seed, loss} where loss is the
    held-out cross-entropy (nats per token) on test's 'Q: ...\\nA: ...' stream after fine-tuning each
    init with the language-model loss on a random subset of `labels` pool pairs (the same steps,
    windows and learning rate for every init; tasks.dialogue_model's recipe)."""
    from ..train import batch_fn, stream_loss, train
    from .tasks import dialogue_stream
    test_ids = dialogue_stream(tok, test)
    rows = []
    for n in budgets:
        for seed in seeds:
            ids = dialogue_stream(tok, [pool[i] for i in _subset(len(pool), n, seed)])
            for name, make in inits.items():
                gpt = make()
                train(gpt, batch_fn(ids, cfg.block_size, cfg.finetune_batch_size, torch.Generator().manual_seed(seed)),
                      cfg, max_steps=steps or cfg.finetune_steps, learning_rate=learning_rate or cfg.finetune_lr,
                      progress=False)
                loss = stream_loss(gpt, test_ids, block_size=cfg.block_size, dtype=cfg.dtype)[0]
                rows.append({"features": name, "labels": min(n or len(pool), len(pool)), "seed": seed, "loss": loss})
    return rows
