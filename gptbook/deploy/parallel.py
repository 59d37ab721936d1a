"""Memory arithmetic of training a GPT too large for one GPU: how many bytes each GPU holds under
tensor parallelism (t), pipeline parallelism (p), data parallelism (d) and ZeRO, computed from the
configuration alone. Chapter 05 measures training memory on the book's small GPT; these are the
published formulas that carry that lesson to GPT-3's size, where nothing here can measure.

Sources:
  weights, gradients, optimizer states: Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward
    Training Trillion Parameter Models", §3.1 and Figure 1: mixed-precision Adam keeps 2 bytes of
    fp16 weights + 2 of fp16 gradients + K = 12 of fp32 optimizer state (master weights, momentum,
    variance) per parameter, 16 in all; ZeRO stage 1 / 2 / 3 splits the optimizer state / also the
    gradients / also the weights over the d data-parallel GPUs.
  tensor and pipeline split of the weights: Shoeybi et al. 2019 (Megatron-LM) and Narayanan et al.
    2021: each matrix of a layer is cut in t pieces (the attention by heads), the layers into p stages.
  activations: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
    Models", §4: per layer, 16-bit activations and 1-byte dropout masks, s = sequence, b = micro-batch,
    h = width, a = heads:
      sbh(34 + 5as/h)                 one GPU (eq. 1)
      sbh(10 + 24/t + 5as/(ht))       tensor parallel (eq. 2)
      sbh(34 + 5as/h) / t             tensor + sequence parallel (eq. 4)
    selective recomputation drops the 5as/h term (the attention scores, softmax and its dropout are
    recomputed in backward), full recomputation keeps only each layer's input, 2sbh (/t with sequence
    parallelism). With the 1F1B pipeline schedule the first stage holds p micro-batches of its L/p
    layers: L layers' worth, whatever p (§4.2.3). The embedding and output layer's activations are
    left out (the paper's extra terms; a few per cent at GPT-3's size).
"""
from __future__ import annotations

import math

from ..config import GPTConfig
from ..model import count_params

RECOMPUTE = ("none", "selective", "full")


def training_memory(config: GPTConfig, tp: int = 1, pp: int = 1, dp: int = 1, zero: int = 0,
                    micro_batch: int = 1, dtype_bytes: int = 2, adam_states: int = 2,
                    sequence_parallel: bool = False, recompute: str = "none") -> dict:
    """Bytes per GPU of the fullest GPU (the first pipeline stage) when training `config` with Adam
    on tp x pp x dp GPUs. dtype_bytes: of the weights and gradients (2: fp16/bf16 mixed precision,
    which adds an fp32 master copy to the optimizer state; 4: fp32). adam_states: fp32 numbers Adam
    keeps per parameter (2: momentum and variance). zero: ZeRO stage 0-3 over the dp GPUs.
    Returns {"params", "params_per_gpu", "gpus", "weights", "grads", "optimizer", "activations",
    "total"} (counts and bytes)."""
    for name, value in (("tp", tp), ("pp", pp), ("dp", dp), ("micro_batch", micro_batch)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if zero not in (0, 1, 2, 3):
        raise ValueError(f"zero must be a ZeRO stage 0, 1, 2 or 3, got {zero!r}")
    if dtype_bytes not in (2, 4):
        raise ValueError(f"dtype_bytes must be 2 (fp16/bf16) or 4 (fp32), got {dtype_bytes!r}")
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute must be one of {RECOMPUTE}, got {recompute!r}")
    if config.n_head % tp:
        raise ValueError(f"tensor parallelism splits the attention by heads: tp={tp} must divide "
                         f"n_head={config.n_head}")
    if config.n_layer % pp:
        raise ValueError(f"pipeline stages take equal shares of the layers: pp={pp} must divide "
                         f"n_layer={config.n_layer}")
    s, b, h, a, L = config.block_size, micro_batch, config.n_embd, config.n_head, config.n_layer
    layer = count_params(config.replace(n_layer=2), False) - count_params(config.replace(n_layer=1), False)
    embeddings = count_params(config) - count_params(config, include_embeddings=False)
    # the first stage: its L/p layers and the embeddings, every matrix cut t ways (LayerNorm gains
    # and the position table are in fact copied on each of the t GPUs: < 0.1 % of a large model)
    per_gpu = (L // pp * layer + embeddings) / tp
    optimizer_bytes = 4 * (adam_states + (dtype_bytes < 4))   # + the fp32 master weights
    weights, grads, optimizer = dtype_bytes * per_gpu, dtype_bytes * per_gpu, optimizer_bytes * per_gpu
    if zero >= 1:
        optimizer /= dp
    if zero >= 2:
        grads /= dp
    if zero >= 3:
        weights /= dp
    attention = 0 if recompute != "none" else 5 * a * s / h     # the a*s*s scores, softmax, dropout mask
    if recompute == "full":
        per_layer = 2 * s * b * h / (tp if sequence_parallel else 1)
    elif sequence_parallel:
        per_layer = s * b * h * (34 + attention) / tp
    else:
        per_layer = s * b * h * (10 + 24 / tp + attention / tp)
    activations = L * per_layer          # 1F1B: p micro-batches x L/p layers on the first stage
    return {"params": count_params(config), "params_per_gpu": math.ceil(per_gpu), "gpus": tp * pp * dp,
            "weights": weights, "grads": grads, "optimizer": optimizer, "activations": activations,
            "total": weights + grads + optimizer + activations}
