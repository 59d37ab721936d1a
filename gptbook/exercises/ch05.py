"""Exercises for chapter 05 (deployment): KV cache, int8, request validation, padding, latency, pruning."""
from __future__ import annotations

import torch
import torch.nn.utils.prune

from .. import generate, model
from ..deploy import bench, quantize
from .core import function_problem, gen, problems_of


def _ref_kv_cache_update(past, k_new, v_new):
    if past is None:
        return k_new, v_new
    # the keys and values of earlier tokens never change: append the new ones on the time axis
    return torch.cat([past[0], k_new], dim=2), torch.cat([past[1], v_new], dim=2)  # (B, nh, S+T, hs)


@function_problem("kv_cache_update", reference=_ref_kv_cache_update,
                  uses=(model.CausalSelfAttention.forward,))
def kv_cache_update_cases():
    g = gen(50)
    kv = lambda T: (torch.randn(2, 2, T, 4, generator=g), torch.randn(2, 2, T, 4, generator=g))  # noqa: E731
    k1, v1 = kv(3)
    k2, v2 = kv(1)
    k3, v3 = kv(2)
    return [(None, k1, v1), ((k1, v1), k2, v2), ((k1, v1), k3, v3)]


def _ref_quantize_int8(x):
    # gptbook's int8 Linear quantises per row; one row holding the whole tensor is per-tensor
    q, scale = quantize.quantize_per_row(x.reshape(1, -1))          # (1, N) int8, (1,)
    return q.view(x.shape), scale.item()


@function_problem("quantize_int8", reference=_ref_quantize_int8, uses=(quantize.quantize_per_row,),
                  rtol=1e-5, atol=1e-12)
def quantize_int8_cases():
    g = gen(51)
    return [(torch.randn(4, 5, generator=g),), (torch.tensor([-2.0, 0.0, 0.5, 1.0]),),
            (torch.zeros(3),), (torch.randn(2, 3, generator=g) * 1e-3,)]


def _limits():
    from ..deploy.serve import ServeSettings            # the service's defaults (imports FastAPI)
    s = ServeSettings()
    return s.max_prompt_chars, s.max_new_tokens, s.max_temperature


def _ref_validate_request(req):
    if not isinstance(req, dict):
        return ["request"]
    max_chars, max_new, max_temp = _limits()
    bad = [key for key in req if key not in ("prompt", "max_new_tokens", "temperature", "top_p")]
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    p = req.get("prompt")
    if not isinstance(p, str) or not p.strip() or len(p) > max_chars:
        bad.append("prompt")
    n = req.get("max_new_tokens", 16)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_new:
        bad.append("max_new_tokens")
    t = req.get("temperature", 0.0)
    if not number(t) or not 0 <= t <= max_temp:
        bad.append("temperature")
    top_p = req.get("top_p", 1.0)
    if not number(top_p) or not 0 < top_p <= 1:
        bad.append("top_p")
    return sorted(bad)


@function_problem("validate_request", reference=_ref_validate_request)
def validate_request_cases():
    return [({"prompt": "Hello"},), ({"prompt": "Hi", "max_new_tokens": 64, "temperature": 2, "top_p": 1},),
            ({"prompt": "Hi", "max_new_tokens": 65, "temperature": 0.5, "top_p": 0.9},),
            ({"prompt": "   ", "max_new_tokens": 0},), ({"prompt": "x" * 2001, "temperature": 2.5},),
            ({"prompt": "ok", "max_new_tokens": True, "top_p": 0},),
            ({"prompt": "ok", "max_new_tokens": 10.0, "temperature": "hot", "stream": True},),
            ({},), ("just a string",)]


@function_problem("left_pad", reference=generate.left_pad)
def left_pad_cases():
    return [([[5, 6, 7], [8]], 0), ([[1, 2]], 9), ([[3], [4, 4, 4, 4], [2, 2]], 1)]


def _ref_latency_percentile(latencies_ms, p):
    return bench.percentiles(latencies_ms, qs=(p,))[f"p{p}"]


@function_problem("latency_percentile", reference=_ref_latency_percentile, uses=(bench.percentiles,))
def latency_percentile_cases():
    return [([12.0, 10.0, 30.0, 11.0], 50), ([12.0, 10.0, 30.0, 11.0], 95), ([5.0], 99),
            (list(range(1, 101)), 90), ([3.0, 1.0, 2.0], 0), ([3.0, 1.0, 2.0], 100)]


def _ref_prune_magnitude(weight, amount):
    layer = torch.nn.Module()             # a bare holder: nn.Linear would draw its init from the global generator
    layer.weight = torch.nn.Parameter(weight.clone())
    # torch's L1 unstructured pruning: zero the round(amount * n) smallest |w|
    torch.nn.utils.prune.l1_unstructured(layer, "weight", amount=amount)
    return layer.weight.detach()


@function_problem("prune_magnitude", reference=_ref_prune_magnitude)
def prune_magnitude_cases():
    g = gen(52)
    return [(torch.randn(4, 5, generator=g), 0.5), (torch.randn(3, 3, generator=g), 0.0),
            (torch.randn(2, 8, generator=g), 0.3), (torch.randn(2, 2, generator=g), 1.0)]


PROBLEMS = [kv_cache_update_cases, quantize_int8_cases, validate_request_cases, left_pad_cases,
            latency_percentile_cases, prune_magnitude_cases]


def problems():
    """q1, q2, ... for the exercise notebook."""
    return problems_of(PROBLEMS)
