"""Recommendation by text similarity (document 000 §6.3): items described by text, synthetic users
who prefer topics, a nearest-items recommender over sentence embeddings, a popularity baseline,
hit-rate@k on held-out interactions."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import List, Sequence

import torch


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


def hit_rate(recs: torch.Tensor, held_out: Sequence[int], k: int) -> float:
    """Share of users whose held-out item is among their first k recommendations."""
    t = torch.as_tensor(list(held_out))
    return (recs[:, :k] == t[:, None]).any(1).float().mean().item()
