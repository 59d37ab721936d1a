"""Exercises for chapter 02 (math): softmax, cross-entropy, perplexity, AR targets, log-likelihood."""
from __future__ import annotations

import torch

from .. import mathx, model
from .core import function_problem, gen, problems_of, seeded


@function_problem("softmax", reference=mathx.softmax)
def softmax_cases():
    g = gen(20)
    return [(torch.randn(3, 5, generator=g), -1), (torch.tensor([[1000.0, 1001.0, 999.0]]), -1),
            (torch.randn(4, 3, generator=g) * 50, 0)]


@function_problem("cross_entropy", reference=mathx.cross_entropy)
def cross_entropy_cases():
    g = gen(21)
    return [(torch.randn(4, 6, generator=g), torch.tensor([0, 5, 2, 2])),
            (torch.randn(1, 3, generator=g) * 30, torch.tensor([1])),
            (torch.randn(6, 10, generator=g), torch.randint(10, (6,), generator=g))]


@function_problem("perplexity", reference=mathx.perplexity)
def perplexity_cases():
    g = gen(22)
    uniform = torch.zeros(1, 4, 7)  # uniform over 7 tokens: perplexity exactly 7
    return [(uniform, torch.tensor([[0, 1, 2, 3]])),
            (torch.randn(2, 5, 11, generator=g), torch.randint(11, (2, 5), generator=g)),
            (torch.randn(3, 2, 4, generator=g) * 4, torch.randint(4, (3, 2), generator=g))]


def _ref_next_token_targets(idx):
    return idx[:, :-1], idx[:, 1:]


@function_problem("next_token_targets", reference=_ref_next_token_targets)
def next_token_targets_cases():
    return [(torch.arange(6)[None],), (torch.randint(50, (3, 9), generator=gen(23)),), (torch.tensor([[7, 8]]),)]


def _ref_sequence_logprob(logits, idx):
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)          # (B, T-1, V)
    return logp.gather(-1, idx[:, 1:, None]).squeeze(-1).sum(-1)      # (B,)


@function_problem("sequence_logprob", reference=_ref_sequence_logprob, uses=(mathx.token_logprobs,))
def sequence_logprob_cases():
    # logits from a tiny random GPT, as in chapter 02 (mathx.sequence_logprob does the forward)
    with seeded(24):
        gpt = model.GPT(model.GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8)).eval()
    g = gen(24)
    out = []
    for shape in ((2, 6), (1, 2), (3, 8)):
        idx = torch.randint(16, shape, generator=g)
        with torch.no_grad():
            out.append((gpt(idx).logits, idx))
    return out


@function_problem("entropy", reference=mathx.entropy)
def entropy_cases():
    p = torch.softmax(torch.randn(3, 6, generator=gen(25)), -1)
    return [(p,), (torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]),), (torch.full((2, 2, 8), 1 / 8),)]


PROBLEMS = [softmax_cases, cross_entropy_cases, perplexity_cases, next_token_targets_cases,
            sequence_logprob_cases, entropy_cases]


def problems():
    """q1, q2, ... for the exercise notebook."""
    return problems_of(PROBLEMS)
