"""One training loop for every family.

The loop is the same whatever the model: take a step's batches (several with
gradient accumulation), compute the loss normalised per target token, back-
propagate, clip, step the optimiser and the schedule, show progress; every
``eval_every`` steps evaluate, keep the best model (by validation loss) and the
last one as model directories.

    run_dir/
      best/                  model directory with the lowest validation loss
      last/                  model directory after the last evaluation
      checkpoints/step-00001000/ ...   the last ``keep_checkpoints`` evaluations (for averaging)
      log.jsonl              one JSON line per evaluation
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..devices import pick_device  # noqa: F401  (re-exported: it was defined here)


@dataclass
class StepLoss:
    """What a loss function returns for one batch: the summed loss and how many tokens it covers."""

    total: Tensor          # scalar, summed over target tokens
    n_tokens: int          # target tokens in the batch (the normaliser)


@dataclass
class TrainerConfig:
    max_steps: int
    eval_every: int
    grad_accum: int = 1
    clip_norm: float | None = 1.0
    log_every: int = 10
    keep_checkpoints: int = 0        # step-* directories kept for checkpoint averaging
    progress: bool = True
    time_limit: float | None = None  # seconds; stop early (with a final evaluation) if exceeded


@dataclass
class TrainResult:
    steps: int                       # optimiser steps done
    best_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    max_steps: int = 0               # steps asked for
    time_limit: float | None = None  # seconds allowed, if any
    time_limited: bool = False       # the time limit stopped training before max_steps

    @property
    def stop_note(self) -> str:
        """Why training ended early, for a summary line ("" when every step asked for was done)."""
        if not self.time_limited:
            return ""
        return f"stopped by the time limit of {self.time_limit:g} s after {self.steps} of {self.max_steps} steps"


class Trainer:
    """Runs the loop.  ``loss_fn(model, batch) -> StepLoss``; batches have ``n_tokens``
    (the target tokens, for the normaliser) and ``to(device)``; ``evaluate(model) -> dict``
    with at least ``"loss"``; ``save(path)`` writes a model directory."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        loss_fn: Callable[[nn.Module, Any], StepLoss],
        evaluate: Callable[[nn.Module], dict[str, float]],
        save: Callable[[Path], Any],
        config: TrainerConfig,
        run_dir: str | Path,
        device: torch.device | str = "cpu",
    ):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.loss_fn, self.evaluate, self.save = loss_fn, evaluate, save
        self.config, self.run_dir, self.device = config, Path(run_dir), torch.device(device)
        self.params = list({id(p): p for p in model.parameters()}.values())

    def train_step(self, batches: list) -> tuple[Tensor, int]:
        """One optimiser step over ``batches`` (gradient accumulation); returns (mean loss, tokens)."""
        self.model.train()
        n_tokens = sum(int(b.n_tokens) for b in batches)
        total = torch.zeros((), device=self.device)
        for batch in batches:
            out = self.loss_fn(self.model, batch.to(self.device))
            (out.total / n_tokens).backward()        # per-token normalisation over the whole step
            total += out.total.detach()
        if self.config.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        return total / n_tokens, n_tokens

    def fit(self, batches: Iterator) -> TrainResult:
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "log.jsonl").unlink(missing_ok=True)       # a new run starts a new log
        result = TrainResult(steps=0, best_loss=math.inf, max_steps=cfg.max_steps, time_limit=cfg.time_limit)
        start = time.perf_counter()
        bar = tqdm(total=cfg.max_steps, disable=not cfg.progress, unit="step", dynamic_ncols=True)
        window_tokens, window_start, running = 0, time.perf_counter(), None
        for step in range(1, cfg.max_steps + 1):
            loss, n_tokens = self.train_step([next(batches) for _ in range(cfg.grad_accum)])
            running = loss if running is None else 0.9 * running + 0.1 * loss   # stays on device: no sync
            window_tokens += n_tokens
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                now = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{running.item():.3f}", lr=f"{lr:.2e}",
                                tok_s=f"{window_tokens / max(now - window_start, 1e-9):,.0f}")
                window_tokens, window_start = 0, now
            out_of_time = cfg.time_limit is not None and time.perf_counter() - start > cfg.time_limit
            if step % cfg.eval_every == 0 or step == cfg.max_steps or out_of_time:
                self._evaluate_and_save(step, result, bar)
            result.steps = step
            if out_of_time and step < cfg.max_steps:
                result.time_limited = True
                bar.write(f"time limit of {cfg.time_limit:.0f}s reached after {step} steps")
                break
        bar.close()
        result.seconds = time.perf_counter() - start
        return result

    def _evaluate_and_save(self, step: int, result: TrainResult, bar) -> None:
        self.model.eval()
        with torch.no_grad():
            metrics = {"step": step, **self.evaluate(self.model)}
        self.model.train()
        result.history.append(metrics)
        with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        bar.write("eval " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
        self.save(self.run_dir / "last")
        if metrics["loss"] < result.best_loss:
            result.best_loss = metrics["loss"]
            self.save(self.run_dir / "best")
        if self.config.keep_checkpoints > 0:
            ckpts = self.run_dir / "checkpoints"
            self.save(ckpts / f"step-{step:08d}")
            for old in sorted(ckpts.glob("step-*"))[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
