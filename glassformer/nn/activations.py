"""The activation functions, by the names configs use — the one place they are listed."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..errors import ConfigError

# GPT-2's GELU, tanh-approximated ("gelu_new"):
#     gelu_tanh(x) = ½ x (1 + tanh(z)),  z = √(2/π) (x + 0.044715 x³)
#                  = x σ(2z)                       since ½ (1 + tanh(z)) = σ(2z)
#     gelu_tanh'(x) = σ(2z) + x σ(2z) (1 − σ(2z)) · 2√(2/π) (1 + 3 · 0.044715 x²)
# The same function; in float32 on the CPU the σ form is the faster one (PyTorch's CPU tanh is about
# 4× slower than its σ), so it is used there, with the derivative computed in the forward pass and kept
# in place of the input (the memory the built-in kernel keeps): the backward pass is one product.
# Elsewhere (GPU, bf16/fp16) PyTorch's fused kernel is used.
_TWO_ROOT_2_OVER_PI = 2 * math.sqrt(2 / math.pi)
_CUBIC = 0.044715


def _polynomial(x: Tensor, cubic: float) -> Tensor:
    """2√(2/π) (1 + cubic · x²), elementwise, in one pass."""
    return torch.addcmul(x.new_tensor(_TWO_ROOT_2_OVER_PI), x, x, value=_TWO_ROOT_2_OVER_PI * cubic)


def _sigmoid_2z(x: Tensor) -> Tensor:
    """σ(2z) = σ(2√(2/π) x (1 + 0.044715 x²)), elementwise."""
    return _polynomial(x, _CUBIC).mul_(x).sigmoid_()


class _GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        s = _sigmoid_2z(x)
        y = x * s
        slope = _polynomial(x, 3 * _CUBIC).mul_(y)                   # x σ(2z) · 2z'
        slope.addcmul_(slope, s, value=-1).add_(s)                  # · (1 − σ(2z)), + σ(2z): gelu_tanh'(x)
        ctx.save_for_backward(slope)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        slope, = ctx.saved_tensors
        return grad * slope


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation: equal to ``F.gelu(x, approximate="tanh")`` within float32
    rounding (tested), faster on the CPU in float32.  Any shape."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return F.gelu(x, approximate="tanh")
    if torch.is_grad_enabled() and x.requires_grad:
        return _GeluTanh.apply(x)
    return x * _sigmoid_2z(x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,                                              # the paper's FFN
    "gelu": F.gelu,                                              # exact (erf) GELU: BERT
    "gelu_tanh": gelu_tanh,                                      # GPT-2's "gelu_new"
    "silu": F.silu,                                              # SiLU = swish: Llama's SwiGLU gate
    "swish": F.silu,                                             # the same, by Marian's name
}


def activation_fn(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"activation={name!r} is unknown; choose one of {sorted(ACTIVATIONS)}") from None


__all__ = ["ACTIVATIONS", "activation_fn", "gelu_tanh"]
