"""Recommendation by text similarity (document 000 §6.3): items described by text, synthetic users
who prefer topics, a nearest-items recommender over item vectors (sentence embeddings, or the book
GPT's mean-pooled hidden states), a popularity baseline, hit-rate@k on held-out interactions and a
paired comparison of two recommenders with its standard error."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F


@dataclass
class Users:
    histories: List[List[int]]     # item ids each user interacted with, in order (training part)
    held_out: List[int]            # the next interaction of each user (the test target)
    liked_topics: List[List[str]]  # what the generator made each user prefer (for the reader)


def item_popularity(n_items: int, seed: int, alpha: float = 1.0) -> torch.Tensor:
    """Zipf-like weights 1/rank^alpha over a random ranking of the items. -> (n_items,)"""
    ranks = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed)) + 1
    return 1.0 / ranks.float() ** alpha


def synthetic_users(item_topics: Sequence[str], n_users: int, n_interactions: int,
                    p_liked: float = 0.8, n_liked: int = 1, seed: int = 0) -> Users:
    """Each user likes `n_liked` random topics; each interaction is, with probability p_liked, an
    item of a liked topic, else any item; items are drawn by popularity (item_popularity), without
    repeats. The last interaction is held out."""
    if n_interactions < 2:
        raise ValueError("need at least 2 interactions per user (history + one held out)")
    rng = random.Random(seed)
    pop = item_popularity(len(item_topics), seed).tolist()
    topics = sorted(set(item_topics))
    by_topic = {t: [i for i, x in enumerate(item_topics) if x == t] for t in topics}
    hist, held, liked = [], [], []
    for _ in range(n_users):
        like = rng.sample(topics, n_liked)
        pool_liked = [i for t in like for i in by_topic[t]]
        seq = []
        while len(seq) < n_interactions:
            pool = pool_liked if rng.random() < p_liked else range(len(item_topics))
            pool = [i for i in pool if i not in seq]
            if not pool:
                pool = [i for i in range(len(item_topics)) if i not in seq]
            seq.append(rng.choices(pool, weights=[pop[i] for i in pool])[0])
        hist.append(seq[:-1])
        held.append(seq[-1])
        liked.append(like)
    return Users(hist, held, liked)


def recommend_similar(item_vecs: torch.Tensor, histories: Sequence[Sequence[int]], k: int) -> torch.Tensor:
    """Score items by cosine to the mean of the user's history vectors; never re-recommend a seen
    item. item_vecs (N, C) unit rows -> (U, k) item ids."""
    profiles = torch.stack([item_vecs[list(h)].mean(0) for h in histories])        # (U, C)
    scores = torch.nn.functional.normalize(profiles, dim=-1) @ item_vecs.T           # (U, N)
    return _top_unseen(scores, histories, k)


def recommend_popular(n_items: int, histories: Sequence[Sequence[int]], k: int) -> torch.Tensor:
    """Baseline: the items most often seen in all training histories, minus the user's own. -> (U, k)"""
    counts = Counter(i for h in histories for i in h)
    pop = torch.tensor([counts.get(i, 0) for i in range(n_items)], dtype=torch.float32)
    # a tiny decreasing tie-break keeps the order deterministic
    pop = pop - torch.arange(n_items) * 1e-6
    return _top_unseen(pop.expand(len(histories), -1).clone(), histories, k)


def _top_unseen(scores: torch.Tensor, histories, k: int) -> torch.Tensor:
    for u, h in enumerate(histories):
        scores[u, list(h)] = float("-inf")
    return torch.topk(scores, k, dim=1).indices


def hits(recs: torch.Tensor, held_out: Sequence[int], k: int) -> torch.Tensor:
    """(U,) bool: is each user's held-out item among their first k recommendations?"""
    t = torch.as_tensor(list(held_out))
    return (recs[:, :k] == t[:, None]).any(1)


def hit_rate(recs: torch.Tensor, held_out: Sequence[int], k: int) -> float:
    """Share of users whose held-out item is among their first k recommendations."""
    return hits(recs, held_out, k).float().mean().item()


def compare(recs_a: torch.Tensor, recs_b: torch.Tensor, held_out: Sequence[int], k: int) -> Tuple[float, float]:
    """Paired comparison on the same users: (hit-rate@k of a minus that of b, its standard error).
    The error comes from the per-user differences (each -1, 0 or 1), so users that both recommenders
    get right, or both miss, add no noise: it is smaller than the two rates' errors combined."""
    d = hits(recs_a, held_out, k).float() - hits(recs_b, held_out, k).float()     # (U,)
    return d.mean().item(), (d.std() / len(d) ** 0.5).item()


@torch.no_grad()
def gpt_item_vectors(gpt, tok, texts: Sequence[str], batch_size: int = 32, center: bool = True) -> torch.Tensor:
    """Item vectors from a GPT: the final hidden states of each text's tokens (book tokenizer, the
    first block_size tokens), averaged over the real tokens, then (center=True) minus the mean
    over all items, to unit length. The centring matters: the pooled states of a language model
    share a large common direction, which makes every pair of texts look alike under cosine.
    list of N strings -> (N, n_embd)"""
    from ..finetune.tasks import encode
    from ..finetune.transfer import pooled_features
    seqs = encode(tok, list(texts), gpt.config.block_size)
    v = torch.from_numpy(pooled_features(gpt, seqs, 0, batch_size=batch_size, by_length=True))   # (N, C)
    return F.normalize(v - v.mean(0) if center else v, dim=-1)
