"""Exercises for chapter 04 (applications): retrieval, stream alerts, prompts, top-p, greedy decoding."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import generate, model
from ..apps import monitor
from .core import function_problem, gen, problems_of, seeded


def _ref_cosine_top_k(query, docs, k):
    scores = F.normalize(docs, dim=-1) @ F.normalize(query, dim=-1)   # (N,) cosine similarities
    return torch.topk(scores, min(k, docs.size(0))).indices           # (k,) best first


@function_problem("cosine_top_k", reference=_ref_cosine_top_k)
def cosine_top_k_cases():
    g = gen(40)
    docs = torch.randn(6, 4, generator=g)
    scaled = docs * torch.tensor([[10.0], [0.1], [1.0], [3.0], [0.5], [2.0]])  # length must not matter
    return [(torch.randn(4, generator=g), docs, 3), (docs[2] * 5, scaled, 1),
            (torch.randn(4, generator=g), docs, 10)]


def _ref_rolling_alert(flags, window, threshold):
    share = monitor.rolling_share(flags, window)                   # (N,) share of negatives so far
    return monitor.alert_onsets(share, threshold, window)


@function_problem("rolling_alert", reference=_ref_rolling_alert,
                  uses=(monitor.rolling_share, monitor.alert_onsets))
def rolling_alert_cases():
    return [([0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1], 3, 0.6), ([True] * 5, 2, 0.5),
            ([1, 0, 1, 0, 1, 0], 2, 0.5), ([0, 1, 1, 0, 0, 1, 1, 1], 4, 0.75), ([1], 1, 1.0)]


def _ref_few_shot_prompt(examples, query, instruction):
    shots = "".join(f"Text: {text}\nSentiment: {label}\n\n" for text, label in examples)
    return f"{instruction}\n\n{shots}Text: {query}\nSentiment:"


@function_problem("few_shot_prompt", reference=_ref_few_shot_prompt)
def few_shot_prompt_cases():
    ex = [("I love it", "positive"), ("Terrible service", "negative")]
    return [(ex, "Not bad at all", "Classify the sentiment."), ([], "Hello", "Zero-shot:"),
            (ex[:1], "好极了", "判断情感。")]


def _ref_nucleus_mask(logits, top_p):
    # the rule of gptbook.generate.sample_next: drop a token when the mass BEFORE it reaches top_p
    if top_p >= 1.0:
        return torch.ones_like(logits, dtype=torch.bool)            # no filtering at all
    probs = F.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    drop_sorted = sorted_probs.cumsum(-1) - sorted_probs >= top_p
    return torch.zeros_like(drop_sorted).scatter(-1, order, ~drop_sorted)   # (B, V) True = kept


@function_problem("nucleus_mask", reference=_ref_nucleus_mask, uses=(generate.sample_next,))
def nucleus_mask_cases():
    g = gen(41)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    # top_p values stay clear of the cumulative sums (0.5, 0.8, 0.95), where float rounding decides
    return [(logits, 0.7), (logits, 0.85), (torch.randn(3, 10, generator=g) * 2, 0.9),
            (torch.randn(2, 6, generator=g), 1.0), (torch.randn(1, 5, generator=g), 0.01)]


def _ref_greedy_decode(gpt, idx, max_new_tokens):
    return generate.generate(gpt, idx, max_new_tokens, temperature=0, use_cache=False)


@function_problem("greedy_decode", reference=_ref_greedy_decode, uses=(generate.generate,))
def greedy_decode_cases():
    with seeded(42):
        gpt = model.GPT(model.GPTConfig(vocab_size=20, block_size=12, n_layer=1, n_head=2, n_embd=16)).eval()
    g = gen(43)
    return [(gpt, torch.randint(20, (1, 3), generator=g), 4),
            (gpt, torch.randint(20, (2, 5), generator=g), 3), (gpt, torch.tensor([[1]]), 0)]


PROBLEMS = [cosine_top_k_cases, rolling_alert_cases, few_shot_prompt_cases, nucleus_mask_cases,
            greedy_decode_cases]


def problems():
    """q1, q2, ... for the exercise notebook."""
    return problems_of(PROBLEMS)
