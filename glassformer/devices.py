"""Choosing where a model runs and in what precision.

``pick_device``: ``auto`` picks CUDA, then Apple's MPS, then the CPU.
``pick_dtype``: the inference dtype from one of ``DTYPE_NAMES`` — ``auto`` is bf16 on a
CUDA GPU that supports it, float32 elsewhere; fp16 is refused on the CPU (its kernels
there are slow or missing).  Every command parses ``--dtype`` through this one function.
"""

from __future__ import annotations

import torch

from .errors import ConfigError

DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = ("auto", *DTYPES)


def available_devices() -> list[str]:
    """The device kinds this machine can run on, e.g. ``["cpu"]`` or ``["cpu", "cuda"]``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        found.append("mps")
    return found


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → the fastest available device; otherwise the named one (``cuda:1`` allowed),
    with a :class:`ConfigError` that lists what exists when it is not available here."""
    if isinstance(name, torch.device):
        return name
    available = available_devices()
    if name == "auto":
        return torch.device("cuda" if "cuda" in available else "mps" if "mps" in available else "cpu")
    kind = str(name).split(":")[0]
    if kind not in DEVICE_KINDS:
        raise ConfigError(f"device {name!r} is unknown; choose one of {list(DEVICE_KINDS)} "
                          f"(available here: {', '.join(available)})")
    if kind not in available:
        raise ConfigError(f"device {name!r} is not available on this machine; available: {', '.join(available)} "
                          "(or 'auto')")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a valid device name; use e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if kind == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def pick_dtype(name: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """The dtype to run a model in on ``device``: ``fp32``, ``bf16``, ``fp16`` (or the torch dtype
    itself), or ``auto`` / None = bf16 on a CUDA GPU that supports it, else float32.  A dtype the
    device cannot run is a :class:`ConfigError`."""
    device = torch.device(device)
    if name is None or name == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if isinstance(name, torch.dtype):
        dtype, label = name, {v: k for k, v in DTYPES.items()}.get(name, str(name))
    elif name in DTYPES:
        dtype, label = DTYPES[name], name
    else:
        raise ConfigError(f"dtype {name!r} is unknown; choose one of {list(DTYPE_NAMES)}")
    if dtype not in DTYPES.values():
        raise ConfigError(f"dtype {name} is not an inference dtype; choose one of {list(DTYPE_NAMES)}")
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError("dtype fp16 is not supported on the CPU; use bf16 or fp32 there (fp16 is for GPUs)")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"dtype {label} is not supported by this GPU; use fp16 or fp32")
    return dtype


__all__ = ["pick_device", "pick_dtype", "available_devices", "DEVICE_KINDS", "DTYPES", "DTYPE_NAMES"]
