"""Dynamic int8 quantisation of a GPT's Linear layers, in plain PyTorch.

torch.ao.quantization.quantize_dynamic (and the quantized qint8 tensors it builds) is deprecated in
torch 2.x in favour of torchao; the method itself is short, so the book writes it out:
  weights: int8 per output channel, w ~= w_int8 * w_scale  (symmetric, scale = max|w| / 127)
  activations: int8 per row, chosen at run time ("dynamic"): x ~= x_int8 * x_scale
  y = (x_int8 @ w_int8^T) [int32 accumulate] * x_scale * w_scale + bias
"""
import copy
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


def quantize_dynamic_int8(model: nn.Module, skip: Iterable[str] = ()) -> nn.Module:
    """A CPU copy of `model` with every nn.Linear (except names in `skip`) replaced by Int8Linear."""
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ValueError("the model has no nn.Linear layers to quantise")
    q = copy.deepcopy(model).cpu().eval()
    skip = set(skip)
    for name, module in list(q.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full not in skip:
                setattr(module, child_name, Int8Linear.from_float(child))
    return q


def count_int8_layers(model: nn.Module) -> int:
    return sum(isinstance(m, Int8Linear) for m in model.modules())
