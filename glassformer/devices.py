"""Choosing the device a model runs on: ``auto`` picks CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from .errors import ConfigError

DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")


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


__all__ = ["pick_device", "available_devices", "DEVICE_KINDS"]
