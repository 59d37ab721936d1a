"""Fine-tuning the book's GPT: a sequence-classification head (last non-pad token + linear, the
recipe of HF's GPT2ForSequenceClassification), a token-classification head, the data helpers
they need, and the cached movie-review sentiment classifier that chapter 04 imports.

Training reuses `gptbook.train.train` with a `loss_fn`, so there is one training loop in the book.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import Profile
from ..model import GPT, IGNORE_INDEX as IGNORE     # IGNORE: the label id the loss skips (padding, later sub-tokens)

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
    seen the whole text, so that is the one to classify from."""

    def __init__(self, gpt: GPT, num_labels: int, pad_token_id: int):
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels}")
        self.gpt, self.num_labels, self.pad_token_id = gpt, num_labels, pad_token_id
        self.score = nn.Linear(gpt.config.n_embd, num_labels, bias=False)  # HF's name and shape
        nn.init.normal_(self.score.weight, std=0.02)

    def forward(self, idx, attention_mask=None, labels=None) -> HeadOutput:
        mask = attention_mask if attention_mask is not None else (idx != self.pad_token_id).long()
        h = self.gpt(idx, attention_mask=mask).hidden_states          # (B, T, C)
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
        h = self.gpt(idx, attention_mask=mask).hidden_states           # (B, T, C)
        logits = self.classifier(self.dropout(h))                       # (B, T, L)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1),
                                   ignore_index=IGNORE)
        return HeadOutput(logits, loss)


# ---------------------------------------------------------------- data helpers

def encode(tok, texts: Sequence[str], max_len: int) -> list:
    """Texts -> token-id lists (book tokenizer), cut to the first max_len tokens; never empty."""
    out = []
    for t in texts:
        ids = tok.encode(t).ids[:max_len]
        out.append(ids or [tok.token_to_id("<|endoftext|>")])
    return out


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int):
    """List of id lists -> (idx (B, T), attention_mask (B, T)), padded on the RIGHT."""
    T = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        idx[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return idx, mask


def align_token_labels(words: Sequence[str], tags: Sequence[str], tok, label2id: dict,
                       max_len: int, prefix_space: bool = False, at: str = "last"):
    """Word-level BIO tags -> (ids, labels) at token level: each word is encoded on its own; one of
    its tokens carries the tag, the others get IGNORE. at="last" suits a causal model (the last
    token has seen the whole word); at="first" is the usual choice for BERT. Cut to max_len tokens."""
    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags")
    if at not in ("first", "last"):
        raise ValueError(f"at must be 'first' or 'last', got {at!r}")
    ids, labels = [], []
    for i, (w, t) in enumerate(zip(words, tags)):
        piece = tok.encode((" " + w) if prefix_space and i else w).ids or [tok.token_to_id("<|endoftext|>")]
        ids += piece
        rest = [IGNORE] * (len(piece) - 1)
        labels += [label2id[t]] + rest if at == "first" else rest + [label2id[t]]
    return ids[:max_len], labels[:max_len]


def batcher(seqs: list, labels: list, batch_size: int, pad_id: int, generator: torch.Generator):
    """get_batch(device) -> (x (B, T), y): random examples, right-padded. y is (B,) for one label per
    sequence, or (B, T) padded with IGNORE for one label per token."""
    def get_batch(device="cpu"):
        ix = torch.randint(len(seqs), (batch_size,), generator=generator).tolist()
        x, _ = pad_right([seqs[i] for i in ix], pad_id)
        if isinstance(labels[0], (list, tuple)):
            y = torch.full_like(x, IGNORE)
            for r, i in enumerate(ix):
                y[r, :len(labels[i])] = torch.tensor(labels[i])
        else:
            y = torch.tensor([labels[i] for i in ix], dtype=torch.long)
        return x.to(device), y.to(device)
    return get_batch


def train_head(model: nn.Module, seqs: list, labels: list, cfg: Profile, pad_id: int,
               steps: Optional[int] = None, learning_rate: Optional[float] = None,
               progress: bool = False, seed_offset: int = 0):
    """Fine-tune a head model (ours or HF's) with gptbook.train.train. Returns a History."""
    from ..train import train
    g = torch.Generator().manual_seed(cfg.seed + seed_offset)
    get = batcher(seqs, labels, cfg.finetune_batch_size, pad_id, g)

    def loss_fn(m, x, y):
        return m(x, attention_mask=(x != pad_id).long(), labels=y).loss
    return train(model, get, cfg, max_steps=steps or cfg.finetune_steps,
                 learning_rate=learning_rate or cfg.finetune_lr, progress=progress, loss_fn=loss_fn)


@torch.no_grad()
def predict(model: nn.Module, seqs: list, pad_id: int, batch_size: int = 64, device=None):
    """Sequence heads: (N,) predicted labels. Token heads: list of (len_i,) predictions."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        x, mask = pad_right(chunk, pad_id)
        logits = model(x.to(device), attention_mask=mask.to(device)).logits.float().cpu()
        if logits.dim() == 2:
            out.append(logits.argmax(-1))
        else:
            out += [row[:len(s)].argmax(-1) for row, s in zip(logits, chunk)]
    if out and out[0].dim() == 1 and logits.dim() == 2:
        return torch.cat(out)
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
    word that carries its label (the positions whose label is not IGNORE)."""
    gold, pred = [], []
    for p, l in zip(pred_ids, label_ids):
        keep = [i for i, y in enumerate(l) if y != IGNORE]
        gold.append([id2label[l[i]] for i in keep])
        pred.append([id2label[int(p[i])] for i in keep])
    return gold, pred


# ---------------------------------------------------------------- generation fine-tuning data

def dialogue_format(question: str, answer: str = "") -> str:
    """The prompt format of the dialogue fine-tuning: 'Q: ...\nA: ...'."""
    return f"Q: {question}\nA:" + (f" {answer}" if answer else "")


def dialogue_splits(cfg: Profile, lang: str = "english", val: float = 0.1):
    """chatterbot pairs -> (train, val) lists of (q, a, topic): a fixed shuffle by cfg.seed."""
    from .. import data
    pairs = data.load_dialogues(lang)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    n_val = int(len(pairs) * val)
    return [pairs[i] for i in order[n_val:]], [pairs[i] for i in order[:n_val]]


def dialogue_stream(tok, pairs) -> torch.Tensor:
    """All pairs as one token stream, each 'Q: ...\nA: ...' followed by <|endoftext|>. -> (N,)"""
    eos = tok.token_to_id("<|endoftext|>")
    ids = []
    for q, a, *_ in pairs:
        ids += tok.encode(dialogue_format(q, a)).ids + [eos]
    return torch.tensor(ids, dtype=torch.long)


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
    from .. import data
    from ..train import History, _cache_key, pretrained
    path = data.cache_dir() / "models" / (f"sentiment-{_cache_key(cfg)}-{cfg.finetune_steps}-"
                                          f"{cfg.finetune_batch_size}-{cfg.finetune_lr}-{cfg.max_examples}.pt")
    gpt, tok, _ = pretrained(cfg, progress=progress)
    pad_id = tok.token_to_id("<|pad|>")
    model = GPTForSequenceClassification(gpt, len(SENTIMENT_LABELS), pad_id)
    if path.exists() and not retrain:
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(ck["state_dict"])
            model.history = History(**ck["history"])
        except Exception as e:  # noqa: BLE001 - truncated, corrupted or from another version
            raise data.unreadable_cache_file(path, e, "the next run that needs it fine-tunes it again") from None
        return model.eval(), tok, SENTIMENT_LABELS
    torch.manual_seed(cfg.seed)
    nn.init.normal_(model.score.weight, std=0.02)
    split = sentiment_splits(cfg)["train"]
    model.history = train_head(model, encode(tok, [t for t, _ in split], cfg.block_size), [y for _, y in split],
               cfg, pad_id, progress=progress)
    model.cpu().eval()
    with data.cache_write("the sentiment model"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": model.state_dict(), "history": model.history.to_dict()}, tmp)
        tmp.replace(path)
    return model, tok, SENTIMENT_LABELS
