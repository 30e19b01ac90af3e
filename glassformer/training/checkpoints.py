"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A training checkpoint is a model directory (config.json, model.safetensors, tokenizer files,
generation.json: loadable by every command) with two more files:

    last/
      config.json  model.safetensors  tokenizer.json  generation.json     the model directory
      training.json    step, steps asked for, best validation loss, history, world
                       size, and the run's fingerprint: its task, the family, model
                       config, settings that shape what is learned and data that a
                       resume must match, and (the defaults of a resume) the settings
                       it may change and where the data was read from
      training.pt      optimiser, schedule and gradient-scaler state, every random
                       generator (Python, NumPy, torch CPU and CUDA; per process), the
                       running loss the log shows and the data streams' positions
      trained.safetensors    only when some of the model's parameters are frozen (LoRA):
                       the trained ones, by their names in the model's state dict.  The
                       checkpoint's own directory may then hold a part of the model only
                       (an adapter directory); a resumed run rebuilds the rest as it
                       started (the base model the settings name) and loads these

``training.pt`` is written with ``torch.save`` and read with ``torch.load(weights_only=True)``:
only tensors and plain containers of numbers and strings load, so a crafted pickle in a run
directory raises an error instead of running its code.  The directory is written to a temporary
sibling, each file fsync'ed, and renamed into place (``glassformer.files.write_atomically``), so a
crash during a save leaves the previous checkpoint whole.

The model-directory functions that used to live here moved to :mod:`glassformer.model_dir`;
their names stay importable from this module.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import read_json, write_atomically, write_text_atomically
from ..model_dir import (
    CONFIG,
    GENERATION,
    SOURCE_TOKENIZER,
    TOKENIZER,
    WEIGHTS,
    ModelDir,
    load_model_dir,
    load_weights,
    read_config,
    save_model_dir,
)

TRAINING_JSON = "training.json"
TRAINING_STATE = "training.pt"
TRAINED = "trained.safetensors"         # the trained parameters of a model with frozen ones
FORMAT = 1


# -- random generators ------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's random generators, as tensors and plain values (loadable with weights_only)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- writing and reading ------------------------------------------------------------------
def save_training_checkpoint(path: str | Path, write_model_dir, info: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write a training checkpoint at ``path`` atomically: ``write_model_dir(dir)`` writes the model
    directory's files, ``info`` goes to training.json and ``state`` (tensors and plain values) to
    training.pt."""

    def fill(tmp: Path) -> None:
        write_model_dir(tmp)
        torch.save(state, tmp / TRAINING_STATE)
        (tmp / TRAINING_JSON).write_text(json.dumps({"format": FORMAT, **info}, indent=1) + "\n", encoding="utf-8")

    return write_atomically(path, fill)


def is_training_checkpoint(path: Path) -> bool:
    return ((path / TRAINING_JSON).is_file() and (path / TRAINING_STATE).is_file()
            and ((path / WEIGHTS).is_file() or (path / TRAINED).is_file()))


def find_checkpoint(run_dir: str | Path) -> Path:
    """The training checkpoint to resume ``run_dir`` from: ``last/``, or — if a crash came between
    the two renames of a save — the previous one kept aside under ``.last.old-*``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"--resume {run_dir}: no such run directory")
    candidates = [run_dir / "last"] + sorted(run_dir.glob(".last.old-*/x"), key=lambda p: p.stat().st_mtime,
                                             reverse=True)
    for candidate in candidates:
        if is_training_checkpoint(candidate):
            return candidate
    raise CheckpointError(f"--resume {run_dir}: it holds no training checkpoint (expected {run_dir / 'last'} "
                          f"with {TRAINING_JSON} and {TRAINING_STATE}); start a new run without --resume")


def remove_unfinished_saves(run_dir: str | Path) -> None:
    """Delete what saves killed half-way left in ``run_dir`` and its ``checkpoints/``: ``.NAME.tmp-*``
    (a new file or directory not yet renamed into place) and ``.NAME.old-*`` (a replaced one not yet
    deleted), except the ``.last.old-*/x`` that :func:`find_checkpoint` resumes from while ``last/``
    is not whole.  Called once a resumed run has read its checkpoint."""
    run_dir = Path(run_dir)
    needed = find_checkpoint(run_dir).parent
    for folder in (run_dir, run_dir / "checkpoints"):
        for leftover in [*folder.glob(".*.tmp-*"), *folder.glob(".*.old-*")]:
            if leftover == needed:
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def read_training_info(path: Path) -> dict[str, Any]:
    """The checkpoint's training.json: step, best loss, history, the run's fingerprint ..."""
    info = read_json(path / TRAINING_JSON, what="training checkpoint", error=CheckpointError)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{path / TRAINING_JSON} is not a glassformer training checkpoint of format {FORMAT}")
    return info


def read_training_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(info from training.json, state from training.pt), read safely: nothing is unpickled
    beyond tensors and plain values."""
    info = read_training_info(path)
    try:
        state = torch.load(path / TRAINING_STATE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path / TRAINING_STATE} holds objects other than tensors and plain values; "
                              f"refusing to load it (it could run code): {str(e).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path / TRAINING_STATE} is truncated or corrupt "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / TRAINING_STATE} does not hold a training state")
    return info, state


# What a resumed run must share with the run it continues (a fingerprint's other parts are its defaults).
COMPARED = ("family", "model", "settings", "data")


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], path: Path, *, extend: bool = False) -> None:
    """A resumed run must be the same run: the same family, model config, settings that shape what is
    learned, and data.  ``extend``: its number of ``steps`` may differ (``recipe.checked`` checks
    that it grows).  A setting the saved run lacks (one added since) counts as its default there
    (``current["defaults"]``)."""
    for key in (k for k in COMPARED if k in current):
        then, now = saved.get(key), current[key]
        if key == "settings" and isinstance(then, dict):
            then = {**{k: v for k, v in current.get("defaults", {}).items() if k in now}, **then}
        if extend and key == "settings" and isinstance(then, dict):
            then, now = ({k: v for k, v in d.items() if k != "steps"} for d in (then, now))
        if then == now:
            continue
        diff: list[str] = []
        if isinstance(now, dict) and isinstance(then, dict):
            diff = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
            what = ", ".join(f"{k}: {then.get(k)!r} there, {now.get(k)!r} now" for k in diff[:3])
        else:
            what = f"{then!r} there, {now!r} now"
        verb = "differ" if key in ("settings", "data") else "differs"
        more = "; to train this run for more steps, add --extend" if key == "settings" and "steps" in diff else ""
        raise CheckpointError(f"cannot resume from {path}: its {key} {verb} ({what}); resume with the settings it "
                              f"was started with, or start a new run in another --out{more}")


def existing_run(run_dir: str | Path) -> str | None:
    """Why ``run_dir`` already holds a run (a description), or None if it holds none."""
    run_dir = Path(run_dir)
    last = run_dir / "last"
    if is_training_checkpoint(last):
        info = read_json(last / TRAINING_JSON, what="training checkpoint", error=CheckpointError)
        return f"a training run saved at step {info.get('step', '?')}"
    found = [name for name in ("best", "last", "checkpoints", "log.jsonl") if (run_dir / name).exists()]
    return f"a previous run ({', '.join(found)})" if found else None


__all__ = ["CONFIG", "GENERATION", "SOURCE_TOKENIZER", "TOKENIZER", "WEIGHTS", "ModelDir", "load_model_dir",
           "load_weights", "read_config", "save_model_dir", "read_json", "write_atomically", "write_text_atomically",
           "TRAINING_JSON", "TRAINING_STATE", "TRAINED", "rng_state", "set_rng_state", "save_training_checkpoint",
           "find_checkpoint", "remove_unfinished_saves", "read_training_info", "read_training_checkpoint",
           "check_fingerprint", "COMPARED", "existing_run", "is_training_checkpoint"]
