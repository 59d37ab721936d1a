"""From GPT to a chat model: instruction tuning with a response-only loss, and DPO.

Instruction tuning (supervised fine-tuning, SFT): train on prompt/response pairs, but count the
loss only on the response tokens (labels -100 on the prompt, which `GPT.forward` ignores).
DPO (Rafailov et al. 2023): given a prompt x, a preferred answer y_w and a worse one y_l,
    loss = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])
where pi_ref is a frozen copy of the starting (SFT) model.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..generate import generate_text
from ..mathx import sequence_logprob
from ..model import IGNORE_INDEX      # the label value GPT.forward (and F.cross_entropy) skips
from ..train import random_batches

TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def format_prompt(prompt: str) -> str:
    """The instruction template; the model learns to answer after '### Response:'."""
    return TEMPLATE.format(prompt=prompt)


def split_pairs(pairs: Sequence, frac_val: float = 0.1, seed: int = 0):
    """(train, val) split by question, so no held-out prompt was seen in training: the split of the
    dialogue fine-tuning (tasks.question_split: repeated pairs kept once, questions compared after
    normalisation, a conversation's turns on one side). On the chatterbot pairs with the same seed
    it is tasks.dialogue_splits, so every section of chapter 03 holds out the same questions."""
    from .tasks import question_split
    return question_split(pairs, frac_val, seed)


def encode_pair(tok, prompt: str, response: str, block_size: int, mask_prompt: bool = True):
    """-> (ids, labels) lists of equal length <= block_size + 1; labels = ids, or IGNORE_INDEX on the
    prompt when mask_prompt. The response ends with <|endoftext|> so the model learns to stop."""
    eos = tok.token_to_id("<|endoftext|>")
    p = tok.encode(format_prompt(prompt)).ids
    r = tok.encode(response).ids + [eos]
    ids = (p + r)[:block_size + 1]
    labels = ([IGNORE_INDEX] * len(p) if mask_prompt else p) + r
    return ids, labels[:block_size + 1]


def collate(examples, pad_id: int):
    """[(ids, labels)] -> x (B, T), y (B, T): right-padded, y shifted by one (next-token targets).
    Padding sits after the real tokens, so with a causal mask no real token ever sees it."""
    T = max(len(ids) for ids, _ in examples) - 1
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, labels) in enumerate(examples):
        n = len(ids) - 1
        x[i, :n] = torch.tensor(ids[:-1])
        y[i, :n] = torch.tensor(labels[1:])
    return x, y


def batch_fn(examples, batch_size: int, pad_id: int, generator: torch.Generator) -> Callable:
    """Random batches of encoded examples for `train.train`: get_batch(device) -> (x, y)."""
    if not examples:
        raise ValueError("no examples to batch")
    return random_batches(len(examples), batch_size, generator,
                          lambda ix: collate([examples[i] for i in ix], pad_id))


@torch.no_grad()
def mean_loss(model, examples, pad_id: int, batch_size: int = 32, device="cpu") -> float:
    """Cross-entropy per counted (label != -100) token over all examples, in eval mode."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        x, y = collate(examples[i:i + batch_size], pad_id)
        x, y = x.to(device), y.to(device)
        n = int((y != IGNORE_INDEX).sum())
        total += model(x, y).loss.item() * n
        count += n
    model.train(was)
    return total / max(count, 1)


def dpo_loss(pi_w: torch.Tensor, pi_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor,
             beta: float = 0.1):
    """DPO loss from sequence log-probs (each (B,)). Returns (mean loss, rewards_w, rewards_l),
    where reward = beta * (log pi - log pi_ref) is DPO's implicit reward."""
    rw, rl = beta * (pi_w - ref_w), beta * (pi_l - ref_l)
    return -F.logsigmoid(rw - rl).mean(), rw.detach(), rl.detach()


def preference_pairs(pairs: Sequence, seed: int = 0, rejected: str = "mismatched"):
    """[(prompt, chosen, rejected)]: chosen = the real answer; rejected = "mismatched": the answer to
    a prompt of another topic, or "shuffled": the real answer's words in random order. (Real
    preference data has people rank two plausible answers, a much harder contrast.)"""
    if rejected not in ("mismatched", "shuffled"):
        raise ValueError(f"rejected must be 'mismatched' or 'shuffled', got {rejected!r}")
    rng = random.Random(seed)
    out = []
    for prompt, answer, topic in pairs:
        if rejected == "shuffled":
            words = answer.split()
            bad = words[:]
            for _ in range(10):
                rng.shuffle(bad)
                if bad != words:
                    break
            if bad == words:  # one word, or all words equal: reverse the characters instead
                bad = [answer[::-1]]
            out.append((prompt, answer, " ".join(bad)))
            continue
        while True:
            other = pairs[rng.randrange(len(pairs))]
            if other[2] != topic and other[1] != answer:
                break
        out.append((prompt, answer, other[1]))
    return out


def encode_preferences(tok, prefs, block_size: int):
    """[(prompt, chosen, rejected)] -> [((ids_w, labels_w), (ids_l, labels_l))], prompt masked."""
    return [(encode_pair(tok, p, w, block_size), encode_pair(tok, p, l, block_size))
            for p, w, l in prefs]


def preference_batch_fn(encoded, batch_size: int, pad_id: int, generator: torch.Generator):
    """get_batch(device) -> (x, y) of shape (2B, T): the B chosen rows, then the B rejected rows."""
    def pairs(ix):
        return collate([encoded[i][0] for i in ix] + [encoded[i][1] for i in ix], pad_id)
    return random_batches(len(encoded), batch_size, generator, pairs)


def dpo_loss_fn(ref_model, beta: float = 0.1) -> Callable:
    """A loss_fn(model, x, y) for `train.train` on preference batches (chosen rows, then rejected)."""
    def loss_fn(model, x, y):
        B = x.size(0) // 2
        with torch.no_grad():
            ref = sequence_logprob(ref_model, x, y)
        pi = sequence_logprob(model, x, y)
        return dpo_loss(pi[:B], pi[B:], ref[:B], ref[B:], beta)[0]
    return loss_fn


@torch.no_grad()
def preference_logprobs(model, encoded, pad_id: int, batch_size: int = 32, device="cpu"):
    """log pi(chosen | prompt) and log pi(rejected | prompt) of every encoded pair (response tokens
    only), in eval mode. -> (chosen (N,), rejected (N,))."""
    was = model.training
    model.eval()
    w, l = [], []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i:i + batch_size]
        x, y = collate([c[0] for c in chunk] + [c[1] for c in chunk], pad_id)
        lp = sequence_logprob(model, x.to(device), y.to(device)).float().cpu()
        w.append(lp[:len(chunk)])
        l.append(lp[len(chunk):])
    model.train(was)
    return torch.cat(w), torch.cat(l)


@torch.no_grad()
def preference_metrics(model, ref_model, encoded, pad_id: int, beta: float = 0.1,
                       batch_size: int = 32, device="cpu") -> dict:
    """On held-out pairs: DPO loss, reward accuracy (implicit reward of chosen > rejected), mean
    reward margin and rewards; and the model on its own: how often it gives the chosen answer more
    log-prob than the rejected one, and by how much on average (logprob_margin, nats).
    With ref_model = the starting model, reward_margin = beta * (the change of logprob_margin)."""
    pw, pl = preference_logprobs(model, encoded, pad_id, batch_size, device)
    rw_, rl_ = preference_logprobs(ref_model, encoded, pad_id, batch_size, device)
    loss, rw, rl = dpo_loss(pw, pl, rw_, rl_, beta)
    return {"dpo_loss": loss.item(), "reward_accuracy": (rw > rl).float().mean().item(),
            "reward_margin": (rw - rl).mean().item(), "reward_chosen": rw.mean().item(),
            "reward_rejected": rl.mean().item(),
            "logprob_prefers_chosen": (pw > pl).float().mean().item(),
            "logprob_margin": (pw - pl).mean().item()}


@torch.no_grad()
def respond(model, tok, prompt: str, max_new_tokens: int = 40, device="cpu") -> str:
    """Greedy answer to one instruction, cut at <|endoftext|>."""
    return generate_text(model, tok, format_prompt(prompt), max_new_tokens, temperature=0.0,
                         eos_token_id=tok.token_to_id("<|endoftext|>"), device=device).strip()
