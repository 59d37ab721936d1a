"""Fine-tuning the book's GPT: a sequence-classification head (last non-pad token + linear, the
recipe of HF's GPT2ForSequenceClassification), a token-classification head, the data helpers
they need, the cached movie-review sentiment classifier that chapter 04 imports, and the dialogue
fine-tuning (a split by question, replies that stop at the end of the answer, word-F1, the cached
dialogue model that chapter 04 can load).

Training reuses `gptbook.train.train` with a `loss_fn`, so there is one training loop in the book.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Callable, List, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import SHIPPED, Profile
from ..generate import pad
from ..mathx import mean_pool
from ..model import GPT, IGNORE_INDEX      # the label id the loss skips (padding, later sub-tokens)
from ..train import length_grouped_batches, random_batches

IGNORE = IGNORE_INDEX   # chapter 03 still reads tasks.IGNORE; remove once it reads IGNORE_INDEX

SENTIMENT_LABELS = ("negative", "neutral", "positive")


class HeadOutput(NamedTuple):
    logits: torch.Tensor
    loss: Optional[torch.Tensor] = None


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real (mask=1) position per row, for left OR right padding. (B, T) -> (B,)."""
    T = mask.size(1)
    return (mask.long() * torch.arange(T, device=mask.device)).argmax(-1)


class GPTForSequenceClassification(nn.Module):
    """GPT + linear `score` on the hidden state of the last non-pad token.
    idx (B, T) -> logits (B, num_labels). A causal model's last token is the only one that has
    seen the whole text, so that is the one to classify from (HF's choice). pool="mean" averages
    the states of all real tokens instead: the features a linear probe reads (transfer.pooled_features)."""

    def __init__(self, gpt: GPT, num_labels: int, pad_token_id: int, pool: str = "last"):
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels}")
        if pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")
        self.gpt, self.num_labels, self.pad_token_id, self.pool = gpt, num_labels, pad_token_id, pool
        self.score = nn.Linear(gpt.config.n_embd, num_labels, bias=False)  # HF's name and shape
        nn.init.normal_(self.score.weight, std=0.02)

    def forward(self, idx, attention_mask=None, labels=None) -> HeadOutput:
        mask = attention_mask if attention_mask is not None else (idx != self.pad_token_id).long()
        h = self.gpt(idx, attention_mask=mask, logits=False).hidden_states   # (B, T, C)
        if self.pool == "mean":
            pooled = mean_pool(h, mask)                                # (B, C)
        else:
            pooled = h[torch.arange(idx.size(0), device=idx.device), last_token_index(mask)]  # (B, C)
        logits = self.score(pooled)                                    # (B, num_labels)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return HeadOutput(logits, loss)


class GPTForTokenClassification(nn.Module):
    """GPT + dropout + linear `classifier` at every position. idx (B, T) -> logits (B, T, L).
    Causal: the tag of token t is decided from tokens 0..t only (no right context)."""

    def __init__(self, gpt: GPT, num_labels: int, pad_token_id: int):
        super().__init__()
        self.gpt, self.num_labels, self.pad_token_id = gpt, num_labels, pad_token_id
        self.dropout = nn.Dropout(gpt.config.dropout)
        self.classifier = nn.Linear(gpt.config.n_embd, num_labels)

    def forward(self, idx, attention_mask=None, labels=None) -> HeadOutput:
        mask = attention_mask if attention_mask is not None else (idx != self.pad_token_id).long()
        h = self.gpt(idx, attention_mask=mask, logits=False).hidden_states   # (B, T, C)
        logits = self.classifier(self.dropout(h))                       # (B, T, L)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return HeadOutput(logits, loss)


# ---------------------------------------------------------------- data helpers

def encode(tok, texts: Sequence[str], max_len: int) -> list:
    """Texts -> token-id lists (book tokenizer), cut to the first max_len tokens; never empty."""
    out = []
    for t in texts:
        ids = tok.encode(t).ids[:max_len]
        out.append(ids or [tok.token_to_id("<|endoftext|>")])
    return out


def align_token_labels(words: Sequence[str], tags: Sequence[str], tok, label2id: dict,
                       max_len: int, prefix_space: bool = False, at: str = "last"):
    """Word-level BIO tags -> (ids, labels) at token level: each word is encoded on its own; one of
    its tokens carries the tag, the others get IGNORE_INDEX. at="last" suits a causal model (the last
    token has seen the whole word); at="first" is the usual choice for BERT. Cut to max_len tokens."""
    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags")
    if at not in ("first", "last"):
        raise ValueError(f"at must be 'first' or 'last', got {at!r}")
    ids, labels = [], []
    for i, (w, t) in enumerate(zip(words, tags)):
        piece = tok.encode((" " + w) if prefix_space and i else w).ids or [tok.token_to_id("<|endoftext|>")]
        ids += piece
        rest = [IGNORE_INDEX] * (len(piece) - 1)
        labels += [label2id[t]] + rest if at == "first" else rest + [label2id[t]]
    return ids[:max_len], labels[:max_len]


def batcher(seqs: list, labels: list, batch_size: int, pad_id: int, generator: torch.Generator,
            group_by_length: bool = False):
    """get_batch(device) -> (x (B, T), y): random examples, right-padded. y is (B,) for one label per
    sequence, or (B, T) padded with IGNORE_INDEX for one label per token. group_by_length: examples
    of like length share a batch (train.length_grouped_batches), the same work with less padding."""
    def examples(ix):
        x, _ = pad([seqs[i] for i in ix], pad_id, "right")
        if isinstance(labels[0], (list, tuple)):
            y = torch.full_like(x, IGNORE_INDEX)
            for r, i in enumerate(ix):
                y[r, :len(labels[i])] = torch.tensor(labels[i])
        else:
            y = torch.tensor([labels[i] for i in ix], dtype=torch.long)
        return x, y
    if group_by_length:
        return length_grouped_batches([len(s) for s in seqs], batch_size, generator, examples)
    return random_batches(len(seqs), batch_size, generator, examples)


def train_head(model: nn.Module, seqs: list, labels: list, cfg: Profile, pad_id: int,
               steps: Optional[int] = None, learning_rate: Optional[float] = None,
               progress: bool = False, seed_offset: int = 0, val: Optional[tuple] = None,
               wrap_loss: Optional[Callable] = None, group_by_length: bool = False):
    """Fine-tune a head model (ours or HF's) with gptbook.train.train. Returns a History; with
    val=(seqs, labels) it holds validation losses too (every cfg.eval_interval steps). wrap_loss
    turns the training loss_fn into another (robust.fgm: adversarial training); validation keeps
    the plain loss. group_by_length: training batches of like length (less padding, less time);
    validation batches stay plainly random, so each estimate sees every length."""
    from ..train import train
    g = torch.Generator().manual_seed(cfg.seed + seed_offset)
    get = batcher(seqs, labels, cfg.finetune_batch_size, pad_id, g, group_by_length=group_by_length)
    get_val = None if val is None else batcher(val[0], val[1], cfg.finetune_batch_size, pad_id,
                                               torch.Generator().manual_seed(cfg.seed + seed_offset + 1))

    def loss_fn(m, x, y):
        return m(x, attention_mask=(x != pad_id).long(), labels=y).loss
    return train(model, get, cfg, max_steps=steps or cfg.finetune_steps, get_val_batch=get_val,
                 learning_rate=learning_rate or cfg.finetune_lr, progress=progress,
                 loss_fn=wrap_loss(loss_fn) if wrap_loss else loss_fn,
                 val_loss_fn=loss_fn if wrap_loss else None)


@torch.no_grad()
def predict_proba(model: nn.Module, seqs: list, pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """Sequence heads: (N, num_labels) class probabilities (softmax of the logits), on the CPU."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(seqs), batch_size):
        x, mask = pad(seqs[i:i + batch_size], pad_id, "right")
        out.append(model(x.to(device), attention_mask=mask.to(device)).logits.float().softmax(-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def predict(model: nn.Module, seqs: list, pad_id: int, batch_size: int = 64, device=None,
            by_length: bool = True):
    """Sequence heads: (N,) predicted labels. Token heads: list of (len_i,) predictions. Both in the
    order of seqs; by_length batches sequences of like length together, so a batch pads little (on
    movie snippets it halves the time; the padding is masked, so the predictions are the same)."""
    device = device or next(model.parameters()).device
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i])) if by_length else list(range(len(seqs)))
    out = [None] * len(seqs)
    for i in range(0, len(seqs), batch_size):
        rows = order[i:i + batch_size]
        chunk = [seqs[j] for j in rows]
        x, mask = pad(chunk, pad_id, "right")
        logits = model(x.to(device), attention_mask=mask.to(device)).logits.float().cpu()
        for j, row, s in zip(rows, logits, chunk):
            out[j] = row.argmax(-1) if logits.dim() == 2 else row[:len(s)].argmax(-1)
    if out and out[0].dim() == 0:          # one label per sequence
        return torch.stack(out)
    return out


def stratified_split(labels: Sequence[int], seed: int, val: float = 0.1, test: float = 0.2):
    """Fixed stratified (train, val, test) index lists: every class keeps its share in each part."""
    from sklearn.model_selection import train_test_split
    idx = list(range(len(labels)))
    rest, test_idx = train_test_split(idx, test_size=test, stratify=labels, random_state=seed)
    rest_y = [labels[i] for i in rest]
    train_idx, val_idx = train_test_split(rest, test_size=val / (1 - test), stratify=rest_y,
                                          random_state=seed)
    return sorted(train_idx), sorted(val_idx), sorted(test_idx)


def subsample(idx: list, labels: Sequence[int], n: Optional[int], seed: int) -> list:
    """At most n of idx, stratified by labels (class shares kept); all of idx when n is None."""
    from sklearn.model_selection import train_test_split
    if not n or n >= len(idx):
        return list(idx)
    return sorted(train_test_split(list(idx), train_size=n, stratify=list(labels),
                                   random_state=seed)[0])


def scores(y_true, y_pred, label_names: Sequence[str]) -> dict:
    """accuracy, macro-F1 (every class counts the same: right when one class is rare), confusion."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    y_true, y_pred = list(map(int, y_true)), list(map(int, y_pred))
    labels = list(range(len(label_names)))
    return {"accuracy": accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
            "confusion": confusion_matrix(y_true, y_pred, labels=labels)}


def word_tags(pred_ids, label_ids, id2label: Sequence[str]):
    """Token-level predictions -> word-level (gold, predicted) tag lists, read at the token of each
    word that carries its label (the positions whose label is not IGNORE_INDEX)."""
    gold, pred = [], []
    for p, l in zip(pred_ids, label_ids):
        keep = [i for i, y in enumerate(l) if y != IGNORE_INDEX]
        gold.append([id2label[l[i]] for i in keep])
        pred.append([id2label[int(p[i])] for i in keep])
    return gold, pred


# ---------------------------------------------------------------- generation fine-tuning: dialogue

def normalize(text: str) -> str:
    """Lower case, punctuation (ASCII and CJK) removed, spaces collapsed: the form in which two
    questions (or an answer and its reference) count as the same text."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return re.sub(r"\s+", " ", text).strip()


def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style word-overlap F1 between two English answers (after normalize())."""
    p, r = normalize(pred).split(), normalize(ref).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def dialogue_format(question: str, answer: str = "", history: Sequence = ()) -> str:
    """The prompt format of the dialogue fine-tuning: 'Q: ...\nA: ...'. `history`, earlier
    (question, answer) turns of the same conversation, comes first, one 'Q: ...\nA: ...' each."""
    past = "".join(f"Q: {q}\nA: {a}\n" for q, a in history)
    return past + f"Q: {question}\nA:" + (f" {answer}" if answer else "")


def dialogue_groups(pairs: Sequence) -> List[int]:
    """A group id per pair: pairs whose questions are equal after normalize() share a group, and so
    do the consecutive pairs of one conversation (the answer of pair i is the question of pair i+1,
    same topic: a conversation A, B, C gives the pairs A->B and B->C). Splitting by group keeps every
    question, and every answer that is also a question, on one side."""
    parent = list(range(len(pairs)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    first = {}
    for i, (q, a, *rest) in enumerate(pairs):
        parent[root(i)] = root(first.setdefault(normalize(q), i))
        if i and pairs[i - 1][1] == q and tuple(pairs[i - 1][2:]) == tuple(rest):
            parent[root(i)] = root(i - 1)
    return [root(i) for i in range(len(pairs))]


def conversations(pairs: Sequence) -> List[list]:
    """Runs of consecutive pairs of one conversation (the answer of each is the question of the
    next, same topic), in order: [[pair, pair, ...], ...]."""
    runs = []
    for p in pairs:
        last = runs[-1][-1] if runs else None
        if last is not None and last[1] == p[0] and tuple(last[2:]) == tuple(p[2:]):
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def unique_pairs(pairs: Sequence) -> list:
    """Each (question, answer, ...) once, the first of those equal after normalize(), in order."""
    seen, unique = set(), []
    for p in pairs:
        key = (normalize(p[0]), normalize(p[1]))
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def read_questions(pairs: Sequence) -> set:
    """The questions (after normalize()) that the shipped broad model read: data.broad_corpus keeps a
    pair's 'question\nanswer' unless data.heldout() reserves its question."""
    from ..data import heldout
    return {normalize(p[0]) for p in pairs if not heldout(p[0])}


def question_split(pairs: Sequence, val: float = 0.1, seed: int = 0, unread: bool = False):
    """(train, val) lists of pairs with no question (after normalize()) on both sides: whole groups
    (dialogue_groups) go to validation, in an order shuffled by seed, until it holds `val` of the
    distinct pairs. Repeated pairs are kept once (a pair repeated 121 times would otherwise weigh
    121 times in training, or fill the validation set with one question).
    unread: only groups none of whose questions the broad model read (read_questions) may go to
    validation, so a model fine-tuned from it is scored on questions new to it too; they are about a
    sixth of the distinct pairs, so `val` above that raises."""
    unique = unique_pairs(pairs)
    groups = dialogue_groups(unique)
    order = sorted(set(groups))
    if unread:
        seen = read_questions(pairs)
        spoiled = {g for p, g in zip(unique, groups) if normalize(p[0]) in seen}
        order = [g for g in order if g not in spoiled]
        free = sum(g not in spoiled for g in groups)
        if val * len(unique) > free:
            raise ValueError(f"val={val} asks for {val * len(unique):.0f} held-out pairs, but only {free} pairs "
                             f"have questions the broad model never read; use val <= {free / len(unique):.2f}")
    random.Random(seed).shuffle(order)
    target, held, n = max(1, round(val * len(unique))), set(), 0
    size = Counter(groups)
    for g in order:
        if n >= target:
            break
        held.add(g)
        n += size[g]
    return ([p for p, g in zip(unique, groups) if g not in held],
            [p for p, g in zip(unique, groups) if g in held])


def shared_questions(train: Sequence, val: Sequence) -> set:
    """The questions (after normalize()) that occur on both sides of a split: empty for a clean one."""
    return {normalize(p[0]) for p in train} & {normalize(p[0]) for p in val}


def split_unread(cfg: Profile) -> bool:
    """Whether dialogue_splits holds out only questions cfg's pre-trained model never read: true for the
    shipped broad model, which read the chatterbot pairs data.heldout does not reserve."""
    return cfg.weights == SHIPPED


def dialogue_splits(cfg: Profile, lang: str = "english", val: float = 0.1):
    """chatterbot pairs -> (train, val) lists of (q, a, topic), de-duplicated and split by question
    (question_split, seed from cfg): no held-out question occurs in training. With cfg.weights
    "book-broad" the held-out questions are also ones the broad model never read (unread=True)."""
    from .. import data
    return question_split(data.load_dialogues(lang), val, cfg.seed, unread=split_unread(cfg))


def dialogue_stream(tok, pairs) -> torch.Tensor:
    """All pairs as one token stream, each 'Q: ...\nA: ...' followed by <|endoftext|>. -> (N,)"""
    eos = tok.token_to_id("<|endoftext|>")
    ids = []
    for q, a, *_ in pairs:
        ids += tok.encode(dialogue_format(q, a)).ids + [eos]
    return torch.tensor(ids, dtype=torch.long)


def cut_reply(text: str) -> str:
    """The answer in a generated continuation: leading blanks dropped, cut at the first newline or
    at a 'Q:' that starts the next turn."""
    return re.split(r"\n|Q:", text.lstrip(), maxsplit=1)[0].strip()


@torch.no_grad()
def greedy_replies(model, tok, prompts: Sequence[str], max_new_tokens: int = 32,
                   batch_size: int = 32, device=None) -> List[str]:
    """Greedy one-line replies to prompts (dialogue_format strings, or align.format_prompt ones),
    generated in left-padded batches. A row stops at <|endoftext|> or at the first newline after
    some text (the end of the 'A:' line), and cut_reply() takes the answer out; a row that writes
    only blanks gives "". A prompt longer than the context loses its oldest tokens, so a long
    history cannot push the answer out."""
    from ..generate import generate
    device = device or next(model.parameters()).device
    eos, pad_id = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|pad|>")
    vocab = tok.get_vocab_size()
    newline = torch.tensor(["\n" in tok.decode([i]) for i in range(vocab)], device=device)
    blank = torch.tensor([not tok.decode([i]).strip() for i in range(vocab)], device=device)
    keep = model.config.block_size - max_new_tokens
    out = []
    for s in range(0, len(prompts), batch_size):
        ids = [tok.encode(p).ids[-keep:] for p in prompts[s:s + batch_size]]
        idx, mask = pad(ids, pad_id, "left")
        said = torch.zeros(len(ids), dtype=torch.bool, device=device)   # some text after 'A:' yet
        done = torch.zeros(len(ids), dtype=torch.bool, device=device)

        def stop(new):
            nonlocal said, done
            t = new.squeeze(1).clamp(max=vocab - 1)
            done = done | (new.squeeze(1) == eos) | (said & newline[t])
            said = said | ~blank[t]
            return bool(done.all())
        gen = generate(model, idx.to(device), max_new_tokens, temperature=0.0, eos_token_id=eos,
                       attention_mask=mask.to(device), on_token=stop)
        for row in gen[:, idx.size(1):].tolist():
            row = row[:row.index(eos)] if eos in row else row
            out.append(cut_reply(tok.decode(row)))
    return out


def echoes(reply: str, question: str, threshold: float = 0.5) -> bool:
    """A reply that repeats the question: word-F1 with the question of at least `threshold`."""
    return bool(normalize(reply)) and token_f1(reply, question) >= threshold


def dialogue_model(cfg: Profile, progress: bool = True, retrain: bool = False):
    """The book's dialogue model: the chapter-03 pre-trained GPT fine-tuned (language-model loss,
    cfg.finetune_steps at cfg.finetune_lr) on the training side of dialogue_splits(cfg); cached, so
    chapter 04 loads the same model. Returns (GPT in eval mode on CPU, tokenizer, History); the
    History's validation loss is on the held-out side. Reply with
    `greedy_replies(model, tok, [dialogue_format(question)])`."""
    from ..train import History, batch_fn, cached_model, model_path, pretrained, pretrained_key, train
    gpt, tok, _ = pretrained(cfg, progress=progress)

    def build():
        tr, va = dialogue_splits(cfg)
        hist = train(gpt, batch_fn(dialogue_stream(tok, tr), cfg.block_size, cfg.finetune_batch_size,
                                   torch.Generator().manual_seed(cfg.seed)),
                     cfg, get_val_batch=batch_fn(dialogue_stream(tok, va), cfg.block_size,
                                                 cfg.finetune_batch_size,
                                                 torch.Generator().manual_seed(cfg.seed + 1)),
                     max_steps=cfg.finetune_steps, learning_rate=cfg.finetune_lr, progress=progress)
        return gpt.cpu(), {"history": hist.to_dict()}
    split = ["unread"] if split_unread(cfg) else []      # the cache key names dialogue_splits' rule
    path = model_path("dialogue", pretrained_key(cfg), cfg.finetune_steps, cfg.finetune_batch_size,
                      cfg.finetune_lr, *split)
    model, extra = cached_model(path, build, "the dialogue model", into=gpt, retrain=retrain,
                                rebuild="the next run that needs it fine-tunes it again")
    return model, tok, History(**extra["history"])


# ---------------------------------------------------------------- the cached sentiment classifier

def sentiment_splits(cfg: Profile, cut: float = 0.5):
    """VADER movie snippets -> {"train"|"val"|"test": [(text, label)]}: a fixed stratified 70/10/20
    split (seed from cfg); train is capped at cfg.max_examples, val/test at a quarter of it."""
    from .. import data
    rows = data.load_vader("movie", cut)
    train_idx, val_idx, test_idx = stratified_split([r[1] for r in rows], cfg.seed)
    cap = cfg.max_examples
    caps = {"train": cap, "val": cap and cap // 4, "test": cap and cap // 4}
    out = {}
    for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
        idx = subsample(idx, [rows[i][1] for i in idx], caps[name], cfg.seed)
        out[name] = [(rows[i][0], rows[i][1]) for i in idx]
    return out


def sentiment_classifier(cfg: Profile, progress: bool = True, retrain: bool = False):
    """The book's three-way movie-review sentiment model (negative / neutral / positive), fine-tuned
    from the chapter-03 pre-trained GPT; cached, so chapter 04 loads it in a second.
    Returns (model: GPTForSequenceClassification in eval mode on CPU, tokenizer, label_names);
    `model.history` is the fine-tuning History.
    Classify: `predict(model, encode(tok, texts, cfg.block_size), pad_id)` with
    `pad_id = tok.token_to_id("<|pad|>")`."""
    from ..train import History, cached_model, model_path, pretrained, pretrained_key
    gpt, tok, _ = pretrained(cfg, progress=progress)
    pad_id = tok.token_to_id("<|pad|>")
    model = GPTForSequenceClassification(gpt, len(SENTIMENT_LABELS), pad_id)

    def build():
        torch.manual_seed(cfg.seed)
        nn.init.normal_(model.score.weight, std=0.02)
        split = sentiment_splits(cfg)["train"]
        hist = train_head(model, encode(tok, [t for t, _ in split], cfg.block_size), [y for _, y in split],
                          cfg, pad_id, progress=progress)
        return model.cpu(), {"history": hist.to_dict()}
    path = model_path("sentiment", pretrained_key(cfg), cfg.finetune_steps, cfg.finetune_batch_size,
                      cfg.finetune_lr, cfg.max_examples)
    model, extra = cached_model(path, build, "the sentiment model", into=model, retrain=retrain,
                                rebuild="the next run that needs it fine-tunes it again")
    model.history = History(**extra["history"])
    return model, tok, SENTIMENT_LABELS


# ---------------------------------------------------------------- NER baselines

def entity_spans(tags: Sequence[str]) -> list:
    """BIO tags -> [(start, end, type)] with end exclusive; an I- without its B- starts an entity (as seqeval)."""
    spans, start, typ = [], None, None
    for i, t in enumerate(list(tags) + ["O"]):
        inside = t.startswith("I-") and typ == t[2:]
        if start is not None and not inside:
            spans.append((start, i, typ))
            start, typ = None, None
        if t.startswith("B-") or (t.startswith("I-") and start is None):
            start, typ = i, t[2:]
    return spans


def dictionary_tagger(train_sents: Sequence) -> Callable:
    """The simplest NER that uses the training labels: remember every entity string seen in training
    with its most frequent type, then tag a sentence by greedy longest match, left to right.
    train_sents: [(chars, tags)]. Returns tag(chars) -> BIO tags."""
    from collections import Counter, defaultdict
    seen = defaultdict(Counter)
    for chars, tags in train_sents:
        for s, e, typ in entity_spans(tags):
            seen["".join(chars[s:e])][typ] += 1
    types = {name: c.most_common(1)[0][0] for name, c in seen.items()}
    longest = max(map(len, types), default=0)

    def tag(chars):
        text, out, i = "".join(chars), ["O"] * len(chars), 0
        while i < len(chars):
            for n in range(min(longest, len(chars) - i), 0, -1):
                typ = types.get(text[i:i + n])
                if typ:
                    out[i:i + n] = [f"B-{typ}"] + [f"I-{typ}"] * (n - 1)
                    i += n
                    break
            else:
                i += 1
        return out
    return tag


def recall_by_novelty(chars: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
                      known: set) -> dict:
    """Entity recall split by novelty: of the gold entities whose string is in `known` (the entity
    strings of the training sentences), and of the others, the share that pred tags with the same
    span and type. {"seen", "unseen", "unseen_share"}; a dictionary tagger's "unseen" is 0."""
    hits = {True: [0, 0], False: [0, 0]}
    for c, g, p in zip(chars, gold, pred):
        found = set(entity_spans(p))
        for s, e, typ in entity_spans(g):
            h = hits["".join(c[s:e]) in known]
            h[0] += (s, e, typ) in found
            h[1] += 1
    n = hits[True][1] + hits[False][1]
    return {"seen": hits[True][0] / max(1, hits[True][1]), "unseen": hits[False][0] / max(1, hits[False][1]),
            "unseen_share": hits[False][1] / max(1, n)}


def ner_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Entity-level micro-F1 (seqeval, CoNLL's score) and the documents' per-character accuracy with O."""
    from seqeval.metrics import f1_score
    token = sum(g == p for gs, ps in zip(gold, pred) for g, p in zip(gs, ps)) / max(1, sum(map(len, gold)))
    return {"entity_f1": float(f1_score(list(map(list, gold)), list(map(list, pred)), zero_division=0)),
            "token_accuracy": token}
