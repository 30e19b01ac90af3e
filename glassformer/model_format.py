"""The one checkpoint format: glassformer's own model directory, written and read without the trainer.

    MODEL_DIR/
      config.json              the model config (family + fields), plain JSON
      model.safetensors        the weights (tied matrices stored once), never pickled
      tokenizer.json           the (target / shared) tokenizer, ``tokenizers`` format
      tokenizer_roles.json     only for a checkpoint's own tokenizer: what its special tokens do
                               (BOS, EOS, the ids that end a text, pad or none)
      source_tokenizer.json    only when source and target vocabularies are separate
      generation.json          decoding defaults and what the run recorded (optional)

A directory is written to a temporary sibling and renamed into place, so an
interrupted save never leaves a half-written model behind.  ``glassformer.model_dir.load_model_dir``
loads this layout or a Hugging Face one (``glassformer.interop``) and places the model on a device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from .errors import CheckpointError, ConfigError
from .files import read_json, why_unreadable, write_atomically
from .models import build_model, config_from_dict
from .models.config import ModelConfig
from .tokenizers import Tokenizer

CONFIG, WEIGHTS, TOKENIZER, SOURCE_TOKENIZER, GENERATION = (
    "config.json", "model.safetensors", "tokenizer.json", "source_tokenizer.json", "generation.json")


@dataclass
class ModelDir:
    """What a model directory holds, loaded."""

    model: torch.nn.Module
    config: ModelConfig
    tokenizer: Tokenizer | None = None
    source_tokenizer: Tokenizer | None = None
    generation: dict[str, Any] = field(default_factory=dict)

    @property
    def src_tokenizer(self) -> Tokenizer | None:
        """The source-side tokenizer: its own if separate, else the shared one."""
        return self.source_tokenizer or self.tokenizer


def save_model_dir(
    path: str | Path,
    model: torch.nn.Module,
    tokenizer: Tokenizer | None = None,
    *,
    source_tokenizer: Tokenizer | None = None,
    generation: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (with its ``.config``) and tokenizers as a model directory."""

    def fill(tmp: Path) -> None:
        (tmp / CONFIG).write_text(model.config.to_json() + "\n", encoding="utf-8")
        save_model(model, str(tmp / WEIGHTS))
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER)
        if source_tokenizer is not None:
            source_tokenizer.save(tmp / SOURCE_TOKENIZER)
        if generation:
            (tmp / GENERATION).write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")

    return write_atomically(path, fill)


def read_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    if why := why_unreadable(path, folder=True):
        raise CheckpointError(f"model directory {path} {why} (expected a folder with {CONFIG} and {WEIGHTS})")
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file} is missing; a model directory needs {CONFIG} and {WEIGHTS}")
    data = read_json(cfg_file, what="config", error=CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg_file} must hold a JSON object")
    try:
        return config_from_dict(data)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{cfg_file} is not a valid config: {e}") from None


def load_weights(model: torch.nn.Module, file: str | Path) -> None:
    """Load safetensors weights into ``model``, strictly (every tensor present, shapes equal)."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file} is missing")
    try:
        with safe_open(str(file), "pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file} is corrupt ({str(e).splitlines()[0]})") from None
    check_shapes(model, shapes, file)
    try:
        missing, unexpected = load_model(model, str(file), strict=False)
    except (SafetensorError, RuntimeError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is corrupt or does not match config.json ({str(e).splitlines()[0]})") from None
    if missing or unexpected:
        raise CheckpointError(f"{file} does not match config.json: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")


def check_shapes(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]], source) -> None:
    """Every tensor of ``shapes`` that the model has must have the model's shape: a mismatch is one
    line naming the tensor and both shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, shape in shapes.items():
        if name in expected and expected[name] != shape:
            raise CheckpointError(f"{source}: tensor {name!r} has shape {list(shape)} but the config makes it "
                                  f"{list(expected[name])}; the config and the weights do not belong together")


def read_model_dir(path: str | Path) -> ModelDir:
    """A directory written by :func:`save_model_dir`, its float32 weights on the CPU, checked against the config."""
    path = Path(path)
    config = read_config(path)
    model = build_model(config)
    load_weights(model, path / WEIGHTS)
    tokenizer = Tokenizer.load(path / TOKENIZER) if (path / TOKENIZER).exists() else None
    source = Tokenizer.load(path / SOURCE_TOKENIZER) if (path / SOURCE_TOKENIZER).exists() else None
    generation = read_json(path / GENERATION, what="generation settings", error=CheckpointError) \
        if (path / GENERATION).exists() else {}
    return ModelDir(model, config, tokenizer, source, generation)
