"""Dynamic int8 quantisation of a GPT, in plain PyTorch (the lesson), and with torchao (maintained).

torch.ao.quantization.quantize_dynamic (and the quantized qint8 tensors it builds) is deprecated in
torch 2.x in favour of torchao; the method itself is short, so the book writes it out:
  weights: int8 per output channel, w ~= w_int8 * w_scale  (symmetric, scale = max|w| / 127)
  activations: int8 per row, chosen at run time ("dynamic"): x ~= x_int8 * x_scale
  y = (x_int8 @ w_int8^T) [int32 accumulate] * x_scale * w_scale + bias
  the token embedding is tied to the LM head, whose int8 rows ARE int8 embedding rows (one scale
  per token): Int8Embedding looks them up in the head's table, so the file holds one int8 copy.
torchao_int8 is the same recipe with torchao's tensor subclasses (Int8DynamicActivationInt8WeightConfig).
"""
import contextlib
import copy
import logging
from typing import Iterable

import torch
import torch.nn as nn


def quantize_per_row(t: torch.Tensor):
    """Symmetric int8 per row. t: (R, K) float -> (q (R, K) int8, scale (R,) float32)."""
    scale = t.detach().abs().amax(dim=-1).float().clamp(min=1e-8) / 127.0   # (R,)
    q = torch.round(t / scale[:, None]).clamp(-127, 127).to(torch.int8)      # (R, K)
    return q, scale


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights and dynamically int8-quantised inputs. (..., K) -> (..., N)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> "Int8Linear":
        m = cls(linear.in_features, linear.out_features, linear.bias is not None)
        m.weight_int8, m.weight_scale = quantize_per_row(linear.weight.detach().cpu())
        if linear.bias is not None:
            m.bias = linear.bias.detach().cpu().float().clone()
        return m

    def dequantized_weight(self) -> torch.Tensor:
        """(N, K) float weight that the int8 weight stands for."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()                        # (M, K)
        xq, xs = quantize_per_row(x2)                                # (M, K) int8, (M,)
        acc = torch._int_mm(xq, self.weight_int8.t())                # (M, N) int32
        y = acc.float() * xs[:, None] * self.weight_scale[None, :]  # back to float
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Embedding(nn.Module):
    """Token lookup in an Int8Linear's table: row i of the LM head's int8 weight (and its scale) is
    token i's int8 embedding. ids (...) -> (..., C) float. Shares the head's buffers (no copy)."""

    def __init__(self, head: Int8Linear):
        super().__init__()
        self.register_buffer("weight_int8", head.weight_int8)
        self.register_buffer("weight_scale", head.weight_scale)

    def forward(self, ids):
        return self.weight_int8[ids].float() * self.weight_scale[ids][..., None]

    def extra_repr(self):
        return f"{self.weight_int8.size(0)}, {self.weight_int8.size(1)}, int8, tied to the LM head"


def quantize_dynamic_int8(model: nn.Module, skip: Iterable[str] = (), tied_embedding: bool = True) -> nn.Module:
    """A CPU copy of `model` with every nn.Linear (except names in `skip`) replaced by Int8Linear.
    tied_embedding: a GPT's token embedding (tied to lm_head) becomes Int8Embedding over the head's
    int8 table; otherwise it stays fp32 and the head gets its own int8 copy."""
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ValueError("the model has no nn.Linear layers to quantise")
    q = copy.deepcopy(model).cpu().eval()
    skip = set(skip)
    for name, module in list(q.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full not in skip:
                setattr(module, child_name, Int8Linear.from_float(child))
    if tied_embedding and _is_tied(model) and isinstance(q.lm_head, Int8Linear):
        q.transformer.wte = Int8Embedding(q.lm_head)
    return q


def _is_tied(model: nn.Module) -> bool:
    """A GPT whose token embedding and LM head are one tensor."""
    head, emb = getattr(model, "lm_head", None), getattr(getattr(model, "transformer", None), "wte", None)
    return head is not None and emb is not None and head.weight is emb.weight


@contextlib.contextmanager
def _quiet_logs(*names: str):
    """Loggers below ERROR silenced for the block: importing torchao on a CPU-only torch logs that
    its CUDA kernels cannot load, and torch logs a deprecation inside torchao's registrations."""
    logs = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in logs]
    try:
        for lg in logs:
            lg.setLevel(logging.ERROR)
        yield
    finally:
        for lg, lv in zip(logs, levels):
            lg.setLevel(lv)


def torchao_int8(model: nn.Module) -> nn.Module:
    """A CPU copy of `model` quantised by torchao: every nn.Linear with int8 weights (per output
    channel) and int8 activations (per row, at run time), torchao's Int8DynamicActivationInt8WeightConfig.
    A GPT's tied token embedding then reads the head's int8 tensor, as in quantize_dynamic_int8."""
    with _quiet_logs("torchao", "torch.utils._pytree"):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    q = copy.deepcopy(model).cpu().eval()
    tied = _is_tied(model)
    quantize_(q, Int8DynamicActivationInt8WeightConfig())
    if tied:
        q.transformer.wte.weight = q.lm_head.weight   # quantize_ gave the head a new (int8) tensor
    return q


def count_int8_layers(model: nn.Module) -> int:
    return sum(isinstance(m, Int8Linear) for m in model.modules())
