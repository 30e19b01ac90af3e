"""Numeric precision of a training run: ``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast with a
gradient scaler).

* ``bf16``: matrix multiplications and attention run in bfloat16 under ``torch.autocast``; the
  weights, the optimiser and the loss stay float32.  bfloat16 has float32's exponent range, so
  no loss scaling is needed.  It also works on a CPU (CPU autocast), which is how the tests
  cover this path.
* ``fp16``: float16 has a narrow range, so the loss is multiplied by a scale before the backward
  pass and the gradients divided again before the step (``torch.amp.GradScaler``), which also
  skips steps whose gradients overflowed.  Only on CUDA.
* ``auto``: bf16 on a GPU that supports it, otherwise fp32.

On CUDA, TF32 matrix multiplications are switched on for whatever stays in float32.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device | str) -> str:
    """``name`` (one of PRECISIONS) -> the precision to use on ``device``: fp32, bf16 or fp16."""
    device = torch.device(device)
    if name not in PRECISIONS:
        raise ConfigError(f"precision={name!r} is invalid; choose one of {list(PRECISIONS)}")
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA GPU (float16 training uses a CUDA gradient scaler); "
                          f"on {device.type} use fp32 or bf16")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU does not support bfloat16; use --precision fp16 or fp32")
    return name


def enable_tf32(device: torch.device | str) -> None:
    """Let float32 matrix multiplications use TF32 tensor cores on CUDA (a no-op elsewhere)."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(precision: str, device: torch.device | str):
    """The context to run forward passes in: autocast to bf16/fp16, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16, none otherwise."""
    return torch.amp.GradScaler(torch.device(device).type) if precision == "fp16" else None


__all__ = ["PRECISIONS", "resolve_precision", "enable_tf32", "autocast", "grad_scaler"]
