"""The tasks the documents list (000 §3.4: 文本分类, 问答系统, 文本摘要, 机器翻译; 000 §6.2: 主题分类), each
with a standard metric and a simple baseline, on data the bundle carries offline:

- topic classification: chatterbot-corpus pairs labelled with their file's topic, macro-F1;
- question answering: chatterbot's held-out questions, exact match and word-F1 (SQuAD's metrics);
- summarisation: ACLSum papers and their reference summaries, ROUGE, against the lead-k baseline.

Translation is not here: no sentence-aligned parallel corpus ships in the bundle."""
from __future__ import annotations

import random
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..finetune.tasks import normalize, question_split, token_f1


@torch.no_grad()
def continuation_logprobs(model, tok, contexts: Sequence[str], texts: Sequence[str],
                          batch_size: int = 256) -> torch.Tensor:
    """log p(text | <|endoftext|> + context), summed over the text's tokens only (right-padded
    batches, gptbook.finetune.align.collate). A context that does not fit loses its start.
    -> (N,)"""
    from ..finetune.align import collate
    from ..mathx import sequence_logprob
    from ..model import IGNORE_INDEX
    eos, pad_id = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|pad|>")
    room = model.config.block_size + 1
    examples = []
    for c, t in zip(contexts, texts):
        ctx, txt = [eos] + tok.encode(c).ids, tok.encode(t).ids[:room - 1]
        ctx = ctx[max(0, len(ctx) + len(txt) - room):]
        examples.append((ctx + txt, [IGNORE_INDEX] * len(ctx) + txt))
    out = []
    for s in range(0, len(examples), batch_size):
        x, y = collate(examples[s:s + batch_size], pad_id)          # (B, T), targets shifted by one
        out.append(sequence_logprob(model, x, y))
    return torch.cat(out)


def gpt_features(gpt, tok, texts: Sequence[str], max_len: Optional[int] = None) -> np.ndarray:
    """(N, n_embd): the frozen GPT's final hidden states averaged over each text's first max_len tokens
    (default: block_size), chapter 03's linear-probe features (transfer.pooled_features)."""
    from ..finetune.tasks import encode
    from ..finetune.transfer import pooled_features
    return pooled_features(gpt, encode(tok, list(texts), max_len or gpt.config.block_size),
                           tok.token_to_id("<|pad|>"), by_length=True)


class Probe:
    """Chapter 03's linear probe (transfer.fit_probe) on features standardised with the training
    set's mean and spread: the same classifier, fitted in a fraction of the time (lbfgs converges
    slowly on the raw pooled states, whose scales differ by orders of magnitude)."""

    def __init__(self, X, y):
        from threadpoolctl import threadpool_limits
        from ..finetune.transfer import fit_probe
        self.mu, self.sd = X.mean(0), X.std(0) + 1e-8
        # one BLAS thread: on a fit this small, more threads mostly wait for each other, and on a busy
        # 2-core machine the waiting took 7 s where one thread took 0.1 s (measured)
        with threadpool_limits(1):
            self.model = fit_probe((X - self.mu) / self.sd, y)

    def predict(self, X) -> torch.Tensor:
        """(N, C) features -> (N,) labels"""
        return torch.as_tensor(self.model.predict((X - self.mu) / self.sd))

    def predict_proba(self, X) -> torch.Tensor:
        """(N, C) features -> (N, num_labels) probabilities"""
        return torch.as_tensor(self.model.predict_proba((X - self.mu) / self.sd))


# ---------------------------------------------------------------- topic classification

def topic_split(pairs: Sequence, min_pairs: int = 25, min_test: int = 5, test: float = 0.3, seed: int = 0,
                unread: bool = False, min_train: int = 0):
    """chatterbot (question, answer, topic) -> (train, test, topics): rows (question + answer, topic id)
    of the topics with at least `min_pairs` distinct pairs, `min_test` of them on the test side, split
    by question (question_split: a repeated question, or the turns of one conversation, never on both
    sides; whole conversations move, so a topic can land on one side only). A fixed seed: the same
    split on every run of the book. unread: test questions only among those the shipped broad model
    never read (question_split's unread; then `test` can be at most about 0.17); min_train: also drop
    the topics with fewer training pairs than that (nothing can learn a topic it has one example of)."""
    train, held = question_split(pairs, test, seed, unread=unread)
    size, tested = Counter(t for *_, t in train + held), Counter(t for *_, t in held)
    trained = Counter(t for *_, t in train)
    topics = sorted(t for t, n in size.items() if n >= min_pairs and tested[t] >= min_test and trained[t] >= min_train)

    def rows(ps):
        return [(f"{q} {a}", topics.index(t)) for q, a, t in ps if t in topics]
    return rows(train), rows(held), topics


def majority(train_labels: Sequence[int], n: int) -> torch.Tensor:
    """The baseline that always says the most common training label. -> (n,)"""
    return torch.full((n,), Counter(train_labels).most_common(1)[0][0], dtype=torch.long)


# ---------------------------------------------------------------- question answering

def exact_match(pred: str, refs: Sequence[str]) -> float:
    """1.0 when the answer equals one of the references after normalize() (case, punctuation), else 0."""
    return float(any(normalize(pred) == normalize(r) for r in refs))


def best_f1(pred: str, refs: Sequence[str]) -> float:
    """SQuAD's word-F1 against the closest of several references."""
    return max(token_f1(pred, r) for r in refs)


def rerank(model, tok, questions: Sequence[str], candidates: Sequence[Sequence[str]]) -> List[str]:
    """For each question, the candidate answer with the highest pointwise mutual information under a
    dialogue model: log p(answer | 'Q: question A:') - log p(answer | 'Q: A:'). The second term
    removes how likely the answer is anyway, else short, common answers ("Yes.") win everywhere."""
    from ..finetune.tasks import dialogue_format
    ctx = [dialogue_format(q) for q, cs in zip(questions, candidates) for _ in cs]
    blank = [dialogue_format("") for cs in candidates for _ in cs]
    texts = [" " + c for cs in candidates for c in cs]
    pmi = continuation_logprobs(model, tok, ctx, texts) - continuation_logprobs(model, tok, blank, texts)
    out, i = [], 0
    for cs in candidates:
        out.append(cs[int(pmi[i:i + len(cs)].argmax())])
        i += len(cs)
    return out


# ---------------------------------------------------------------- summarisation

def lead(n_sentences: int, k: int) -> List[int]:
    """The lead-k baseline: the first k sentences (of a paper: its abstract's first k)."""
    return list(range(min(k, n_sentences)))


def random_pick(n_sentences: int, k: int, seed: int) -> List[int]:
    """k sentences drawn at random, in document order: the floor any method must clear."""
    return sorted(random.Random(seed).sample(range(n_sentences), min(k, n_sentences)))


def top_k(scores, k: int) -> List[int]:
    """The k best-scoring sentences, in document order (a summary reads in the paper's order)."""
    s = torch.as_tensor(scores, dtype=torch.float32)
    return sorted(torch.topk(s, min(k, len(s))).indices.tolist())


def centroid_scores(vecs) -> torch.Tensor:
    """Cosine similarity of each sentence vector to the mean of the document's sentence vectors (the
    centroid method, Radev et al. 2004): the sentences most like the whole document. (S, C) -> (S,)"""
    vecs = vecs.toarray() if hasattr(vecs, "toarray") else np.asarray(vecs)      # a sparse TF-IDF slice too
    v = torch.nn.functional.normalize(torch.as_tensor(vecs, dtype=torch.float32), dim=-1)
    return v @ torch.nn.functional.normalize(v.mean(0), dim=0)


def rouge(preds: Sequence[str], refs: Sequence[str]) -> Dict[str, torch.Tensor]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 per document (rouge-score, Porter stemmer, Lin 2004's
    definitions). -> {"ROUGE-1": (N,), "ROUGE-2": (N,), "ROUGE-L": (N,)}"""
    from rouge_score import rouge_scorer
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    s = [sc.score(r, p) for p, r in zip(preds, refs)]
    return {f"ROUGE-{k[5:]}": torch.tensor([x[k].fmeasure for x in s]) for k in ("rouge1", "rouge2", "rougeL")}


def by_document(values, docs: Sequence[dict]) -> list:
    """Split per-sentence values (all documents' sentences in order: a list, an array, a sparse
    matrix's rows) into one slice per document."""
    n = values.shape[0] if hasattr(values, "shape") else len(values)
    if n != sum(len(d["sentences"]) for d in docs):
        raise ValueError(f"{n} values for {sum(len(d['sentences']) for d in docs)} sentences")
    out, i = [], 0
    for d in docs:
        out.append(values[i:i + len(d["sentences"])])
        i += len(d["sentences"])
    return out


def summary_rows(docs: Sequence[dict], picks: Dict[str, Sequence[Sequence[int]]]) -> Tuple[dict, dict]:
    """picks {system: [sentence indices per document]} -> ({system: [summary text]},
    {system: rouge(...) against the documents' reference summaries})."""
    texts = {name: [" ".join(d["sentences"][i] for i in idx) for d, idx in zip(docs, p)]
             for name, p in picks.items()}
    refs = [d["summary"] for d in docs]
    return texts, {name: rouge(t, refs) for name, t in texts.items()}
