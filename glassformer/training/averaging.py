"""Checkpoint averaging (§6.1): "for the base models, we used a single model obtained by
averaging the last 5 checkpoints, which were written at 10-minute intervals" (20 for big).

The average is element-wise over every stored tensor, in float64, cast back to
each tensor's dtype, and written as an ordinary model directory: what
``translate`` / ``load_model_dir`` read.  Tokenizers and generation settings are
copied from the last checkpoint given (the most recent one under ``--last``).

Checkpoints of a run live in ``RUN_DIR/checkpoints/step-XXXXXXXX/`` (model
directories); :func:`last_checkpoints` picks the K most recent by step number.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, ConfigError
from ..files import read_json, write_atomically
from ..model_dir import CONFIG, GENERATION, SOURCE_TOKENIZER, TOKENIZER, WEIGHTS, read_config

_STEP_DIR = re.compile(r"^step-(\d+)$")


def last_checkpoints(run_dir: str | Path, k: int) -> list[Path]:
    """The ``k`` most recent ``RUN_DIR/checkpoints/step-*`` model directories, oldest first."""
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"--last {k!r} is invalid; it must be a positive number of checkpoints")
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        raise CheckpointError(f"{folder} does not exist; is {run_dir} a training run directory "
                              "(with checkpoints/step-XXXXXXXX/ inside)?")
    steps = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if p.is_dir() and (m := _STEP_DIR.match(p.name)))
    if len(steps) < k:
        raise CheckpointError(f"{folder} holds {len(steps)} step-* checkpoint(s); cannot average the last {k}")
    return [p for _, p in steps[-k:]]


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    file = path / WEIGHTS
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; a model directory needs {CONFIG} and {WEIGHTS}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file} is corrupt ({str(e).splitlines()[0]})") from None


def _config_difference(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:4])


def average_checkpoints(out_dir: str | Path, model_dirs: Sequence[str | Path]) -> Path:
    """Write the element-wise mean of the parameters of ``model_dirs`` to ``out_dir`` (atomically; an
    existing ``out_dir`` is replaced, so the command first refuses one that holds anything).

    Every directory must have the same config (else :class:`ConfigError`) and the
    same tensor names and shapes (else :class:`CheckpointError`).
    """
    dirs = [Path(d) for d in model_dirs]
    if not dirs:
        raise ConfigError("no checkpoints to average; give model directories or --last K RUN_DIR")
    configs = [read_config(d) for d in dirs]
    reference = configs[0].to_dict()
    for d, config in zip(dirs[1:], configs[1:]):
        if config.to_dict() != reference:
            raise ConfigError(f"cannot average checkpoints with different configs: {dirs[0]} and {d} differ in "
                              f"{_config_difference(reference, config.to_dict())}")

    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for i, d in enumerate(dirs):
        weights = _load_weights(d)
        if i == 0:
            total = {k: v.to(torch.float64) for k, v in weights.items()}
            dtypes = {k: v.dtype for k, v in weights.items()}
            continue
        if set(weights) != set(total):
            diff = sorted(set(weights) ^ set(total))[:5]
            raise CheckpointError(f"{d / WEIGHTS} and {dirs[0] / WEIGHTS} hold different tensors (e.g. {diff})")
        for name, tensor in weights.items():
            if tensor.shape != total[name].shape:
                raise CheckpointError(f"tensor {name!r} has shape {tuple(tensor.shape)} in {d} but "
                                      f"{tuple(total[name].shape)} in {dirs[0]}")
            total[name] += tensor.to(torch.float64)
    average = {k: (v / len(dirs)).to(dtypes[k]).contiguous() for k, v in total.items()}

    last = dirs[-1]

    def fill(tmp: Path) -> None:
        (tmp / CONFIG).write_text(configs[-1].to_json() + "\n", encoding="utf-8")
        save_file(average, str(tmp / WEIGHTS), metadata={"format": "pt"})
        for name in (TOKENIZER, SOURCE_TOKENIZER):
            if (last / name).is_file():
                shutil.copyfile(last / name, tmp / name)
        generation = read_json(last / GENERATION, what="generation settings", error=CheckpointError) if (last / GENERATION).is_file() else {}
        generation["averaged_from"] = [str(d) for d in dirs]
        (tmp / GENERATION).write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")

    return write_atomically(out_dir, fill)


__all__ = ["average_checkpoints", "last_checkpoints"]
