"""Reading a Hugging Face model directory: ``config.json`` and ``model.safetensors`` (never pickles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..errors import CheckpointError
from ..files import read_json


def read_hf_directory(path: str | Path, family: str) -> tuple[dict[str, Any], dict[str, Tensor], Path]:
    """(config dict, weights by name, weights file) of a Hugging Face ``family`` directory."""
    path = Path(path)
    cfg_file, weights_file = path / "config.json", path / "model.safetensors"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file} is missing; a Hugging Face {family} directory needs config.json "
                              "and model.safetensors")
    if not weights_file.is_file():
        raise CheckpointError(f"{weights_file} is missing (only safetensors weights are read, never pickles)")
    hf_config = read_json(cfg_file, what="Hugging Face config", error=CheckpointError)
    try:
        weights = load_file(str(weights_file))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights_file} is corrupt ({str(e).splitlines()[0]})") from None
    return hf_config, weights, weights_file
