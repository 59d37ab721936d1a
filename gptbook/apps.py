"""Prompting and generation measured on the book's small models: a tiny GPT pre-trained on
synthetic additions (zero-/few-shot, with and without worked steps = chain-of-thought), and the
effect of sampling controls (distinct-n, perplexity under the model)."""
from __future__ import annotations

import random
from typing import List, Optional, Sequence

import torch

from .config import Profile
from .generate import generate, left_pad
from .model import GPT

# ---------------------------------------------------------------- a synthetic arithmetic corpus

VOCAB = "\n0123456789+=:,;"          # character-level: id = position in this string
SEP = ";"                             # between examples of one document line


def encode(text: str) -> List[int]:
    """Characters of VOCAB -> ids; anything else raises."""
    bad = set(text) - set(VOCAB)
    if bad:
        raise ValueError(f"characters {sorted(bad)} are not in the arithmetic vocabulary {VOCAB!r}")
    return [VOCAB.index(c) for c in text]


def decode(ids: Sequence[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def worked(a: int, b: int) -> str:
    """Column addition written out, units first: '47+38:7+8=15,4+3+1=8,=85'."""
    steps, carry, i = [], 0, 0
    while a // 10 ** i or b // 10 ** i or i == 0:
        da, db = a // 10 ** i % 10, b // 10 ** i % 10
        s = da + db + carry
        steps.append(f"{da}+{db}" + (f"+{carry}" if carry else "") + f"={s}")
        carry, i = s // 10, i + 1
    return f"{a}+{b}:" + ",".join(steps) + f",={a + b}"


def example(a: int, b: int, steps: bool) -> str:
    """One worked ('47+38:...,=85') or direct ('47+38=85') example."""
    return worked(a, b) if steps else f"{a}+{b}={a + b}"


def held_out(a: int, b: int) -> bool:
    """About 10% of operand pairs never appear in training (used for the test questions)."""
    return (7 * a + 13 * b) % 10 == 0


def arithmetic_corpus(n_lines: int, seed: int, max_operand: int = 99) -> str:
    """Lines of 1-8 examples of ONE format (all direct or all worked), operands 0..max_operand,
    held-out pairs excluded. A line is what a few-shot prompt looks like: shots, then a question."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        steps = rng.random() < 0.5
        ex = []
        while len(ex) < rng.randint(1, 8):
            a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
            if not held_out(a, b):
                ex.append(example(a, b, steps))
        lines.append(SEP.join(ex))
    return "\n".join(lines) + "\n"


def pretrain_arithmetic(cfg: Profile, steps: int, progress: bool = False):
    """A tiny character-level GPT trained on arithmetic_corpus with gptbook.train. -> (model, History)"""
    from .train import batch_fn, train
    ids = torch.tensor(encode(arithmetic_corpus(5_000, cfg.seed)))
    cut = int(0.95 * len(ids))
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model_config(vocab_size=len(VOCAB), block_size=128, n_layer=2, n_head=4,
                                 n_embd=64, dropout=0.0))
    g = torch.Generator().manual_seed(cfg.seed)
    hist = train(model, batch_fn(ids[:cut], 128, 16, g), cfg, max_steps=steps, learning_rate=3e-3,
                 get_val_batch=batch_fn(ids[cut:], 128, 16, torch.Generator().manual_seed(1)),
                 progress=progress)
    return model.cpu().eval(), hist


def arithmetic_gpt(cfg: Profile, progress: bool = False):
    """pretrain_arithmetic(cfg, cfg.arith_steps), cached next to the book's GPT. -> (model, History)"""
    from . import data
    from .train import History, load_checkpoint, save_checkpoint
    path = data.cache_dir() / "models" / f"arith-{cfg.arith_steps}-{cfg.seed}-{cfg.dtype}.pt"
    if path.exists():
        model, extra = load_checkpoint(path)
        return model, History(**extra["history"])
    model, hist = pretrain_arithmetic(cfg, cfg.arith_steps, progress=progress)
    save_checkpoint(model, path, {"history": hist.to_dict()})
    return model, hist


def few_shot_prompt(question: tuple, shots: Sequence[tuple], steps: bool) -> str:
    """k solved examples then the open question: '3+4=7;12+5=17;47+38=' (or with ':' for steps)."""
    a, b = question
    head = "".join(example(x, y, steps) + SEP for x, y in shots)
    return head + f"{a}+{b}" + (":" if steps else "=")


def parse_answer(continuation: str) -> Optional[int]:
    """The number after the last '=' before the end of the example (';' or newline); None if none."""
    text = continuation.split(SEP)[0].split("\n")[0]
    tail = text.rsplit("=", 1)[-1]
    return int(tail) if tail.isdigit() else None


@torch.no_grad()
def few_shot_accuracy(model, n_shots: int, steps: bool, n_questions: int, digits: int = 2,
                      seed: int = 0, max_new_tokens: int = 40) -> float:
    """Greedy accuracy on held-out additions of `digits`-digit numbers with n_shots examples."""
    rng = random.Random(seed)
    lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10 ** digits - 1
    prompts, answers = [], []
    while len(prompts) < n_questions:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if digits == 2 and not held_out(a, b):
            continue                       # in-distribution questions: pairs never trained on
        shots = [(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(n_shots)]
        prompts.append(few_shot_prompt((a, b), shots, steps))
        answers.append(a + b)
    # a newline first: every training line starts after one, so a prompt is a line start
    seqs = [encode("\n" + p) for p in prompts]
    correct = 0
    for i in range(0, len(seqs), 64):
        batch = seqs[i:i + 64]
        T = max(len(s) for s in batch)
        new = min(max_new_tokens, model.config.block_size - T)
        if new <= 0:
            raise ValueError(f"prompt of {T} chars leaves no room in block_size={model.config.block_size}")
        idx, mask = left_pad(batch, pad_id=0)
        out = generate(model, idx, new, temperature=0.0, attention_mask=mask)
        for j, row in enumerate(out[:, T:].tolist()):
            correct += parse_answer(decode(row)) == answers[i + j]
    return correct / n_questions


# ---------------------------------------------------------------- measuring sampling controls

def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """Distinct n-grams / all n-grams over a set of token sequences (Li et al. 2016); 1 = no repeats."""
    grams = [tuple(s[i:i + n]) for s in sequences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def continuation_nll(model, idx: torch.Tensor, start: int) -> torch.Tensor:
    """Mean negative log-likelihood (nats/token) of idx[:, start:] given what precedes it, under the
    model at temperature 1. idx (B, T) -> (B,)"""
    from .mathx import token_logprobs
    return -token_logprobs(model, idx)[:, start - 1:].mean(1)      # (B, T-1) -> (B,)


def sampling_grid(model, prompts_ids: Sequence[Sequence[int]], settings: Sequence[dict],
                  max_new_tokens: int, n_samples: int, seed: int) -> List[dict]:
    """For each setting (kwargs of gptbook.generate.generate): n_samples continuations per prompt,
    their distinct-1/2 and their perplexity under the model. -> one row per setting."""
    rows = []
    for s in settings:
        outs, nll = [], []
        for j, p in enumerate(prompts_ids):
            g = torch.Generator().manual_seed(seed + j)
            idx = torch.tensor([list(p)] * n_samples)
            out = generate(model, idx, max_new_tokens, generator=g, **s)
            outs += out[:, len(p):].tolist()
            nll.append(continuation_nll(model, out, len(p)))
        rows.append({**{k: s.get(k) for k in ("temperature", "top_k", "top_p", "repetition_penalty")},
                     "distinct-1": distinct_n(outs, 1), "distinct-2": distinct_n(outs, 2),
                     "perplexity": torch.cat(nll).mean().exp().item()})
    return rows
