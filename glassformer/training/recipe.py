"""One training recipe: what every task's run does, around what the task states.

A task (``lm.py``, ``mlm.py``, ``vit.py``, ``caption.py``, ``translation.py``, ``classify.py``)
says only what differs — its settings, how it reads its data, builds its model, computes its loss
and evaluates — and this module does the rest, the same way for every task::

    settings    RunSettings (how a run executes) under the task's; settings_for: resuming, the run's
                own are the defaults (merged_settings: one rule, for Python and the command line)
    the run     start_run: a new run never overwrites an old one; the processes, device, precision
    checks      checked: the run's fingerprint; resuming another task, model or data is refused
    the model   seeded_model: the same seed gives the same initial weights (materialised by the trainer)
    training    train: the Trainer over the task's Recipe (AdamW on a cosine schedule unless the task
                states another), evaluation cadence, checkpoints, the summary line a run starts with
    after       evaluate_best: the held-out evaluation of ``best/``, written to ``results.json``

Adding a task costs one small file: its settings (with a ``task`` name in :data:`TASKS`), data,
model, loss and evaluation, handed to :func:`train` as a :class:`Recipe`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import tokenizers
import torch
from torch import nn

from ..devices import pick_device
from ..errors import ConfigError
from ..files import write_text_atomically
from ..model_dir import TOKENIZER, load_model_dir, save_model_dir
from ..models import build_model
from ..models.config import dataclass_from_dict
from ..tokenizers import Tokenizer
from . import distributed
from .checkpoints import (check_fingerprint, existing_run, find_checkpoint, read_training_checkpoint,
                          read_training_info)
from .checks import check_positive_int, check_preset, check_shared_settings, check_types
from .distributed import World, barrier, gather, shutdown
from .optim import adamw
from .precision import PRECISIONS, resolve_precision
from .schedules import Schedule
from .trainer import ON_NAN, StepLoss, Trainer, TrainerConfig, TrainResult

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
    "sft": ("a supervised fine-tuning", "finetune sft"),
    "dpo": ("a preference-optimisation", "train dpo"),
    "rl": ("a reinforcement-learning", "train rl"),
}


# -- settings: how a run executes, and the one rule for which settings win on resume ---------------
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
    family: ClassVar[str | tuple[str, ...]] = ""         # the model family (or families) whose preset ``preset`` names

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The settings from a dict (a --config file, a resumed run's); an unknown key is a ConfigError
        listing the valid ones, and the subclass's checks run."""
        return dataclass_from_dict(cls, data, cls.setting_name)

    def __post_init__(self) -> None:
        """Every check, before anything is read or written: the fields' types, the task's own
        (:meth:`check`), how the run executes, then the preset (when the task names a ``family``)."""
        check_types(self)
        self.check()
        self.check_run_settings()
        if self.family:
            check_preset(self, self.family)

    def check(self) -> None:
        """The task's own checks of its settings (ranges, choices ...)."""

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
class RecipeSettings(RunSettings):
    """What the default recipe reads (AdamW, a linear warm-up then cosine decay; batches, evaluation,
    checkpoints, seed), with defaults; a task's settings state the defaults that differ."""

    model: dict[str, Any] = field(default_factory=dict)   # overrides of the preset's fields
    batch_size: int = 64                 # examples per micro-batch
    grad_accum: int = 1                  # micro-batches per step, over all processes (a multiple of their number)
    steps: int = 2000
    lr: float = 2e-3                     # the peak learning rate
    min_lr_ratio: float = 0.1            # the cosine ends at lr * min_lr_ratio
    warmup: int = 100                    # steps of linear warm-up
    weight_decay: float = 0.05           # AdamW's, on matrices only
    decay_embeddings: bool = False       # the embeddings decay too (nanoGPT's and GPT-2's rule)
    clip_norm: float | None = 1.0
    eval_every: int = 250
    keep_checkpoints: int = 0            # step-* model directories kept (for checkpoint averaging)
    seed: int = 0


def saved_run(run_dir: str | Path, task: str) -> dict[str, Any]:
    """The fingerprint of the run saved in ``run_dir`` (:func:`fingerprint`): its "settings" and
    "resumable" settings (the defaults of its resumption), "model" config, "data" and "sources".
    A run of another task than ``task`` is refused, naming the command that continues it."""
    saved = read_training_info(find_checkpoint(Path(run_dir))).get("fingerprint", {})
    check_task(saved, task, run_dir)
    return saved


def merged_settings(task: str, run_dir: str | Path, resume: bool, *, config: str | Path | None = None,
                    given: dict[str, Any] | None = None,
                    run: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings of a run of ``task`` as a dict, later ones winning: every one the resumed run
    was started with (``resume``), ``config`` (a JSON file of settings), the ``given`` settings,
    then the ``run`` settings (how it runs: precision, compile ...).  Returns it and the resumed
    run's fingerprint (``{}`` for a new run)."""
    from ..models.config import load_config_file

    saved = saved_run(run_dir, task) if resume else {}
    settings = {**saved.get("settings", {}), **saved.get("resumable", {})}
    if config:
        loaded = load_config_file(config)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config} must hold a JSON object of settings")
        settings.update(loaded)
    settings.update(given or {})
    settings.update(run or {})
    return settings, saved


def settings_for(cls, settings, run_dir: str | Path, resume: bool) -> tuple[Any, dict[str, Any]]:
    """``settings`` as the task's settings class ``cls``: an instance is taken as it is; a dict (or
    None) holds only the settings that change, over the resumed run's own (:func:`merged_settings`)
    or, for a new run, the defaults.  Returns them and the resumed run's fingerprint."""
    if isinstance(settings, cls):
        return settings, saved_run(run_dir, cls.task) if resume else {}
    merged, saved = merged_settings(cls.task, run_dir, resume, given=settings)
    return cls.from_dict(merged), saved


# -- the run: its directory, processes, device and precision ----------------------------------------
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
    barrier(world)     # every process has checked the directory before any writes to it (a group joined
                       # earlier, as by a program that trains several runs, does not wait in setup)
    precision = resolve_precision(settings.precision, device)
    return Run(out_dir, world, device, precision, resume, extend, saved)


# -- checks: a resumed run is the run that was started ---------------------------------------------
def fingerprint(settings: RunSettings, config, *, sources: dict[str, Any] | None = None,
                **data: Any) -> dict[str, Any]:
    """The run as it starts, saved with every checkpoint: its task; what a resumed run must share
    with it (checkpoints.COMPARED: the model's family and config, the settings that shape what is
    learned, the data); and what only serves as the defaults of a resumption: the settings it may
    change ("resumable") and where the data was read from, when "data" does not say it ("sources");
    and each setting's default ("defaults": a run saved before a setting existed had its default)."""
    every = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}
    defaults = {f.name: f.default for f in dataclasses.fields(settings)
                if f.name not in RESUMABLE_CHANGES and f.default is not dataclasses.MISSING}
    fp = {"task": settings.task, "family": config.family, "model": config.to_dict(),
          "settings": {k: v for k, v in every.items() if k not in RESUMABLE_CHANGES}, "data": data,
          "resumable": {k: v for k, v in every.items() if k in RESUMABLE_CHANGES},
          "defaults": {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}}
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


def checked(run: Run, settings: RunSettings, config, steps: int, *, sources: dict[str, Any] | None = None,
            **data: Any) -> dict[str, Any]:
    """The run's fingerprint (its task, the model ``config``, the settings and ``data``).  Resuming, a
    run of another task, family, config or data, or a damaged checkpoint, is refused now, before any
    file is written; with ``run.extend``, ``steps`` (the run's new total) must be more than it was set to."""
    fp = fingerprint(settings, config, sources=sources, **data)
    if not run.resume:
        return fp
    path = find_checkpoint(run.out_dir)
    read_training_checkpoint(path)              # a damaged training.pt is refused now, not after the data is written
    saved = run.saved.get("fingerprint", {})
    check_task(saved, fp["task"], run.out_dir)
    check_fingerprint(saved, fp, path, extend=run.extend)
    before = saved_steps(run.saved)
    if run.extend and steps <= before:
        raise ConfigError(f"--extend trains {run.out_dir} for more steps than its {before:,} (it stopped at step "
                          f"{run.saved.get('step', 0):,}): give --steps N with N > {before:,}, not {steps:,}")
    return fp


# -- before training: the tokenizer, the data files, the model ------------------------------------
def resumed_tokenizer(run: Run, name: str = TOKENIZER) -> Tokenizer | None:
    """The tokenizer ``name`` the resumed run saved (None for a new run, or when it saved none)."""
    if not run.resume:
        return None
    path = find_checkpoint(run.out_dir) / name
    return Tokenizer.load(path) if path.exists() else None


def trained_once(run: Run, build: Callable[[], Tokenizer]) -> Tokenizer:
    """A tokenizer that the main process trains (``build``) and sends to the others.  Each process
    training its own would not do: the WordPiece trainer breaks ties between equally frequent pairs
    in a random order, so the processes would learn different vocabularies."""
    trained = build() if run.world.main else None
    text = gather(trained.backend.to_str() if trained is not None else None, run.world)[0]
    return trained if trained is not None else Tokenizer(tokenizers.Tokenizer.from_str(text))


def written_once(run: Run, build: Callable[[], Any], read: Callable[[], Any]) -> Any:
    """Data whose files the main process writes (``build``) and the others read once written (``read``)."""
    data = build() if run.world.main else None
    barrier(run.world)
    return data if run.world.main else read()


def seeded_model(config, seed: int) -> nn.Module:
    """The model of ``config``, its weights drawn from ``seed``: built on the meta device, the trainer
    gives it the weights (under FSDP, each process only its shards: distributed.built_on_meta)."""
    torch.manual_seed(seed)
    return distributed.built_on_meta(lambda: build_model(config))


def saver(tokenizer: Tokenizer | None, generation: dict[str, Any], **extra: Any) -> Callable[[Path, nn.Module], None]:
    """The trainer's ``save``: a model directory with ``tokenizer`` and ``generation.json``."""
    def save(path: Path, model: nn.Module) -> None:
        save_model_dir(path, model, tokenizer, generation=generation, **extra)
    return save


# -- training --------------------------------------------------------------------------------------
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


@dataclass
class Recipe:
    """What a task states for one run; :func:`train` does the rest."""

    model: nn.Module
    loss: Callable[[nn.Module, Any], StepLoss]         # a batch's summed loss through forward, and its count
    evaluate: Callable[[nn.Module], dict[str, float]]  # the validation figures ("loss" first)
    save: Callable[[Path, nn.Module], None]            # a model directory
    batches: Any                                       # the training stream (data.streams)
    family: str                                        # the summary line: what is trained,
    data: str                                          # on what,
    batch: str                                         # in which batches
    steps: int | None = None                           # None: settings.steps
    schedule: Schedule | None = None                   # None: cosine after a linear warm-up (lr, warmup, min_lr_ratio)
    optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None   # None: AdamW (lr, weight_decay, betas)
    trainer: dict[str, Any] = field(default_factory=dict)   # the task's TrainerConfig fields (rate_unit, eval_every)


@dataclass
class Trained:
    """A trained run: the model, the trainer's result and the run directory (a task's run adds what
    else it made: its tokenizer, data, test figures)."""

    model: nn.Module
    result: TrainResult
    out_dir: Path


def train(run: Run, settings, fp: dict[str, Any], recipe: Recipe) -> Trained:
    """Train ``recipe.model`` with the Trainer until ``recipe.steps`` (continuing the resumed run),
    evaluating every ``eval_every`` steps, saving ``best/``, ``last/`` and the checkpoints; the
    processes are shut down at the end, whatever happens."""
    steps = recipe.steps or settings.steps
    schedule = recipe.schedule or Schedule.cosine(settings.lr, settings.warmup, settings.min_lr_ratio)
    optimizer = recipe.optimizer or (lambda m: adamw(m, settings.lr, settings.weight_decay,
                                                     getattr(settings, "betas", (0.9, 0.999)),
                                                     decay_embeddings=settings.decay_embeddings))
    trainer = Trainer(
        recipe.model, optimizer, schedule.for_steps(steps), recipe.loss, recipe.evaluate, recipe.save,
        trainer_config(settings, run, max_steps=steps, **recipe.trainer),
        run.out_dir, run.device, world=run.world, fingerprint=fp,
        summary=summary(recipe.family, recipe.model, run, data=recipe.data, batch=recipe.batch, steps=steps,
                        schedule=schedule),
    )
    try:
        result = trainer.fit(recipe.batches, resume=run.resume, extend=run.extend)
    finally:
        shutdown(run.world)
    return Trained(trainer.model, result, run.out_dir)


def evaluate_best(run: Run, result: TrainResult, evaluate: Callable[[nn.Module], dict[str, float]],
              results: Callable[[dict[str, float]], dict[str, Any]]) -> dict[str, float]:
    """``evaluate`` the saved ``best/`` model on held-out data; the main process writes ``results(figures)``
    and the run's steps, training time and best validation loss to ``results.json``.  Returns the figures."""
    figures = evaluate(load_model_dir(run.out_dir / "best", device=run.device).model)
    if run.world.main:
        write_text_atomically(run.out_dir / "results.json", json.dumps(
            {**results(figures), "steps": result.steps, "train_seconds": round(result.seconds, 1),
             "best_valid_loss": result.best_loss}, indent=2) + "\n")
    return figures


__all__ = ["RunSettings", "RecipeSettings", "Run", "Recipe", "Trained", "start_run", "train", "saved_run", "merged_settings",
           "settings_for", "fingerprint", "checked", "check_task", "saved_steps", "resumed_tokenizer", "written_once",
           "seeded_model", "saver", "trainer_config", "summary", "evaluate_best", "RESUMABLE_CHANGES", "TASKS"]
