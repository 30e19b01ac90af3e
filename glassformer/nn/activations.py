"""The activation functions, by the names configs use — the one place they are listed."""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,                                              # the paper's FFN
    "gelu": F.gelu,                                              # exact (erf) GELU: BERT
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),        # GPT-2's "gelu_new"
    "silu": F.silu,                                              # SiLU = swish: Llama's SwiGLU gate
    "swish": F.silu,                                             # the same, by Marian's name
}


def activation_fn(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"activation={name!r} is unknown; choose one of {sorted(ACTIVATIONS)}") from None


__all__ = ["ACTIVATIONS", "activation_fn"]
