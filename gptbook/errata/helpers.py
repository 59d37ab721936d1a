"""What the demos share: run failing code and keep its error, silence libraries, seed locally,
tiny random models, the GPT-2 tokenizer."""
from __future__ import annotations

import contextlib
import functools
import re
import warnings
from typing import Callable

def error_of(fn: Callable, *args, **kwargs) -> str:
    """Run code that is expected to fail; return 'ExceptionType: message' (first line).
    Raises AssertionError if it does NOT fail, since then the erratum would be out of date."""
    try:
        with quiet():
            fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - showing the reader the real error is the point
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        msg = re.sub(r"\s*\((?:/|[A-Za-z]:\\)[^()]*\)", "", msg)  # drop "(/abs/path/...)": not portable
        return f"{type(e).__name__}: {msg[:300]}"
    raise AssertionError("the document's code ran without error; this erratum needs revisiting")


@contextlib.contextmanager
def quiet():
    """Silence transformers' logging and Python warnings inside a demo (restored afterwards)."""
    try:
        from transformers.utils import logging as hf_logging
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        hf_logging = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if hf_logging is not None:
            hf_logging.set_verbosity(level)


@contextlib.contextmanager
def seeded(seed: int = 0):
    """Deterministic randomness inside a demo without disturbing the caller's RNG state; one thread
    (tiny tensors run fastest and reproducibly that way), restored afterwards."""
    import torch
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def tiny_hf_config(**changes):
    """A GPT2Config small enough to build and run in milliseconds (random weights, no download)."""
    from transformers import GPT2Config
    kw = dict(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2,
              bos_token_id=0, eos_token_id=0)
    kw.update(changes)
    return GPT2Config(**kw)


def tiny_gpt(**changes):
    """A tiny random book GPT (gptbook.model.GPT), in eval mode."""
    from ..model import GPT, GPTConfig
    kw = dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=16)
    kw.update(changes)
    return GPT(GPTConfig(**kw)).eval()


def tiny_forward(shape, next_token: bool = False):
    """Seeded: a tiny random GPT, random token ids x of `shape`, and one forward pass without
    gradients. next_token=True feeds x[:, :-1] with targets x[:, 1:] (out.loss is the LM loss).
    Returns (model, x, out)."""
    import torch
    with seeded(0):
        m = tiny_gpt()
        x = torch.randint(0, 64, shape)
        with torch.no_grad():
            out = m(x[:, :-1], targets=x[:, 1:]) if next_token else m(x)
    return m, x, out


@functools.lru_cache(maxsize=1)
def gpt2_tok():
    """OpenAI's GPT-2 tokenizer (offline, from the data cache); loaded once."""
    from ..tokenizer import gpt2_tokenizer
    return gpt2_tokenizer()


def small(x: float, tol: float = 1e-5) -> str:
    """A float-noise difference as a stable string: '< 1e-05' (the exact noise varies by machine)."""
    if x >= tol:
        raise AssertionError(f"difference {x:.3g} is not below {tol:g}")
    return f"< {tol:g}"
