"""Customer-service assistant (document 000 §6.1): FAQ retrieval, paraphrased test questions,
recall@k, a similarity threshold with a hand-off, and answers generated from retrieved pairs."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch

# normalize and token_f1 live with the dialogue fine-tuning (chapter 03), one floor down; both
# are used here and by chapter 04 as retrieval.normalize / retrieval.token_f1
from ..finetune.tasks import cut_reply, normalize, token_f1  # noqa: F401

HANDOFF = "I don't know - handing you to a human colleague."


@dataclass
class FAQEntry:
    question: str
    answers: List[str] = field(default_factory=list)
    topic: str = ""


def build_faq(pairs: Sequence[tuple], topics: Optional[set] = None) -> List[FAQEntry]:
    """[(q, a, topic)] -> one entry per distinct question (first-seen order) holding all its answers."""
    entries, where = [], {}
    for q, a, t in pairs:
        if topics is not None and t not in topics:
            continue
        if q not in where:
            where[q] = len(entries)
            entries.append(FAQEntry(q, [], t))
        entries[where[q]].answers.append(a)
    return entries


# ---------------------------------------------------------------- paraphrased test questions

SYNONYMS = {
    "english": {"what": "which", "how": "in what way", "computer": "machine",
                "program": "software", "you": "u", "your": "ur", "do": "can", "like": "enjoy",
                "good": "nice", "favorite": "favourite", "think": "believe", "know": "understand",
                "tell": "explain to", "make": "create", "use": "utilise", "fix": "repair",
                "problem": "issue", "error": "fault", "help": "assist", "want": "wish",
                "start": "begin", "stop": "end", "big": "large", "small": "little",
                "happy": "glad", "sad": "unhappy", "buy": "purchase", "get": "obtain"},
    "chinese": {"你": "您", "什么": "啥", "怎么": "如何", "喜欢": "爱", "知道": "了解",
                "为什么": "为啥", "吗": "么", "是": "算是", "我": "俺", "电脑": "计算机",
                "告诉": "跟我说", "想": "打算", "好": "不错", "很": "非常"},
}
TEMPLATES = {
    "english": ["{q}", "can you tell me {q}", "i would like to know {q}", "{q} please",
                "quick question {q}", "hey {q}"],
    "chinese": ["{q}", "请问{q}", "我想知道{q}", "{q}呢", "问一下{q}", "你好{q}"],
}


def paraphrase(question: str, lang: str = "english", seed: int = 0) -> str:
    """A deterministic rewrite: normalise (lower case, no punctuation), swap words from the small
    synonym list SYNONYMS[lang], wrap in a template chosen by `seed` from TEMPLATES[lang]."""
    if lang not in SYNONYMS:
        raise ValueError(f"lang must be one of {sorted(SYNONYMS)}, got {lang!r}")
    q = normalize(question)
    if lang == "english":
        q = " ".join(SYNONYMS[lang].get(w, w) for w in q.split())
    else:
        for a, b in SYNONYMS[lang].items():   # Chinese has no spaces: replace substrings
            q = q.replace(a, b)
    tpl = random.Random(seed).choice(TEMPLATES[lang])
    return tpl.format(q=q).strip()


def paraphrase_set(entries: Sequence[FAQEntry], lang: str, n: Optional[int], seed: int):
    """(queries, target entry ids): paraphrases of up to n entries picked with `seed`; rewrites
    that come out identical (after normalising) to some entry's question are dropped."""
    known = {normalize(e.question) for e in entries}
    ids = list(range(len(entries)))
    random.Random(seed).shuffle(ids)
    queries, targets = [], []
    for i in ids:
        p = paraphrase(entries[i].question, lang, seed=seed + i)
        if normalize(p) in known:
            continue
        queries.append(p)
        targets.append(i)
        if n is not None and len(queries) >= n:
            break
    return queries, targets


# ---------------------------------------------------------------- retrievers

class TfidfRetriever:
    """Sparse baseline: TF-IDF vectors (word uni+bigrams for English, character 1-2-grams for
    Chinese) and cosine similarity."""

    def __init__(self, docs: Sequence[str], lang: str = "english"):
        from sklearn.feature_extraction.text import TfidfVectorizer
        kw = dict(analyzer="char", ngram_range=(1, 2)) if lang == "chinese" else \
            dict(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b")
        self.vec = TfidfVectorizer(sublinear_tf=True, **kw)
        self.doc_vecs = self.vec.fit_transform(list(docs))            # (N, V) sparse, rows unit-norm

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """Cosine similarities (Q, N)."""
        q = self.vec.transform(list(queries))
        return torch.tensor((q @ self.doc_vecs.T).toarray(), dtype=torch.float32)


class EmbeddingRetriever:
    """Dense retriever: MiniLM sentence vectors (gptbook.apps.embed) and cosine similarity."""

    def __init__(self, docs: Sequence[str], embed_fn: Optional[Callable] = None):
        from . import embed
        self.embed_fn = embed_fn or embed.embed
        self.doc_vecs = self.embed_fn(list(docs))                      # (N, C), unit rows

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """Cosine similarities (Q, N)."""
        return self.embed_fn(list(queries)) @ self.doc_vecs.T


def top_k(scores: torch.Tensor, k: int):
    """(values (Q, k), indices (Q, k)) of the k best documents per query."""
    k = min(k, scores.size(1))
    return torch.topk(scores, k, dim=1)


def same_question(entries: Sequence[FAQEntry]) -> torch.Tensor:
    """(N, N) bool: entries whose questions are equal after normalize() count as the same answer."""
    keys = [normalize(e.question) for e in entries]
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    g = torch.tensor([ids[k] for k in keys])
    return g[:, None] == g[None, :]


def recall_at_k(indices: torch.Tensor, targets: Sequence[int], k: int,
                equal: Optional[torch.Tensor] = None) -> float:
    """Share of queries whose target is among the first k retrieved. indices (Q, >=k)."""
    t = torch.as_tensor(list(targets))
    idx = indices[:, :k]
    hit = equal[t[:, None], idx] if equal is not None else idx == t[:, None]   # (Q, k)
    return hit.any(1).float().mean().item()


def threshold_curve(top1_scores, correct, thresholds):
    """For each threshold t: answer only when the best score >= t. correct: 1 = the top-1 answer is
    right (0 for out-of-domain queries). -> rows {threshold, coverage, precision, ood_answered}."""
    s = torch.as_tensor(top1_scores, dtype=torch.float32)
    c = torch.as_tensor(correct, dtype=torch.bool)
    rows = []
    for t in thresholds:
        ans = s >= t
        n = int(ans.sum())
        rows.append({"threshold": float(t), "coverage": n / len(s),
                     "precision": float((ans & c).sum()) / n if n else float("nan")})
    return rows


def pick_threshold(rows, min_precision: float) -> float:
    """The lowest threshold whose precision reaches min_precision (most coverage at that precision)."""
    ok = [r["threshold"] for r in rows if r["precision"] == r["precision"] and r["precision"] >= min_precision]
    if not ok:
        raise ValueError(f"no threshold reaches precision {min_precision}; lower it or add thresholds")
    return min(ok)


# ---------------------------------------------------------------- the assistant

@dataclass
class Reply:
    text: str
    score: float
    matched: Optional[str]      # the FAQ question used, None on hand-off
    handed_off: bool


def rag_prompt(entries: Sequence[FAQEntry], ids: Sequence[int], query: str) -> str:
    """Retrieved pairs as 'Q: .. / A: ..' lines, then the user's question and an open 'A:'."""
    from ..finetune.tasks import dialogue_format     # the format chapter 03 fine-tunes on
    shots = "".join(dialogue_format(entries[i].question, entries[i].answers[0]) + "\n" for i in ids)
    return shots + dialogue_format(query)


class Assistant:
    """Retrieve the nearest FAQ entry; below `threshold` hand off to a human. With a GPT and its
    tokenizer, the answer is GENERATED from a prompt holding the top `n_context` retrieved pairs
    (gptbook.generate.generate); without one, the stored answer is returned."""

    def __init__(self, entries, retriever, threshold: float, model=None, tokenizer=None,
                 n_context: int = 2, max_new_tokens: int = 32, seed: int = 0):
        self.entries, self.retriever, self.threshold = list(entries), retriever, threshold
        self.model, self.tok, self.n_context = model, tokenizer, n_context
        self.max_new_tokens, self.seed = max_new_tokens, seed

    def __call__(self, query: str) -> Reply:
        if not query or not query.strip():
            raise ValueError("ask a non-empty question")
        vals, ids = top_k(self.retriever.scores([query]), self.n_context)
        best, score = int(ids[0, 0]), float(vals[0, 0])
        if score < self.threshold:
            return Reply(HANDOFF, score, None, True)
        e = self.entries[best]
        if self.model is None:
            return Reply(e.answers[0], score, e.question, False)
        return Reply(self.generate(rag_prompt(self.entries, ids[0].tolist(), query)), score,
                     e.question, False)

    def generate(self, prompt: str) -> str:
        """Continue the prompt with the book's GPT (greedy); the answer is cut as chapter 03 cuts a reply."""
        from ..generate import generate_text
        # crop: a long prompt loses its start (the oldest retrieved pair), the answer keeps its room
        text = generate_text(self.model, self.tok, prompt, self.max_new_tokens, crop=True, temperature=0.0,
                             generator=torch.Generator().manual_seed(self.seed))
        return cut_reply(text)       # the answer: up to the end of its line or the next 'Q:' turn
