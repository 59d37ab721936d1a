"""Prompting and generation measured on the book's small models: a tiny GPT pre-trained on
synthetic additions (zero-/few-shot, with and without worked steps = chain-of-thought), and the
effect of sampling controls (distinct-n, perplexity under the model)."""
from __future__ import annotations

import random
from types import SimpleNamespace
from typing import List, Optional, Sequence

import torch

from ..config import Profile
from ..generate import generate, generate_text, left_pad
from ..model import GPT, IGNORE_INDEX

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
        ex, n = [], rng.randint(1, 8)
        while len(ex) < n:
            a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
            if not held_out(a, b):
                ex.append(example(a, b, steps))
        lines.append(SEP.join(ex))
    return "\n".join(lines) + "\n"



# The arithmetic GPT and its training recipe; the steps come from the profile (cfg.arith_steps).
# Measured on 2 CPU cores (quick, seed 1337): the model learns to add only after a sudden drop of the
# loss, which this recipe reaches within 2000 steps; with 1500 steps held-out worked-step accuracy
# stayed near 2%, and with the loss on every character (not only answers) about 50% instead of 75%.
ARITH_MODEL = dict(block_size=128, n_layer=2, n_head=4, n_embd=64, dropout=0.0)
ARITH_RECIPE = dict(n_lines=20_000, batch_size=16, learning_rate=6e-3, max_operand=99)


def answer_targets(text: str) -> torch.Tensor:
    """encode(text) with every character that is not part of an answer set to IGNORE_INDEX. The answer of
    an example is what follows its '=' or ':' (the worked steps and the sum) up to and including
    the ';' or newline that ends it; the operands are random, so there is nothing to learn there."""
    ids, inside = encode(text), False
    for i, c in enumerate(text):
        keep = inside
        inside = (inside or c in "=:") and c not in SEP + "\n"
        if not keep:
            ids[i] = IGNORE_INDEX
    return torch.tensor(ids)


def pretrain_arithmetic(cfg: Profile, steps: int, progress: bool = False):
    """A tiny character-level GPT (ARITH_MODEL) trained with gptbook.train on arithmetic_corpus, the
    loss on the answers only (answer_targets). -> (model, History)"""
    from ..train import batch_fn, train
    r = ARITH_RECIPE
    text = arithmetic_corpus(r["n_lines"], cfg.seed, r["max_operand"])
    ids, tgt = torch.tensor(encode(text)), answer_targets(text)
    cut, T, B = int(0.95 * len(ids)), ARITH_MODEL["block_size"], r["batch_size"]
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model_config(vocab_size=len(VOCAB), **ARITH_MODEL))
    g = torch.Generator().manual_seed(cfg.seed)
    hist = train(model, batch_fn(ids[:cut], T, B, g, targets=tgt[:cut]), cfg, max_steps=steps,
                 learning_rate=r["learning_rate"], progress=progress,
                 get_val_batch=batch_fn(ids[cut:], T, B, torch.Generator().manual_seed(1), targets=tgt[cut:]))
    return model.cpu().eval(), hist


def arithmetic_gpt(cfg: Profile, progress: bool = False):
    """pretrain_arithmetic(cfg, cfg.arith_steps), cached next to the book's GPT. -> (model, History)"""
    from ..train import History, cached_model, model_path

    def build():
        model, hist = pretrain_arithmetic(cfg, cfg.arith_steps, progress=progress)
        return model, {"history": hist.to_dict()}
    path = model_path("arith", cfg.arith_steps, *ARITH_MODEL.values(), *ARITH_RECIPE.values(), cfg.seed, cfg.dtype)
    model, extra = cached_model(path, build, "the arithmetic model",
                                rebuild="the next run of chapter 04 trains it again")
    return model, History(**extra["history"])


def few_shot_prompt(question: tuple, shots: Sequence[tuple], steps: bool) -> str:
    """k solved examples then the open question: '3+4=7;12+5=17;47+38=' (or with ':' for steps)."""
    a, b = question
    head = "".join(example(x, y, steps) + SEP for x, y in shots)
    return head + f"{a}+{b}" + (":" if steps else "=")


def prompt_ids(prompt: str) -> List[int]:
    """encode(prompt) after a newline: every training line starts after one, so a prompt is a line start."""
    return encode("\n" + prompt)


# the character vocabulary as the tokenizer gptbook.generate.generate_text takes, prompts as line starts
PROMPT_CHARS = SimpleNamespace(encode=prompt_ids, decode=decode)


def first_example(continuation: str) -> str:
    """A generated continuation up to the end of its example (';' or newline)."""
    return continuation.split(SEP)[0].split("\n")[0]


def parse_answer(continuation: str) -> Optional[int]:
    """The number after the last '=' before the end of the example (';' or newline); None if none."""
    tail = first_example(continuation).rsplit("=", 1)[-1]
    return int(tail) if tail.isdigit() else None


def few_shot_questions(n_shots: int, steps: bool, n_questions: int, digits: int = 2, seed: int = 0,
                       max_operand: int = 99) -> List[tuple]:
    """[(prompt, (a, b))]: additions of two `digits`-digit numbers that training never showed
    (held-out pairs, or operands above max_operand), each after n_shots solved examples of the
    same size (never held-out pairs). The same seed gives the same questions for every n_shots
    and format, and the same shots for both formats, so the comparisons are paired."""
    q_rng, s_rng = random.Random(seed), random.Random(seed + 1)
    lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10 ** digits - 1
    out = []
    while len(out) < n_questions:
        a, b = q_rng.randint(lo, hi), q_rng.randint(lo, hi)
        if max(a, b) <= max_operand and not held_out(a, b):
            continue                       # a pair training has seen: not a question
        shots = []
        while len(shots) < n_shots:
            x, y = s_rng.randint(lo, hi), s_rng.randint(lo, hi)
            if not held_out(x, y):
                shots.append((x, y))
        out.append((few_shot_prompt((a, b), shots, steps), (a, b)))
    return out


@torch.no_grad()
def complete(model, prompt: str, max_new_tokens: int = 32) -> str:
    """The model's greedy continuation of one prompt, up to the end of the example."""
    return first_example(generate_text(model, PROMPT_CHARS, prompt, max_new_tokens, temperature=0.0))


@torch.no_grad()
def few_shot_accuracy(model, n_shots: int, steps: bool, n_questions: int, digits: int = 2,
                      seed: int = 0, max_operand: int = 99) -> float:
    """Greedy exact-match accuracy on few_shot_questions. Raises ValueError when a prompt and its
    full answer do not fit in the model's block_size (a cut-off answer would count as wrong)."""
    qs = few_shot_questions(n_shots, steps, n_questions, digits, seed, max_operand)
    seqs = [prompt_ids(p) for p, _ in qs]
    # room for the longest answer (what follows the question's '=' or ':') and the ';' after it
    new = max(len(example(a, b, steps)) - len(f"{a}+{b}") for _, (a, b) in qs)
    need = max(len(s) for s in seqs) + new
    if need > model.config.block_size:
        raise ValueError(f"{n_shots} shots and the answer need {need} characters; "
                         f"block_size={model.config.block_size}")
    correct = 0
    for i in range(0, len(seqs), 64):
        idx, mask = left_pad(seqs[i:i + 64], pad_id=0)
        out = generate(model, idx, new, temperature=0.0, attention_mask=mask)
        for row, (_, (a, b)) in zip(out[:, idx.size(1):].tolist(), qs[i:i + 64]):
            correct += parse_answer(decode(row)) == a + b
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
    from ..mathx import token_logprobs
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
