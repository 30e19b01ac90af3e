"""What every training command shares around the :class:`~glassformer.training.trainer.Trainer`:
the run settings (precision, compilation, non-finite policy, processes, logging), the run
directory's rules (a new run never overwrites an old one; ``resume`` continues it) and the
summary a run prints first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..devices import pick_device
from ..errors import ConfigError
from ..models.config import dataclass_from_dict
from . import distributed
from .checkpoints import existing_run, find_checkpoint, read_training_checkpoint, check_fingerprint
from .checks import check_positive_int, check_shared_settings
from .distributed import World
from .precision import PRECISIONS, resolve_precision
from .trainer import ON_NAN, TrainerConfig

# Settings that may change between a run and its resumption (they do not change what is learned).
RESUMABLE_CHANGES = {"device", "progress", "time_limit", "precision", "compile", "on_nan", "distributed", "log_every",
                     "tensorboard", "eval_every", "eval_batches", "keep_checkpoints"}


@dataclass
class RunSettings:
    """How a run executes, shared by every training task's settings."""

    device: str = "auto"
    precision: str = "auto"              # auto (bf16 on a GPU that has it, else fp32) | fp32 | bf16 | fp16
    compile: bool = False                # torch.compile the model
    on_nan: str = "skip"                 # a non-finite loss or gradient: skip the step | stop
    distributed: str | None = None       # None | "ddp" | "fsdp" (under torchrun)
    log_every: int = 10                  # steps between progress lines / log.jsonl "train" records
    tensorboard: bool = False            # also write TensorBoard scalars (the tensorboard extra)
    time_limit: float | None = None
    progress: bool = True

    setting_name: ClassVar[str] = "training setting"   # how an unknown key is named in the error

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The settings from a dict (a --config file, a resumed run's); an unknown key is a ConfigError
        listing the valid ones, and the subclass's checks run."""
        return dataclass_from_dict(cls, data, cls.setting_name)

    def check_run_settings(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is invalid; choose one of {list(PRECISIONS)}")
        if self.on_nan not in ON_NAN:
            raise ConfigError(f"on_nan={self.on_nan!r} is invalid; choose one of {list(ON_NAN)}")
        if self.distributed not in (None, *distributed.KINDS):
            raise ConfigError(f"distributed={self.distributed!r} is invalid; choose one of "
                              f"{list(distributed.KINDS)} or null")
        check_positive_int(self, "log_every")
        check_shared_settings(self)


@dataclass
class Run:
    """A run about to start: where it runs and with what precision."""

    out_dir: Path
    world: World
    device: torch.device
    precision: str
    resume: bool


def start_run(settings: RunSettings, out_dir: str | Path, resume: bool) -> Run:
    """Check the run directory and join the processes: a new run refuses a directory that holds a
    run; a resumed one needs a checkpoint there.  Nothing is written."""
    out_dir = Path(out_dir)
    if resume:
        find_checkpoint(out_dir)                      # a clear error if there is nothing to resume
    else:
        found = existing_run(out_dir) if out_dir.is_dir() else None
        if found:
            raise ConfigError(f"{out_dir} already holds {found}; continue it with --resume {out_dir}, "
                              f"or choose another --out")
    world, device = distributed.setup(settings.distributed, pick_device(settings.device))
    precision = resolve_precision(settings.precision, device)
    return Run(out_dir, world, device, precision, resume)


def fingerprint(settings, config, **data: Any) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: the model's family and config, the
    settings that shape what is learned, and the data."""
    kept = {k: v for k, v in dataclasses.asdict(settings).items() if k not in RESUMABLE_CHANGES}
    kept = {k: list(v) if isinstance(v, tuple) else v for k, v in kept.items()}
    return {"family": config.family, "model": config.to_dict(), "settings": kept, "data": data}


def check_resume(run: Run, fp: dict[str, Any]) -> None:
    """Refuse early (before any file is written) to resume a run of another config or family."""
    if run.resume:
        path = find_checkpoint(run.out_dir)
        info, _ = read_training_checkpoint(path)
        check_fingerprint(info.get("fingerprint", {}), fp, path)


def trainer_config(settings, run: Run, **task: Any) -> TrainerConfig:
    """The trainer's configuration: every :class:`TrainerConfig` field that ``settings`` has under
    the same name (grad_accum, clip_norm, eval_every, time_limit, ...), the run's resolved
    precision, then what the task gives (``max_steps``, a derived ``eval_every`` ...)."""
    shared = {f.name for f in dataclasses.fields(TrainerConfig)} & {f.name for f in dataclasses.fields(settings)}
    return TrainerConfig(**{**{name: getattr(settings, name) for name in shared}, "precision": run.precision, **task})


def summary(family: str, model: torch.nn.Module, run: Run, *, data: str, batch: str, steps: int) -> str:
    """The one line a run starts with."""
    from ..models.transformer import num_parameters

    procs = f" × {run.world.size} processes ({run.world.kind})" if run.world.size > 1 else ""
    return (f"training {family} ({num_parameters(model):,} parameters) on {data}; device {run.device}{procs}, "
            f"precision {run.precision}; {batch}; {steps:,} steps")


__all__ = ["RunSettings", "Run", "start_run", "fingerprint", "check_resume", "trainer_config", "summary",
           "RESUMABLE_CHANGES"]
