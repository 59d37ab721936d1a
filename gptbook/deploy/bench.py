"""Measurements for chapter 05: timing, perplexity, KV-cache and batching sweeps, training memory,
and an HTTP load test. Nothing here generates text on its own: generation is gptbook.generate."""
import io
import math
import time
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from .. import train
from ..generate import generate, left_pad


# ---------------------------------------------------------------- timing and size

def min_seconds(fn: Callable, repeat: int = 5, warmup: int = 1) -> float:
    """Fastest wall time of fn() over `repeat` calls, after `warmup` untimed calls.
    The minimum is the run least disturbed by other processes (timeit's advice)."""
    return compare_seconds({"fn": fn}, repeat, warmup)["fn"]


def compare_seconds(fns: dict, repeat: int = 5, warmup: int = 1) -> dict:
    """{name: fastest seconds} for several callables timed in turn (A, B, C, A, B, C, ...), so a
    change in the machine's load hits every variant alike instead of the one measured last."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def repeated_ratios(fns: dict, base: str, rounds: int = 5, repeat: int = 3) -> dict:
    """{name: [time of name / time of base, one per round]}: `rounds` rounds of compare_seconds.
    One ratio is one sample; its spread over the rounds is how much this machine's noise moves it.
    A variant that repeats base's own work (the same callable under a second name) shows the noise
    alone: its ratios would all be 1.0 on a perfectly quiet machine."""
    if base not in fns:
        raise ValueError(f"base {base!r} is not one of the timed callables {sorted(map(str, fns))}")
    out = {k: [] for k in fns}
    for r in range(rounds):
        t = compare_seconds(fns, repeat, warmup=1 if r == 0 else 0)
        for k in fns:
            out[k].append(t[k] / t[base])
    return out


def matmul_flops(fn: Callable) -> int:
    """Floating-point operations of the matrix products fn() runs (torch.utils.flop_counter).
    A count, not a timing: the same on every machine. (CPU attention kernels are not counted.)"""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of torch.save(model.state_dict()): the size of the model on disk."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def percentiles(values: Sequence[float], qs=(50, 95, 99)) -> dict:
    """{"p50": ..., "p95": ..., "p99": ...} by linear interpolation (numpy's default)."""
    import numpy as np
    return {f"p{q}": float(np.percentile(values, q)) for q in qs}


# ---------------------------------------------------------------- quality

def autocast(device: torch.device, dtype: str):
    """train.autocast on any device: "bfloat16"/"float16" on the CPU too (the chapter measures what
    it does there); a no-op for "float32"."""
    return train.autocast(device, dtype, gpu_only=False)


def held_out_tokens(cfg, tok, share: float = 0.05) -> torch.Tensor:
    """Tokens of the last `share` of the English corpus text. Pre-training held out the last 10%
    of the tokens (train.corpus_tokens), so this tail was never trained on; tokenising only the
    tail is much faster than tokenising the whole corpus."""
    from ..data import load_shakespeare
    if not 0 < share < train.VAL_SHARE:
        raise ValueError(f"share must be in (0, {train.VAL_SHARE}) to stay inside the held-out part, got {share}")
    text = load_shakespeare(cfg.corpus_chars)
    return torch.tensor(tok.encode(text[int(len(text) * (1 - share)):]).ids, dtype=torch.long)


def perplexity(model: nn.Module, tokens: torch.Tensor, block_size: int, n_windows: int = 16,
               batch_size: int = 8, dtype: str = "float32", device="cpu") -> float:
    """exp(train.stream_loss) over the first n_windows non-overlapping windows of block_size tokens,
    in dtype on any device (see autocast)."""
    need = n_windows * block_size + 1
    if tokens.numel() < need:
        raise ValueError(f"need {need} tokens for {n_windows} windows of {block_size}, "
                         f"got {tokens.numel()}")
    with autocast(device, dtype):
        loss, _ = train.stream_loss(model, tokens, batch_size, device, max_windows=n_windows,
                                    block_size=block_size)
    return math.exp(loss)


# ---------------------------------------------------------------- KV cache and batching

@torch.no_grad()
def step_latency(model: nn.Module, lengths: Sequence[int], use_cache: bool, repeat: int = 10,
                 vocab_ids: Optional[torch.Tensor] = None) -> list:
    """Seconds to produce ONE next-token distribution when the context already holds L tokens.
    With the cache: one token in, past keys/values of L-1 tokens reused. Without: all L tokens."""
    model.eval()
    g = torch.Generator().manual_seed(0)
    out = []
    for L in lengths:
        idx = torch.randint(model.config.vocab_size, (1, L), generator=g) if vocab_ids is None \
            else vocab_ids[:L][None]
        if use_cache:
            past = model(idx[:, :-1]).past_key_values if L > 1 else None
            out.append(min_seconds(lambda: model(idx[:, -1:], past_key_values=past), repeat))
        else:
            out.append(min_seconds(lambda: model(idx), repeat))
    return out


def generation_seconds(model: nn.Module, idx: torch.Tensor, new_tokens: int, use_cache: bool,
                       repeat: int = 3, **kw) -> float:
    """Fastest seconds of gptbook.generate.generate (greedy unless kw say otherwise)."""
    kw.setdefault("temperature", 0.0)
    return min_seconds(lambda: generate(model, idx, new_tokens, use_cache=use_cache, **kw),
                          repeat, warmup=1)


def batched_generate(model: nn.Module, prompts: Sequence[Sequence[int]], new_tokens: int,
                     batch_size: int, pad_id: int) -> list:
    """Greedy-generate for every prompt, batch_size at a time (left padding + attention mask).
    Returns the new tokens of each prompt (lists), in order."""
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        idx, mask = left_pad(chunk, pad_id)
        res = generate(model, idx, new_tokens, temperature=0.0, attention_mask=mask)
        out += res[:, idx.size(1):].tolist()
    return out


def batch_throughput(model: nn.Module, prompts, new_tokens: int, batch_sizes: Sequence[int],
                     pad_id: int, repeat: int = 1) -> list:
    """Generated tokens per second for each batch size over the same prompts."""
    rows = []
    for bs in batch_sizes:
        s = min_seconds(lambda: batched_generate(model, prompts, new_tokens, bs, pad_id), repeat)
        rows.append(len(prompts) * new_tokens / s)
    return rows


# ---------------------------------------------------------------- memory for training

def saved_tensor_bytes(fn: Callable):
    """Run fn() (a forward pass) and count the bytes autograd keeps for backward (activations).
    Returns (bytes, fn's result). Storages shared by several saved tensors count once."""
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return sum(seen.values()), result


def train_step_memory(model: nn.Module, x: torch.Tensor, y: torch.Tensor, micro_batches: int = 1,
                      checkpointing: bool = False) -> dict:
    """One forward+backward of batch (x, y) split into `micro_batches` (gradient accumulation).
    checkpointing: with the GPT's activation checkpointing (GPT.checkpointing) for this step only.
    Returns {"loss", "grads" (name -> tensor), "activation_bytes" (largest micro-batch),
    "peak_bytes" (CUDA only: torch.cuda.max_memory_allocated, else None)}."""
    B = x.size(0)
    if B % micro_batches:
        raise ValueError(f"batch size {B} must be divisible by micro_batches={micro_batches}")
    model.train()
    model.zero_grad(set_to_none=True)
    cuda = x.is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    was, model.checkpointing = model.checkpointing, checkpointing
    total, act = 0.0, 0
    try:
        for xb, yb in zip(x.chunk(micro_batches), y.chunk(micro_batches)):
            nbytes, loss = saved_tensor_bytes(lambda: model(xb, yb).loss / micro_batches)
            act = max(act, nbytes)
            loss.backward()   # gradients add up in .grad over the micro-batches
            total += loss.item()
    finally:
        model.checkpointing = was
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    peak = torch.cuda.max_memory_allocated() if cuda else None
    model.zero_grad(set_to_none=True)
    model.eval()
    return {"loss": total, "grads": grads, "activation_bytes": act, "peak_bytes": peak}


# ---------------------------------------------------------------- HTTP load test

def load_test(url: str, payloads: Sequence[dict], concurrency: int = 8, headers: Optional[dict] = None,
              timeout: float = 60.0) -> dict:
    """POST every payload to url with `concurrency` client threads; a bounded loop (one request
    per payload). Returns {"latencies" (s, per request), "codes", "seconds" (wall), "tokens"}."""
    import httpx
    from concurrent.futures import ThreadPoolExecutor
    if not url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise ValueError(f"load_test only targets loopback addresses, got {url}")

    def one(client, body):
        t0 = time.perf_counter()
        r = client.post(url, json=body, headers=headers or {})
        dt = time.perf_counter() - t0
        return dt, r.status_code, r.json().get("completion_tokens", 0) if r.status_code == 200 else 0

    with httpx.Client(timeout=timeout) as client, ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(lambda b: one(client, b), payloads))
        wall = time.perf_counter() - t0
    return {"latencies": [r[0] for r in results], "codes": [r[1] for r in results],
            "seconds": wall, "tokens": sum(r[2] for r in results)}


def decide_workers(scaling: dict, offered_rps: float, slo_p95_ms: float, utilisation: float = 0.7):
    """The worker count an autoscaler would choose from measurements `scaling` ({workers: {"rps":
    throughput, "p95_ms": latency}}, each at the same offered concurrency): the fewest workers whose
    p95 met the target and whose throughput covers `offered_rps` with headroom (at most
    `utilisation` busy, as Kubernetes' HPA aims at a target utilisation). None when no measured count
    can: more workers on this machine would not help, more machines would."""
    for w in sorted(scaling):
        r = scaling[w]
        if r["p95_ms"] <= slo_p95_ms and r["rps"] * utilisation >= offered_rps:
            return w
    return None
