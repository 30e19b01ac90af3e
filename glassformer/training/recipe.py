"""One training recipe: what every task's run does, around what the task states.

A task (``lm.py``, ``mlm.py``, ``vit.py``, ``caption.py``, ``translation.py``, ``classify.py``)
says only what differs — how it reads its data, builds its model, computes its loss and
evaluates — and this module does the rest, in the same order for every task::

    settings    settings_for: the task's settings; resuming, the run's own are the defaults
                (one rule, merged_settings, for Python and the command line alike)
    the run     start_run (runs.py): the run directory's rules, the processes, device and precision
    checks      checked: the run's fingerprint; resuming another task, model or data is refused
    the model   seeded_model: the same seed gives the same initial weights
    training    train: the Trainer over the task's Recipe (AdamW on a cosine schedule unless the
                task states another), evaluation cadence, checkpoints, the summary line
    after       evaluate_best: the held-out evaluation of ``best/``, written to ``results.json``

Adding a task costs one small file: its settings (a :class:`~glassformer.training.runs.RunSettings`
with a ``task`` name in ``runs.TASKS``), its data, model, loss and evaluation, and a function
that hands them to :func:`train` as a :class:`Recipe`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from ..errors import ConfigError
from ..files import write_text_atomically
from ..model_dir import TOKENIZER, load_model_dir, save_model_dir
from ..models import build_model
from ..tokenizers import Tokenizer
from .checkpoints import find_checkpoint, read_training_info
from .distributed import barrier, shutdown
from .optim import adamw
from .runs import Run, check_resume, check_task, fingerprint, summary, trainer_config
from .schedules import Schedule
from .trainer import StepLoss, Trainer, TrainResult


# -- settings: one rule for which settings win on resume --------------------------------------------
def saved_run(run_dir: str | Path, task: str) -> dict[str, Any]:
    """The fingerprint of the run saved in ``run_dir`` (``runs.fingerprint``): its "settings" and
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


# -- before training: the checks, the tokenizer, the data files, the model ----------------------------
def checked(run: Run, settings, config, steps: int, *, sources: dict[str, Any] | None = None,
            **data: Any) -> dict[str, Any]:
    """The run's fingerprint (``runs.fingerprint``: the task, the model ``config``, the settings and
    ``data``); a resumption of another task, model, config or data is refused now, before anything is
    written (``steps``: the run's total, more than it was set to when extending)."""
    fp = fingerprint(settings, config, sources=sources, **data)
    check_resume(run, fp, steps)
    return fp


def resumed_tokenizer(run: Run, name: str = TOKENIZER) -> Tokenizer | None:
    """The tokenizer ``name`` the resumed run saved (None for a new run, or when it saved none)."""
    if not run.resume:
        return None
    path = find_checkpoint(run.out_dir) / name
    return Tokenizer.load(path) if path.exists() else None


def written_once(run: Run, build: Callable[[], Any], read: Callable[[], Any]) -> Any:
    """Data whose files the main process writes (``build``) and the others read once written (``read``)."""
    data = build() if run.world.main else None
    barrier(run.world)
    return data if run.world.main else read()


def seeded_model(config, seed: int) -> nn.Module:
    """The model of ``config``, its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return build_model(config)


def saver(tokenizer: Tokenizer | None, generation: dict[str, Any], **extra: Any) -> Callable[[Path, nn.Module], None]:
    """The trainer's ``save``: a model directory with ``tokenizer`` and ``generation.json``."""
    def save(path: Path, model: nn.Module) -> None:
        save_model_dir(path, model, tokenizer, generation=generation, **extra)
    return save


# -- training --------------------------------------------------------------------------------------
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


class Trained(NamedTuple):
    model: nn.Module
    result: TrainResult


def train(run: Run, settings, fp: dict[str, Any], recipe: Recipe) -> Trained:
    """Train ``recipe.model`` with the Trainer until ``recipe.steps`` (continuing the resumed run),
    evaluating every ``eval_every`` steps, saving ``best/``, ``last/`` and the checkpoints; the
    processes are shut down at the end, whatever happens."""
    steps = recipe.steps or settings.steps
    schedule = recipe.schedule or Schedule.cosine(settings.lr, settings.warmup, settings.min_lr_ratio)
    optimizer = recipe.optimizer or (lambda m: adamw(m, settings.lr, settings.weight_decay,
                                                     getattr(settings, "betas", (0.9, 0.999))))
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
    return Trained(trainer.model, result)


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


__all__ = ["Recipe", "Trained", "train", "saved_run", "merged_settings", "settings_for", "checked",
           "resumed_tokenizer", "written_once", "seeded_model", "saver", "evaluate_best"]
