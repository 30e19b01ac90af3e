"""What every Hugging Face family shares: reading a model directory (``config.json`` and
``model.safetensors``, never pickles) and the names of activation functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..files import read_json


def model_with_weights(model_cls, config, state: dict[str, Tensor], source: str | Path,
                       dtype: torch.dtype = torch.float32):
    """``model_cls(config)`` holding ``state``, in eval mode, without initialising weights that are
    overwritten: built on the meta device, loaded strictly with ``assign=True``, tied again (the
    assignment replaced the shared Parameters), and its config-derived buffers (positional
    tables) computed for real.  A mismatch is a CheckpointError naming ``source``."""
    with torch.device("meta"):
        model = model_cls(config)
    from ..model_dir import check_shapes

    check_shapes(model, {k: tuple(v.shape) for k, v in state.items()}, source)
    try:
        model.load_state_dict({k: v.detach().to(dtype) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source} does not match its config.json ({str(e).splitlines()[0]})") from None
    model.tie_weights()
    for module in model.modules():
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()
    return model.eval()


def tensor_taker(weights: dict[str, Tensor], family: str, prefix: str):
    """``take(name)``: the checkpoint tensor ``name`` (with or without the leading ``prefix``, which
    checkpoints saved from the bare model lack), or a CheckpointError naming it."""
    hf = {k.removeprefix(prefix): v for k, v in weights.items()}

    def take(name: str) -> Tensor:
        if name not in hf:
            raise CheckpointError(f"the {family} checkpoint lacks the tensor {name!r}")
        return hf[name]
    return take


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


# Hugging Face's activation names (``transformers.activations.ACT2FN``) -> ours (``glassformer.nn.ACTIVATIONS``):
# the one place the two vocabularies meet.
_ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",                      # exact (erf) GELU
    "gelu_new": "gelu_tanh",             # GPT-2's tanh approximation ...
    "gelu_pytorch_tanh": "gelu_tanh",    # ... and PyTorch's implementation of the same
    "silu": "silu",                      # Llama
    "swish": "swish",                    # Marian's name for SiLU
}


def activation_to_hf(name: str) -> str:
    """The Hugging Face name of our activation ``name`` (the first of its spellings above)."""
    for theirs, ours in _ACTIVATIONS.items():
        if ours == name:
            return theirs
    raise ConfigError(f"activation {name!r} has no Hugging Face name; known: {sorted(set(_ACTIVATIONS.values()))}")


def split_rows(tensor: Tensor, sizes: list[int]) -> list[Tensor]:
    """The inverse of concatenating along dim 0 (fused projections): contiguous parts."""
    return [part.contiguous() for part in tensor.split(sizes, dim=0)]


def activation_from_hf(name: str, field: str = "activation_function") -> str:
    """Our name for the Hugging Face activation ``name`` (read from the config field ``field``)."""
    if name not in _ACTIVATIONS:
        raise ConfigError(f"{field}={name!r} is not supported; known: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]
