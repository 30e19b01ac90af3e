"""One training loop for every family.

The loop is the same whatever the model: take a step's micro-batches (several with gradient
accumulation, shared between processes under data parallelism), compute the loss through the
model's ``forward`` normalised per target token over the *whole* step, back-propagate, clip, step
the optimiser and the schedule; every ``eval_every`` steps evaluate and save.

    run_dir/
      last/          training checkpoint: a model directory + optimiser, schedule, random generators,
                     data position (see training.checkpoints); ``--resume`` continues from it exactly.
                     A model with frozen parameters (LoRA) is saved as ``save`` writes it (an adapter
                     directory) + its trained parameters, which are all a resumed run reloads
      best/          model directory with the lowest validation loss
      checkpoints/step-00001000/ ...   the last ``keep_checkpoints`` evaluations (for averaging)
      log.jsonl      one JSON line per log interval ("train") and per evaluation ("eval")

What makes a step trustworthy and fast:

* **Per-token normalisation.**  Each micro-batch's summed loss is divided by the number of target
  tokens in the whole step (summed over micro-batches and processes), so k micro-batches of any
  padding give the gradient of one big batch.
* **Non-finite steps.**  A step whose gradient norm (or loss) is not finite is skipped — its update
  is not applied — or, with ``on_nan="stop"``, training stops naming the step.  With a fused
  optimiser the skip is decided on the device (the optimiser's ``found_inf``), so the step needs no
  host synchronisation; the count of skipped steps is read at the next log line.
* **No host synchronisation per step.**  Losses, token counts and norms stay tensors; they are read
  every ``log_every`` steps.
* **Precision and compilation.**  Forward passes run under autocast for bf16/fp16 (fp16 with a
  gradient scaler); ``compile`` wraps the model in ``torch.compile``.
* **Signals.**  SIGTERM or Ctrl-C finish the current step, save ``last/`` and raise
  :class:`~glassformer.errors.TrainingInterrupted` (the CLI exits 130 or 143).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from ..devices import pick_device  # noqa: F401  (re-exported: it was defined here)
from ..errors import CheckpointError, ConfigError, TrainingInterrupted, TrainingStopped
from . import distributed
from .checkpoints import (
    TRAINED,
    check_fingerprint,
    find_checkpoint,
    read_training_checkpoint,
    remove_unfinished_saves,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from .distributed import World
from .metrics import MetricsLog
from .precision import autocast, enable_tf32, grad_scaler

ON_NAN = ("skip", "stop")


@dataclass
class StepLoss:
    """What a loss function returns for one micro-batch: the summed loss and how many tokens it covers,
    and any figures of its own to log (a task's: RL's mean reward ...), averaged over the micro-batches and
    steps of each log interval into log.jsonl's "train" records."""

    total: Tensor          # scalar, summed over target tokens
    n_tokens: int          # target tokens in the batch (the normaliser)
    figures: dict[str, Tensor | float] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    max_steps: int
    eval_every: int
    grad_accum: int = 1                  # micro-batches per optimiser step, over all processes together
    clip_norm: float | None = 1.0
    log_every: int = 10
    keep_checkpoints: int = 0            # step-* directories kept for checkpoint averaging
    progress: bool = True                # False: print nothing but warnings (log.jsonl is written all the same)
    rate_unit: str = "tokens"            # what a batch's n_tokens counts, plural: the progress line shows
                                         # "N <rate_unit>/s", log.jsonl's "train" records "<rate_unit>_per_s"
    time_limit: float | None = None      # seconds; stop early (with a final evaluation) if exceeded
    precision: str = "fp32"              # fp32 | bf16 | fp16 (resolved: see training.precision)
    compile: bool = False                # torch.compile the model
    on_nan: str = "skip"                 # skip | stop
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.on_nan not in ON_NAN:
            raise ConfigError(f"on_nan={self.on_nan!r} is invalid; choose one of {list(ON_NAN)}")


@dataclass
class TrainResult:
    steps: int                       # optimiser steps done
    best_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    max_steps: int = 0               # steps asked for
    time_limit: float | None = None  # seconds allowed, if any
    time_limited: bool = False       # the time limit stopped training before max_steps
    skipped_steps: int = 0           # steps skipped for a non-finite loss or gradient
    resumed_from: int = 0            # the step this run resumed at (0 for a fresh run)
    main_process: bool = True        # False on the other processes of a distributed run (they print nothing)

    @property
    def stop_note(self) -> str:
        """Why training ended early, for a summary line ("" when every step asked for was done)."""
        if not self.time_limited:
            return ""
        return f"stopped by the time limit of {self.time_limit:g} s after {self.steps} of {self.max_steps} steps"


class Trainer:
    """Runs the loop.

    ``model``: the plain model (its ``forward`` computes the loss when given targets);
    ``make_optimizer(model)`` and ``make_scheduler(optimizer)`` are called once the model is
    placed and wrapped (FSDP replaces the parameters); ``loss_fn(module, batch) -> StepLoss``
    calls ``module(...)`` (the wrapped module: DDP's hooks must see the forward);
    ``evaluate(model) -> dict`` with at least ``"loss"``; ``save(path, model)`` writes a model
    directory of ``model``; ``fingerprint``: what a resumed run must share with this one.
    """

    def __init__(
        self,
        model: nn.Module,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        make_scheduler: Callable[[torch.optim.Optimizer], Any] | None,
        loss_fn: Callable[[nn.Module, Any], StepLoss],
        evaluate: Callable[[nn.Module], dict[str, float]],
        save: Callable[[Path, nn.Module], Any],
        config: TrainerConfig,
        run_dir: str | Path,
        device: torch.device | str = "cpu",
        *,
        world: World | None = None,
        fingerprint: dict[str, Any] | None = None,
        summary: str = "",
    ):
        self.config, self.run_dir, self.device = config, Path(run_dir), torch.device(device)
        self.world = world or World()
        self.loss_fn, self.evaluate, self.save = loss_fn, evaluate, save
        self.fingerprint, self.summary = fingerprint or {}, summary
        if config.grad_accum % self.world.size:
            raise ConfigError(f"grad_accum={config.grad_accum} micro-batches per step cannot be shared equally "
                              f"between {self.world.size} processes; use a multiple of {self.world.size}")
        self.micro_batches = config.grad_accum // self.world.size      # this process's share of a step
        enable_tf32(self.device)
        self.module, self.model = distributed.wrap(model, self.world, self.device)
        if config.compile:
            self.module = torch.compile(self.module)
        self.optimizer = make_optimizer(self.model)
        self.scheduler = make_scheduler(self.optimizer) if make_scheduler else None
        self.scaler = grad_scaler(config.precision, self.device)
        self.params = [p for p in dict.fromkeys(self.model.parameters()) if p.requires_grad]
        # A model with frozen parameters (LoRA's base) is checkpointed by its trained ones alone.
        self.trained = ({name for name, p in self.model.named_parameters() if p.requires_grad}
                        if len(self.params) < len(dict.fromkeys(self.model.parameters())) else None)
        # A fused optimiser can skip a step on the device (found_inf), without a host synchronisation.
        self._device_skip = bool(getattr(self.optimizer, "_step_supports_amp_scaling", False)) and self.scaler is None
        self._skipped = torch.zeros((), dtype=torch.long, device=self.device)      # steps skipped so far
        self._last_bad = torch.zeros((), dtype=torch.long, device=self.device)     # the last one
        self._signal: int | None = None
        self.running: Tensor | None = None                # the smoothed loss the log shows (on the device)
        self.step = 0
        self.result = TrainResult(steps=0, best_loss=math.inf, max_steps=config.max_steps,
                                  time_limit=config.time_limit, main_process=self.world.main)

    # -- one step --------------------------------------------------------------------------
    def accumulate(self, batches: list) -> tuple[Tensor, Tensor]:
        """Forward and backward over this process's micro-batches of one step, each loss divided by
        the step's target tokens over every micro-batch and process; returns (the summed loss of
        these batches, the step's token count) as tensors on the device."""
        local = torch.tensor(float(sum(int(b.n_tokens) for b in batches)), device=self.device)
        n_tokens = distributed.all_sum(local, self.world)          # every process's tokens, without a sync
        # DDP and FSDP average gradients over the processes; the loss is scaled so they sum them.
        scale = self.world.size / n_tokens
        total = torch.zeros((), device=self.device)
        self.step_figures: dict[str, Tensor | float] = {}        # the loss's own figures, mean over the batches
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with distributed.gradient_sync(self.module, self.world, last):
                with autocast(self.config.precision, self.device):
                    out = self.loss_fn(self.module, batch.to(self.device))
                loss = out.total * scale
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += out.total.detach()
            for name, value in out.figures.items():
                value = value.detach() if isinstance(value, Tensor) else value
                self.step_figures[name] = self.step_figures.get(name, 0.0) + value / len(batches)
        return total, n_tokens

    def train_step(self, batches: list) -> tuple[Tensor, Tensor, Tensor]:
        """One optimiser step over ``batches``; returns (this process's mean loss per token, the
        gradient norm, whether the step was applied) as device tensors."""
        if not self.model.training:          # (a walk over every module: not at every step)
            self.model.train()
        total, n_tokens = self.accumulate(batches)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.clip_norm:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if hasattr(norm, "full_tensor"):                         # a DTensor under FSDP
            norm = norm.full_tensor()
        finite = torch.isfinite(norm)
        if not self.world.active:                                # (ranks may differ in their own loss)
            finite = finite & torch.isfinite(total)
        if self.config.on_nan == "stop" and self._must_stop(finite, total):     # one host check per step
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingStopped(f"step {self.step + 1}: the loss or gradient is not finite (loss "
                                  f"{float(total / n_tokens):.4g}, gradient norm {float(norm):.4g}); training "
                                  f"stopped, {self.run_dir / 'last'} holds the last saved checkpoint")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)                     # skips the step itself on inf/NaN gradients
            self.scaler.update()
        elif self._device_skip:
            self.optimizer.found_inf = (~finite).float()         # the fused kernel skips the update on 1
            self.optimizer.grad_scale = None
            self.optimizer.step()
            del self.optimizer.found_inf, self.optimizer.grad_scale
        elif bool(finite):                                       # an unfused optimiser: decide on the host
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        bad = ~finite
        self._skipped += bad
        self._last_bad.masked_fill_(bad, self.step + 1)
        return total / n_tokens * self.world.size, norm, finite

    def _must_stop(self, finite: Tensor, total: Tensor) -> bool:
        """Whether a step is not finite in a way that ``on_nan="stop"`` stops for.  With a gradient
        scaler (fp16), gradients that overflow are the scaler's to deal with: it skips the step and
        lowers the scale, as it does by design in the first steps; only a loss that is not finite
        (on any process) is the model's."""
        if self.scaler is None:
            return not bool(finite)
        bad = (~torch.isfinite(total)).float()
        return bool(distributed.all_sum(bad, self.world) > 0)

    # -- the loop ------------------------------------------------------------------------------
    def fit(self, stream, *, resume: bool = False, extend: bool = False) -> TrainResult:
        """Train on ``stream`` (an endless iterator of micro-batches with ``state_dict``) until
        ``max_steps``; with ``resume``, first restore everything from ``run_dir/last`` (``extend``:
        a run set to fewer steps, whose schedule now runs to ``max_steps``)."""
        cfg, result = self.config, self.result
        main = self.world.main
        self.stream = stream
        if resume:
            self._restore(stream, extend)
            if main:                                    # what a save killed half-way left behind
                remove_unfinished_saves(self.run_dir)
        elif main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = MetricsLog(self.run_dir, tensorboard=cfg.tensorboard) if main else None
        if resume and self.log:
            self.log.truncate_after(self.step)
        if main and cfg.progress and self.summary:
            print(self.summary + (f"; resuming at step {self.step}" if resume else ""), flush=True)
        start = time.perf_counter()
        plain = not sys.stderr.isatty()                 # a log file or CI: plain lines, not a redrawn bar
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (cfg.progress and main and not plain),
                   unit="step", dynamic_ncols=True)
        window_tokens, window_start = 0.0, time.perf_counter()
        window_figures, window_steps = {}, 0                  # the loss's own figures, summed over the interval
        rate_key = cfg.rate_unit.replace(" ", "_") + "_per_s"          # tokens_per_s, images_per_s ...
        skipped_seen = int(self._skipped)
        with _signals_saved(self):
            while self.step < cfg.max_steps:
                with self._drawing(stream):
                    batches = [next(stream) for _ in range(self.micro_batches)]
                try:
                    loss, norm, _ = self.train_step(batches)
                except Exception as e:                          # the first compiled step compiles
                    if cfg.compile and self.step == result.resumed_from and _is_compile_failure(e):
                        raise ConfigError(f"--compile failed ({_first_line(e)}); run without --compile") from None
                    raise
                self.step += 1
                running = loss if self.running is None else 0.9 * self.running + 0.1 * loss   # on the device
                self.running = running
                window_tokens += sum(int(b.n_tokens) for b in batches) * self.world.size
                for name, value in self.step_figures.items():
                    window_figures[name] = window_figures.get(name, 0.0) + value
                window_steps += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    now = time.perf_counter()
                    lr = self.optimizer.param_groups[0]["lr"]
                    loss_value = float(distributed.all_sum(running, self.world)) / self.world.size
                    record = {"loss": loss_value, "lr": lr, "grad_norm": float(norm),
                              rate_key: window_tokens / max(now - window_start, 1e-9), "elapsed": now - start}
                    figures = self._mean_figures(window_figures, window_steps)
                    record.update(figures)
                    skipped = int(self._skipped)
                    if skipped > skipped_seen and main:
                        bar.write(f"step {int(self._last_bad)}: non-finite loss or gradient; the step was skipped "
                                  f"({skipped} skipped so far)")
                    skipped_seen = skipped
                    if main:
                        self.log.write("train", self.step, **record, skipped=skipped)
                        rate = f"{record[rate_key]:,.0f} {cfg.rate_unit}/s"
                        if cfg.progress and plain:
                            print(f"step {self.step}/{cfg.max_steps}  loss {loss_value:.4f}  lr {lr:.3g}  "
                                  f"grad norm {record['grad_norm']:.3g}  {rate}"
                                  + "".join(f"  {name} {value:.3g}" for name, value in figures.items()), flush=True)
                        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", rate=rate)
                    window_tokens, window_start, window_figures, window_steps = 0.0, now, {}, 0
                out_of_time = cfg.time_limit is not None and time.perf_counter() - start > cfg.time_limit
                if self.world.active and cfg.time_limit is not None:
                    # the processes agree on the step to stop at, where they meet anyway: every log interval
                    out_of_time = self.step % cfg.log_every == 0 and bool(
                        distributed.all_sum(torch.tensor(float(out_of_time), device=self.device), self.world) > 0)
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps or out_of_time:
                    self._evaluate_and_save(bar)
                result.steps = self.step
                if self._stop_requested():
                    if self.step % cfg.eval_every and self.step != cfg.max_steps and not out_of_time:
                        self.save_checkpoint()
                    bar.close()
                    code = 128 + self._signal if self._signal else 130
                    raise TrainingInterrupted(f"at step {self.step}; the checkpoint is {self.run_dir / 'last'}; "
                                              f"continue with --resume {self.run_dir}", code)
                if out_of_time and self.step < cfg.max_steps:
                    result.time_limited = True
                    if main and cfg.progress:
                        bar.write(f"time limit of {cfg.time_limit:.0f}s reached after {self.step} steps")
                    break
        bar.close()
        result.skipped_steps = int(self._skipped)
        result.seconds = time.perf_counter() - start
        if self.log:
            self.log.close()
        return result

    def _mean_figures(self, sums: dict[str, Tensor | float], steps: int) -> dict[str, float]:
        """The loss's own figures of a log interval (``sums``: each step's mean over its micro-batches,
        summed over ``steps`` steps), averaged over the steps and the processes (each saw its own batches)."""
        if not sums:
            return {}
        values = torch.tensor([float(v) for v in sums.values()], dtype=torch.float64, device=self.device)
        values = distributed.all_sum(values, self.world) / self.world.size
        return {name: float(value) / steps for name, value in zip(sums, values.tolist())}

    def _drawing(self, stream):
        """The context a step's micro-batches are drawn in: a stream that samples from the model being
        trained (``samples_from_model``: RL's rollouts) reads its parameters whole under FSDP."""
        if getattr(stream, "samples_from_model", False):
            return distributed.whole_parameters(self.model, self.world)
        return contextlib.nullcontext()

    def _stop_requested(self) -> bool:
        if not self.world.active:
            return self._signal is not None
        if self.step % self.config.log_every:               # processes agree on a stop every log interval
            return False
        flag = torch.tensor(float(self._signal is not None), device=self.device)
        return bool(distributed.all_sum(flag, self.world) > 0)

    # -- evaluation and saving ---------------------------------------------------------------
    def _evaluate_and_save(self, bar) -> None:
        self.model.eval()
        with torch.no_grad(), autocast(self.config.precision, self.device), \
                distributed.whole_parameters(self.model, self.world):
            metrics = {"step": self.step, **self.evaluate(self.model)}
        self.model.train()
        self.result.history.append(metrics)
        if self.world.main:
            self.log.write("eval", self.step, **{k: v for k, v in metrics.items() if k != "step"})
        if self.world.main and self.config.progress:
            bar.write("eval " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in metrics.items()))
        improved = math.isfinite(metrics["loss"]) and metrics["loss"] < self.result.best_loss
        if improved:
            self.result.best_loss = metrics["loss"]
        self.save_checkpoint(best=improved, keep=self.config.keep_checkpoints > 0)

    def save_checkpoint(self, *, best: bool = False, keep: bool = False) -> Path:
        """Write ``last/`` (a training checkpoint), and ``best/`` and a ``checkpoints/step-*`` model
        directory where asked.  Every process calls this together; only the main one writes."""
        weights = distributed.full_state_dict(self.model, self.world)
        optim = distributed.optimizer_state(self.model, self.optimizer, self.world)
        running = None if self.running is None else self.running.detach().cpu()
        # each process's own: its generators, smoothed loss and place in the data (its share of each step)
        rngs, runnings, streams = zip(*distributed.gather((rng_state(), running, self.stream.state_dict()),
                                                          self.world))
        last = self.run_dir / "last"
        if self.world.main:
            if not all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()):
                raise TrainingStopped(f"step {self.step}: the weights are not finite; nothing was saved "
                                      f"({last} holds the last good checkpoint)")
            model = self._model_for_saving(weights)
            info = {"step": self.step, "max_steps": self.config.max_steps,
                    "best_loss": _json_number(self.result.best_loss), "world_size": self.world.size,
                    "fingerprint": self.fingerprint, "history": self.result.history,
                    "skipped_steps": int(self._skipped)}
            state = {"optimizer": optim, "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                     "scaler": self.scaler.state_dict() if self.scaler else None, "rng": list(rngs),
                     "running": list(runnings), "stream": list(streams),
                     "skipped": self._skipped.cpu(), "last_bad": self._last_bad.cpu()}
            save_training_checkpoint(last, lambda tmp: self._write(tmp, model, weights), info, state)
            if best:
                self.save(self.run_dir / "best", model)
            if keep:
                ckpts = self.run_dir / "checkpoints"
                self.save(ckpts / f"step-{self.step:08d}", model)
                for old in sorted(ckpts.glob("step-*"))[: -self.config.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
        distributed.barrier(self.world)
        return last

    def _write(self, path: Path, model: nn.Module, weights: dict[str, Tensor]) -> None:
        """The files of a training checkpoint's model: what ``save`` writes, and for a model with
        frozen parameters its trained ones (``save`` may write only a part of the model, as LoRA's
        adapter directory does, from which the whole could not be restored)."""
        self.save(path, model)
        if self.trained is not None:
            from safetensors.torch import save_file

            save_file({k: weights[k].contiguous() for k in sorted(self.trained)}, str(path / TRAINED))

    def _model_for_saving(self, weights: dict[str, Tensor]) -> nn.Module:
        """A module holding ``weights`` that ``save`` can write: the model itself, or (under FSDP,
        whose parameters are shards) a CPU copy built from its config — on the meta device, so that
        nothing is initialised (no random number is drawn after the generators were saved), and
        then given ``weights`` themselves."""
        if self.world.kind != "fsdp":
            return self.model
        from ..models import build_model

        with torch.device("meta"):
            copy = build_model(self.model.config)
            _same_adapters(copy, self.model)
        copy.load_state_dict(weights, assign=True)
        for name, buffer in self.model.named_buffers():  # those not saved (sinusoids, rotary tables)
            owner, _, leaf = name.rpartition(".")
            if getattr(copy.get_submodule(owner), leaf).is_meta:
                copy.get_submodule(owner).register_buffer(leaf, buffer.cpu(), persistent=False)
        if hasattr(copy, "tie_weights"):                 # (assigning replaced the shared matrix)
            copy.tie_weights()
        return copy

    def _restore(self, stream, extend: bool = False) -> None:
        """Load ``run_dir/last`` (weights, optimiser, schedule, scaler, generators, data position)."""
        path = find_checkpoint(self.run_dir)
        info, state = read_training_checkpoint(path)
        check_fingerprint(info.get("fingerprint", {}), self.fingerprint, path, extend=extend)
        if info.get("world_size", 1) != self.world.size:
            raise CheckpointError(f"cannot resume from {path}: it was trained by {info.get('world_size')} "
                                  f"processes, this run has {self.world.size}; resume with the same number")
        if self.trained is not None:
            weights = self._trained_weights(path)
        else:
            from safetensors.torch import load_file

            from ..model_dir import WEIGHTS

            weights = load_file(str(path / WEIGHTS))
        if self.world.kind == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
        elif self.trained is not None:
            self.model.load_state_dict(weights, strict=False)     # (the names were checked)
        else:
            missing, unexpected = self.model.load_state_dict(weights, strict=False)
            # A tied weight is stored once: the parameter of a missing name may be one that was loaded.
            params = self.model.state_dict(keep_vars=True)
            loaded = {id(params[k]) for k in weights if k in params}
            absent = sorted(k for k in missing if id(params[k]) not in loaded)
            if absent:
                raise CheckpointError(f"{path / WEIGHTS} lacks {len(absent)} tensor(s) of this model "
                                      f"({', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''}); the checkpoint "
                                      "is incomplete or of another model")
            if unexpected:
                raise CheckpointError(f"{path / WEIGHTS} does not fit this model: it holds tensors the model does "
                                      f"not have ({', '.join(sorted(unexpected)[:3])})")
            if hasattr(self.model, "tie_weights"):
                self.model.tie_weights()
        distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"], self.world)
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
            if extend and isinstance(self.scheduler, LambdaLR):
                # the saved rate is the shorter schedule's; the next step takes the longer one's
                for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                               self.scheduler.lr_lambdas):
                    group["lr"] = base * factor(self.scheduler.last_epoch)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][self.world.rank])
        running = state.get("running", [None] * self.world.size)[self.world.rank]
        self.running = None if running is None else running.to(self.device)
        position = state["stream"]           # one per process (a checkpoint before they were: the main process's)
        stream.load_state_dict(position[self.world.rank] if isinstance(position, list) else position)
        self._skipped = state["skipped"].to(self.device)
        self._last_bad = state["last_bad"].to(self.device)
        self.step = int(info["step"])
        self.result.steps = self.result.resumed_from = self.step
        best = info.get("best_loss")
        self.result.best_loss = math.inf if best is None else float(best)
        self.result.history = list(info.get("history", []))

    def _trained_weights(self, path: Path) -> dict[str, Tensor]:
        """The trained parameters of a model with frozen ones, from ``path``'s trained.safetensors: all of
        them and nothing else, or a one-line CheckpointError (the frozen ones are as this run built them)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        file = path / TRAINED
        if not file.is_file():
            raise CheckpointError(f"cannot resume from {path}: it holds no {TRAINED}, the trained parameters of this "
                                  "model, whose other parameters are frozen; it is a checkpoint of another run")
        try:
            weights = load_file(str(file))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{file} is truncated or corrupt ({str(e).splitlines()[0]})") from None
        if set(weights) != self.trained:
            missing, unexpected = sorted(self.trained - set(weights)), sorted(set(weights) - self.trained)
            raise CheckpointError(f"{file} does not hold this model's trained parameters (missing: "
                                  f"{', '.join(missing[:3]) or 'none'}; not trained here: "
                                  f"{', '.join(unexpected[:3]) or 'none'}); it is a checkpoint of another run")
        params = dict(self.model.named_parameters())
        wrong = [k for k in sorted(weights) if tuple(weights[k].shape) != tuple(params[k].shape)]
        if wrong:
            raise CheckpointError(f"{file}: {wrong[0]} has shape {list(weights[wrong[0]].shape)}, this model's "
                                  f"{list(params[wrong[0]].shape)}; it is a checkpoint of another run")
        return weights


def _same_adapters(copy: nn.Module, model: nn.Module) -> None:
    """Give ``copy`` (a model of ``model``'s config) the LoRA adapters ``model`` has, as layers of the
    same shapes (their values are loaded after), so that it holds every tensor of ``model``."""
    from ..nn.lora import LoRALinear, lora_layers

    for name, layer in lora_layers(model):
        parent_name, _, short = name.rpartition(".")
        parent = copy.get_submodule(parent_name) if parent_name else copy
        dropout = layer.lora_dropout.p if isinstance(layer.lora_dropout, nn.Dropout) else 0.0
        setattr(parent, short, LoRALinear(getattr(parent, short), layer.parts, layer.r, layer.scale, dropout))


# -- signals --------------------------------------------------------------------------------
class _signals_saved:
    """While training: the first SIGTERM or SIGINT asks the loop to save and stop after the current
    step; a second one interrupts at once."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.previous = trainer, {}

    def _handle(self, signum, frame) -> None:
        if self.trainer._signal is not None:
            raise KeyboardInterrupt
        self.trainer._signal = signum
        if self.trainer.world.main:
            print(f"\nglassformer: {signal.Signals(signum).name}: saving a checkpoint after this step "
                  "(again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def _is_compile_failure(e: Exception) -> bool:
    try:
        from torch._dynamo.exc import BackendCompilerFailed, TorchDynamoException
    except ImportError:                                 # pragma: no cover
        return False
    return isinstance(e, (BackendCompilerFailed, TorchDynamoException))


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _json_number(x: float) -> float | None:
    return x if math.isfinite(x) else None


__all__ = ["StepLoss", "Trainer", "TrainerConfig", "TrainResult", "ON_NAN"]
