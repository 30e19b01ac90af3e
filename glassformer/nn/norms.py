"""Normalisation layers, chosen by name.

* ``layernorm`` (Ba et al. 2016): what the paper applies after each sublayer;
  ``(x - mean) / sqrt(var + eps) * γ + β`` (β optional: ``bias=False``).
* ``rmsnorm`` (Zhang & Sennrich 2019): ``x / sqrt(mean(x²) + eps) * γ``, no centring
  and no bias (Llama, T5).

Both are PyTorch's own modules (``torch.nn.LayerNorm``, ``torch.nn.RMSNorm``).
"""

from __future__ import annotations

from torch import nn
from torch.nn import LayerNorm, RMSNorm

from ..errors import ConfigError

NORMS = ("layernorm", "rmsnorm")


def make_norm(kind: str, d_model: int, *, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """A normalisation over the last dimension (d_model) of kind ``layernorm`` or ``rmsnorm``."""
    if kind == "layernorm":
        return LayerNorm(d_model, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps=eps)
    raise ConfigError(f"norm={kind!r} is unknown; choose one of {list(NORMS)}")


__all__ = ["NORMS", "make_norm", "LayerNorm", "RMSNorm"]
