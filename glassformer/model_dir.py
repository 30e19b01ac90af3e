"""A model directory loaded for use: glassformer's own layout or a Hugging Face one, on a device.

Glassformer's own layout (its files, :func:`save_model_dir`, :func:`read_config`, the weights' checks)
is ``glassformer.model_format``; a Hugging Face directory is mapped by ``glassformer.interop``.  Both
are importable from here, so ``glassformer.model_dir`` is the one name a user needs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ConfigError
from .interop import hugging_face_type, load_hf_directory
from .interop.peft import is_adapter_dir, load_adapter
from .model_format import (CONFIG, GENERATION, SOURCE_TOKENIZER, TOKENIZER, WEIGHTS, ModelDir, check_shapes,
                           load_weights, read_config, read_model_dir, save_model_dir)


def load_model_dir(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> ModelDir:
    """Load a model directory written by :func:`save_model_dir` (weights checked against the config), or
    a Hugging Face directory that ``glassformer.interop`` maps, ready for inference.

    ``dtype``: the floating-point type to hold the weights in for inference (``torch.float32``,
    ``torch.bfloat16`` or ``torch.float16``; ``glassformer.devices.pick_dtype`` parses names);
    None keeps float32.  The file's weights are read in float32 and cast once.  A model in a
    lower precision still returns float32 next-token logits from its decoding step.

    A LoRA adapter directory (``adapter_config.json``, ``glassformer.interop.peft``) loads as its base
    model with the adapter applied."""
    path = Path(path)
    if dtype is not None and dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigError(f"dtype {dtype} is invalid for inference; use torch.float32, torch.bfloat16 or torch.float16")
    if is_adapter_dir(path):
        return load_adapter(path, device, dtype)
    hf_type = hugging_face_type(path)
    loaded = read_model_dir(path) if hf_type is None else load_hf_directory(path, hf_type)
    loaded.model.to(device=device, dtype=dtype).eval()
    return loaded


__all__ = ["load_model_dir", "ModelDir", "save_model_dir", "read_config", "read_model_dir", "load_weights",
           "check_shapes", "CONFIG", "WEIGHTS", "TOKENIZER", "SOURCE_TOKENIZER", "GENERATION"]
