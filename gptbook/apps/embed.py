"""Sentence embeddings with the packaged all-MiniLM-L6-v2: BERT encoder + mean pooling + L2 norm.

This is what sentence-transformers does for this model (its `1_Pooling/config.json` says
`pooling_mode_mean_tokens: true`, then a `Normalize` module), written out so the reader sees it.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..mathx import mean_pool   # the same average of real tokens serves the GPT features of chapters 03-04


def load_minilm(path: Optional[str] = None):
    """(tokenizer, model in eval mode) from the packaged MiniLM folder; loads offline, once."""
    from .. import data
    return _load(str(path or data.minilm_path()))


@functools.lru_cache(maxsize=2)
def _load(path: str):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()          # no "Loading weights" bar in stored notebook outputs
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).eval()
    finally:
        if was:
            hf_logging.enable_progress_bar()
    return tok, model


@torch.no_grad()
def embed(texts: Sequence[str], batch_size: int = 64, max_length: int = 128,
          path: Optional[str] = None) -> torch.Tensor:
    """Unit-length sentence vectors. list of N strings -> (N, 384); cosine similarity = dot product."""
    if isinstance(texts, str):
        raise TypeError("embed() takes a list of strings; wrap a single string as [text]")
    texts = list(texts)
    tok, model = load_minilm(path)
    if not texts:
        return torch.zeros(0, model.config.hidden_size)
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
        h = model(**batch).last_hidden_state                        # (B, T, 384)
        out.append(F.normalize(mean_pool(h, batch["attention_mask"]), dim=-1))
    return torch.cat(out)
