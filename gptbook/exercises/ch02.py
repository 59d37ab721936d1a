"""Exercises for chapter 02 (math): softmax, cross-entropy, perplexity, AR targets, log-likelihood."""
from __future__ import annotations

import torch

from .. import mathx, model
from .core import FunctionProblem


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ref_softmax(x, dim=-1):
    return mathx.softmax(x, dim=dim)


class StableSoftmax(FunctionProblem):
    """softmax(x, dim=-1): exp(x) / sum exp(x), computed without overflow for large inputs."""
    name = "softmax"
    reference = staticmethod(_ref_softmax)
    uses = (mathx.softmax,)
    hints = ["exp(1000) overflows to inf, and inf / inf is nan.",
             "softmax(x) = softmax(x - c) for any constant c: subtract x.amax(dim, keepdim=True) first."]

    def cases(self):
        g = _gen(20)
        return [(torch.randn(3, 5, generator=g), -1), (torch.tensor([[1000.0, 1001.0, 999.0]]), -1),
                (torch.randn(4, 3, generator=g) * 50, 0)]


def _ref_cross_entropy(logits, targets):
    return mathx.cross_entropy(logits, targets)


class CrossEntropy(FunctionProblem):
    """cross_entropy(logits (N, V), targets (N,)) -> scalar tensor, mean of -log softmax[target]."""
    name = "cross_entropy"
    reference = staticmethod(_ref_cross_entropy)
    uses = (mathx.cross_entropy,)
    hints = ["log softmax(z)_y = z_y - logsumexp(z): torch.logsumexp(logits, dim=-1, keepdim=True).",
             "Pick each row's target with logp.gather(-1, targets[:, None]) or "
             "logp[torch.arange(N), targets]; return the NEGATIVE mean."]

    def cases(self):
        g = _gen(21)
        return [(torch.randn(4, 6, generator=g), torch.tensor([0, 5, 2, 2])),
                (torch.randn(1, 3, generator=g) * 30, torch.tensor([1])),
                (torch.randn(6, 10, generator=g), torch.randint(10, (6,), generator=g))]


def _ref_perplexity(logits, targets):
    return mathx.perplexity(logits, targets)


class Perplexity(FunctionProblem):
    """perplexity(logits (B, T, V), targets (B, T)) -> scalar tensor exp(mean cross-entropy)."""
    name = "perplexity"
    reference = staticmethod(_ref_perplexity)
    uses = (mathx.perplexity,)
    hints = ["Perplexity is exp of the mean per-token cross-entropy (in nats).",
             "Flatten: F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)).exp()."]

    def cases(self):
        g = _gen(22)
        uniform = torch.zeros(1, 4, 7)  # uniform over 7 tokens: perplexity exactly 7
        return [(uniform, torch.tensor([[0, 1, 2, 3]])),
                (torch.randn(2, 5, 11, generator=g), torch.randint(11, (2, 5), generator=g)),
                (torch.randn(3, 2, 4, generator=g) * 4, torch.randint(4, (3, 2), generator=g))]


def _ref_next_token_targets(idx):
    return idx[:, :-1], idx[:, 1:]


class NextTokenTargets(FunctionProblem):
    """next_token_targets(idx (B, T)) -> (inputs (B, T-1), targets (B, T-1)): targets shifted by one."""
    name = "next_token_targets"
    reference = staticmethod(_ref_next_token_targets)
    uses = ()
    hints = ["The model at position t predicts token t+1: log p(x) = sum_t log p(x_{t+1} | x_<=t).",
             "inputs drop the last token, targets drop the first: idx[:, :-1], idx[:, 1:]."]

    def cases(self):
        g = _gen(23)
        return [(torch.arange(6)[None],), (torch.randint(50, (3, 9), generator=g),),
                (torch.tensor([[7, 8]]),)]


def _ref_sequence_logprob(logits, idx):
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)          # (B, T-1, V)
    return logp.gather(-1, idx[:, 1:, None]).squeeze(-1).sum(-1)      # (B,)


class SequenceLogprob(FunctionProblem):
    """sequence_logprob(logits (B, T, V), idx (B, T)) -> (B,) sum_t log p(x_t | x_<t), t = 1..T-1."""
    name = "sequence_logprob"
    reference = staticmethod(_ref_sequence_logprob)
    uses = (mathx.token_logprobs,)
    hints = ["logits[:, t] is the model's distribution for token t+1, so use logits[:, :-1] "
             "against idx[:, 1:].",
             "torch.log_softmax(..., dim=-1), then .gather(-1, idx[:, 1:, None]), squeeze and sum over T."]

    def cases(self):
        # logits from a tiny random GPT, as in chapter 02 (mathx.sequence_logprob does the forward)
        torch.manual_seed(24)
        gpt = model.GPT(model.GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8)).eval()
        g = _gen(24)
        out = []
        for shape in ((2, 6), (1, 2), (3, 8)):
            idx = torch.randint(16, shape, generator=g)
            with torch.no_grad():
                out.append((gpt(idx).logits, idx))
        return out


def _ref_entropy(p):
    return mathx.entropy(p)


class Entropy(FunctionProblem):
    """entropy(p (..., V)) -> (...) Shannon entropy in nats, with 0 log 0 = 0."""
    name = "entropy"
    reference = staticmethod(_ref_entropy)
    uses = (mathx.entropy,)
    hints = ["H(p) = -sum_i p_i log p_i over the last axis.",
             "log(0) = -inf and 0 * -inf = nan: clamp p before the log (p.clamp_min(1e-30).log())."]

    def cases(self):
        g = _gen(25)
        return [(torch.softmax(torch.randn(3, 6, generator=g), -1),),
                (torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]),),
                (torch.full((2, 2, 8), 1 / 8),)]


PROBLEMS = [StableSoftmax, CrossEntropy, Perplexity, NextTokenTargets, SequenceLogprob, Entropy]


def problems():
    """q1, q2, ... for the exercise notebook."""
    return [cls() for cls in PROBLEMS]


WRONG = {
    "softmax": lambda x, dim=-1: x.exp() / x.exp().sum(dim, keepdim=True),
    "cross_entropy": lambda logits, targets: -torch.softmax(logits, -1)[torch.arange(len(targets)),
                                                                       targets].log().sum(),
    "perplexity": lambda logits, targets: torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1)),
    "next_token_targets": lambda idx: (idx, idx),
    "sequence_logprob": lambda logits, idx: torch.log_softmax(logits, -1).gather(
        -1, idx[:, :, None]).squeeze(-1).sum(-1),
    "entropy": lambda p: -(p * p.log()).sum(-1),
}
