"""Exercises for chapter 03 (fine-tuning): LoRA, instruction loss, LR schedule, pooling, NER spans, F1."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import train
from ..finetune import tasks
from .core import (Incorrect, Problem, _TimeLimit, compare, function_problem, gen, problem_text, problems_of,
                   seeded)


class _RefLoRALinear(nn.Module):
    """base(x) + (alpha / r) * x A^T B^T; base frozen, A small random, B zero (Hu et al. 2021)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base, self.scaling = base, alpha / r
        for p in self.base.parameters():
            p.requires_grad_(False)                       # the pre-trained weight stays fixed
        self.A = nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))  # zero: starts as the base model

    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scaling  # (..., out)


class LoRALinear(Problem):
    """class LoRALinear(nn.Module): LoRALinear(base, r, alpha); frozen base + (alpha/r) * B @ A."""
    name = "LoRALinear"
    reference = _RefLoRALinear
    hints = problem_text("LoRALinear")["hints"]
    configs = [(6, 4, 2, 4.0), (8, 8, 1, 1.0)]     # (d_in, d_out, r, alpha)

    @staticmethod
    def _base(d_in, d_out):
        with seeded(30):                        # the same base layer in the kernel and in the grader
            return nn.Linear(d_in, d_out)

    def _observe(self, cls) -> list:
        out = []
        for cfg in self.configs:
            out.append(self._attempt(lambda: self._probe(cls, *cfg)))
            if "value" not in out[-1]:
                break
        return out

    def _probe(self, cls, d_in, d_out, r, alpha) -> dict:
        """Learner side: build the layer, then record the facts verdict() checks, in its order. An
        exception after construction is recorded as "error" (the facts so far are kept)."""
        base = self._base(d_in, d_out)
        w0 = base.weight.detach().clone()
        layer = self._call(cls, base, r, alpha)      # NotImplementedError / time limit: see _attempt
        facts = {"module": isinstance(layer, nn.Module), "type": type(layer).__name__}
        if not facts["module"]:
            return facts
        step = "reading self.A and self.B"
        try:
            A, B = getattr(layer, "A", None), getattr(layer, "B", None)
            for attr, p in (("A", A), ("B", B)):
                facts[attr] = [isinstance(p, nn.Parameter), list(p.shape) if torch.is_tensor(p) else [],
                               type(p).__name__]
            if not (facts["A"][:2] == [True, [r, d_in]] and facts["B"][:2] == [True, [d_out, r]]):
                return facts                        # verdict() stops at the shapes
            facts["base_frozen"] = not any(p.requires_grad for p in base.parameters())
            facts["ab_trainable"] = bool(A.requires_grad and B.requires_grad)
            facts["B_zero"] = not torch.count_nonzero(B)
            facts["A_nonzero"] = bool(torch.count_nonzero(A))
            x = torch.randn(3, d_in, generator=gen(31))
            with torch.no_grad():
                step = "the forward pass at initialisation"
                facts["out_init"] = self._call(layer, x)
                A.copy_(torch.randn(r, d_in, generator=gen(32)))
                B.copy_(torch.randn(d_out, r, generator=gen(33)))
                step = "the forward pass with random A, B"
                facts["out_random"] = self._call(layer, x)
            step = "backward"
            layer.zero_grad()
            self._call(layer, x).sum().backward()
            facts["grads_ok"] = base.weight.grad is None and A.grad is not None and B.grad is not None
            facts["base_unchanged"] = torch.equal(base.weight.detach(), w0)
        except (NotImplementedError, _TimeLimit, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - reported by verdict() where the fact is needed
            facts["error"] = f"{step} raised {type(e).__name__}: {e}"
        return facts

    def verdict(self, observations: list) -> None:
        for i, (d_in, d_out, r, alpha) in enumerate(self.configs):
            call = f"LoRALinear(nn.Linear({d_in}, {d_out}), r={r}, alpha={alpha})"
            f = self._unpack(observations, i, call)
            if not isinstance(f, dict):
                raise Incorrect("the record of your answer is malformed")

            def fact(key):
                if key not in f:
                    raise Incorrect(f"{call}: {f.get('error', 'the check could not finish')}")
                return f[key]

            if not fact("module"):
                raise Incorrect(f"{call} should be an nn.Module, got {f.get('type')}")
            for attr, shape in (("A", (r, d_in)), ("B", (d_out, r))):
                is_param, got_shape, type_name = fact(attr)
                if not is_param or tuple(got_shape) != shape:
                    raise Incorrect(f"{call}: expected self.{attr} to be an nn.Parameter of shape "
                                    f"{shape}, got {type_name} {tuple(got_shape)}")
            if not fact("base_frozen"):
                raise Incorrect(f"{call}: the base layer's weight and bias must be frozen (requires_grad=False)")
            if not fact("ab_trainable"):
                raise Incorrect(f"{call}: A and B must be trainable")
            if not fact("B_zero") or not fact("A_nonzero"):
                raise Incorrect(f"{call}: initialise B to zeros and A to small random values")
            # the expected outputs are computed here, from this process's own base layer
            base = self._base(d_in, d_out)
            x = torch.randn(3, d_in, generator=gen(31))
            A, B = torch.randn(r, d_in, generator=gen(32)), torch.randn(d_out, r, generator=gen(33))
            with torch.no_grad():
                try:
                    compare(base(x), fact("out_init"))
                except Incorrect as e:
                    raise Incorrect(f"{call}: at initialisation the output must equal base(x): {e}") from None
                try:
                    compare(base(x) + x @ A.T @ B.T * (alpha / r), fact("out_random"))
                except Incorrect as e:
                    raise Incorrect(f"{call} with random A, B: expected base(x) + (alpha/r) x A^T B^T: "
                                    f"{e}") from None
            if not fact("grads_ok"):
                raise Incorrect(f"{call}: backward must give gradients to A and B only")
            if not fact("base_unchanged"):
                raise Incorrect(f"{call}: the base weight must not change")


def _ref_instruction_loss(logits, idx, prompt_lens):
    B, T, V = logits.shape
    targets = idx[:, 1:].clone()                                        # (B, T-1): next tokens
    pos = torch.arange(1, T)[None, :]                                   # position of each target
    targets[pos < torch.as_tensor(prompt_lens)[:, None]] = -100         # prompt tokens: no loss
    # the loss of gptbook.model.GPT.forward: cross-entropy with ignore_index=-100
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), targets.reshape(-1), ignore_index=-100)


@function_problem("masked_instruction_loss", reference=_ref_instruction_loss)
def instruction_loss_cases():
    g = gen(34)
    out = []
    for (B, T, V), prompt_lens in (((2, 6, 9), [2, 4]), ((1, 4, 5), [1]), ((3, 5, 7), [3, 1, 4])):
        out.append((torch.randn(B, T, V, generator=g), torch.randint(V, (B, T), generator=g),
                    torch.tensor(prompt_lens)))
    return out


@function_problem("lr_at", reference=train.lr_at)
def lr_at_cases():
    return [(s, 1e-3, 1e-4, 10, 100) for s in (0, 4, 9, 10, 55, 99, 100, 150)] + [(3, 0.5, 0.0, 2, 6)]


@function_problem("last_token_index", reference=tasks.last_token_index)
def last_token_index_cases():
    return [(torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),),
            (torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]]),), (torch.tensor([[1]]),)]


def _ref_bio_spans(tags):
    from seqeval.metrics.sequence_labeling import get_entities
    return get_entities(list(tags))


@function_problem("bio_spans", reference=_ref_bio_spans)
def bio_spans_cases():
    return [(["B-PER", "I-PER", "O", "B-LOC"],), (["O", "O"],),
            (["B-ORG", "B-ORG", "I-ORG", "O", "I-MISC", "I-MISC", "B-PER", "I-LOC"],)]


def _ref_macro_f1(y_true, y_pred, num_labels):
    from sklearn.metrics import f1_score
    return float(f1_score(y_true, y_pred, labels=list(range(num_labels)), average="macro", zero_division=0))


@function_problem("macro_f1", reference=_ref_macro_f1)
def macro_f1_cases():
    return [([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], 3), ([0, 0, 1, 1], [0, 0, 0, 0], 2), ([2, 2, 0], [2, 2, 0], 3)]


PROBLEMS = [LoRALinear(), instruction_loss_cases, lr_at_cases, last_token_index_cases, bio_spans_cases,
            macro_f1_cases]


def problems():
    """q1, q2, ... for the exercise notebook."""
    return problems_of(PROBLEMS)
