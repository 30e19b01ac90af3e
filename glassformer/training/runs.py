"""What every training command shares around the :class:`~glassformer.training.trainer.Trainer`:
the run settings (precision, compilation, non-finite policy, processes, logging), the run
directory's rules (a new run never overwrites an old one; ``resume`` continues it) and the
summary a run prints first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..devices import pick_device
from ..errors import ConfigError
from ..models.config import dataclass_from_dict
from . import distributed
from .checkpoints import (check_fingerprint, existing_run, find_checkpoint, read_training_checkpoint,
                          read_training_info)
from .checks import check_positive_int, check_shared_settings
from .distributed import World
from .precision import PRECISIONS, resolve_precision
from .schedules import Schedule
from .trainer import ON_NAN, TrainerConfig

# Settings that may change between a run and its resumption (they do not change what is learned).
RESUMABLE_CHANGES = {"device", "progress", "time_limit", "precision", "compile", "on_nan", "distributed", "log_every",
                     "tensorboard", "eval_every", "eval_batches", "keep_checkpoints"}

# The training tasks (the ``task`` of their settings): what a run of each is, and the command that continues it.
TASKS = {
    "lm": ("a language-model", "train lm"),
    "mlm": ("a masked-LM", "train mlm"),
    "translation": ("a machine-translation", "train translation"),
    "classify": ("a classification fine-tuning", "finetune classify"),
    "vit": ("a ViT image-classification", "train vit"),
    "caption": ("an image-captioning", "train caption"),
}


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
    task: ClassVar[str] = ""                             # the task's name in TASKS, recorded with the run

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
    extend: bool = False                              # a resumed run set to more steps than it was
    saved: dict[str, Any] = field(default_factory=dict)   # the resumed checkpoint's training.json


def start_run(settings: RunSettings, out_dir: str | Path, resume: bool, extend: bool = False) -> Run:
    """Check the run directory and join the processes: a new run refuses a directory that holds a
    run; a resumed one needs a checkpoint there (``extend``: it is trained for more steps than it
    was set to).  Nothing is written."""
    out_dir = Path(out_dir)
    saved = {}
    if extend and not resume:
        raise ConfigError("--extend trains a run for more steps than it was set to: give it with --resume RUN_DIR "
                          "and --steps N")
    if resume:
        saved = read_training_info(find_checkpoint(out_dir))     # a clear error if there is nothing to resume
    else:
        found = existing_run(out_dir) if out_dir.is_dir() else None
        if found:
            raise ConfigError(f"{out_dir} already holds {found}; continue it with --resume {out_dir}, "
                              f"or choose another --out")
    world, device = distributed.setup(settings.distributed, pick_device(settings.device))
    precision = resolve_precision(settings.precision, device)
    return Run(out_dir, world, device, precision, resume, extend, saved)


def fingerprint(settings: RunSettings, config, *, sources: dict[str, Any] | None = None,
                **data: Any) -> dict[str, Any]:
    """The run as it starts, saved with every checkpoint: its task; what a resumed run must share
    with it (checkpoints.COMPARED: the model's family and config, the settings that shape what is
    learned, the data); and what only serves as the defaults of a resumption: the settings it may
    change ("resumable") and where the data was read from, when "data" does not say it ("sources")."""
    every = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}
    fp = {"task": settings.task, "family": config.family, "model": config.to_dict(),
          "settings": {k: v for k, v in every.items() if k not in RESUMABLE_CHANGES}, "data": data,
          "resumable": {k: v for k, v in every.items() if k in RESUMABLE_CHANGES}}
    if sources:
        fp["sources"] = sources
    return fp


def check_task(saved: dict[str, Any], task: str, run_dir: str | Path) -> None:
    """Refuse to continue a run of another task (``saved``: its fingerprint), naming the command that does."""
    theirs = saved.get("task")                  # absent in runs saved before the task was recorded
    if theirs and theirs != task:
        what, command = TASKS.get(theirs, (f"a {theirs}", f"train {theirs}"))
        raise ConfigError(f"{run_dir} is {what} ({theirs}) run; resume it with "
                          f"`glassformer {command} --resume {run_dir}`")


def saved_steps(info: dict[str, Any]) -> int:
    """The number of steps a saved run was set to (``info``: its training.json)."""
    steps = info.get("max_steps") or info.get("fingerprint", {}).get("settings", {}).get("steps")
    return steps or info.get("step", 0)     # a run saved before max_steps was recorded, set in epochs


def check_resume(run: Run, fp: dict[str, Any], steps: int) -> None:
    """Refuse early (before any file is written) to resume a run of another task, family, config or
    data, or from a damaged checkpoint; with ``run.extend``, ``steps`` (the run's new total) must be
    more than the run was set to."""
    if not run.resume:
        return
    path = find_checkpoint(run.out_dir)
    read_training_checkpoint(path)              # a damaged training.pt is refused now, not after the data is written
    saved = run.saved.get("fingerprint", {})
    check_task(saved, fp["task"], run.out_dir)
    check_fingerprint(saved, fp, path, extend=run.extend)
    before = saved_steps(run.saved)
    if run.extend and steps <= before:
        raise ConfigError(f"--extend trains {run.out_dir} for more steps than its {before:,} (it stopped at step "
                          f"{run.saved.get('step', 0):,}): give --steps N with N > {before:,}, not {steps:,}")


def trainer_config(settings, run: Run, **task: Any) -> TrainerConfig:
    """The trainer's configuration: every :class:`TrainerConfig` field that ``settings`` has under
    the same name (grad_accum, clip_norm, eval_every, time_limit, ...), the run's resolved
    precision, then what the task gives (``max_steps``, a derived ``eval_every`` ...)."""
    shared = {f.name for f in dataclasses.fields(TrainerConfig)} & {f.name for f in dataclasses.fields(settings)}
    return TrainerConfig(**{**{name: getattr(settings, name) for name in shared}, "precision": run.precision, **task})


def summary(family: str, model: torch.nn.Module, run: Run, *, data: str, batch: str, steps: int,
            schedule: Schedule) -> str:
    """The one line a run starts with (an extended run's says what the longer ``schedule`` does)."""
    from ..models.transformer import num_parameters

    procs = f" × {run.world.size} processes ({run.world.kind})" if run.world.size > 1 else ""
    line = (f"training {family} ({num_parameters(model):,} parameters) on {data}; device {run.device}{procs}, "
            f"precision {run.precision}; {batch}; {steps:,} steps")
    if run.extend:
        line += "; " + schedule.extension(run.saved["step"], saved_steps(run.saved), steps)
    return line


__all__ = ["RunSettings", "Run", "start_run", "fingerprint", "check_task", "check_resume", "saved_steps",
           "trainer_config", "summary", "RESUMABLE_CHANGES", "TASKS"]
