"""Learning-rate schedules, as plain functions of the step and LambdaLR wrappers.

* ``noam_lr``: the paper's (§5.3)  lrate = d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)
  — linear warm-up, then decay with the inverse square root of the step.
* ``cosine_lr``: linear warm-up then cosine decay to ``min_lr`` (GPT-3, nanoGPT).
* ``linear_lr``: BERT's fine-tuning schedule, linear warm-up then linear decay to 0.

A run states its schedule once as a :class:`Schedule`: made for any number of steps, so that
extending a run (``--extend``) can say what the longer schedule does to the learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def noam_lr(step: int, d_model: int, warmup: int = 4000, factor: float = 1.0) -> float:
    """The paper's schedule at optimiser step ``step`` (1-based; step 0 is treated as 1)."""
    step = max(step, 1)
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def cosine_lr(step: int, max_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps to ``max_lr``, then half a cosine down to ``min_lr`` at ``total``."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def linear_lr(step: int, warmup: int, total: int) -> float:
    """BERT's schedule, relative to the peak: linear warm-up over ``warmup`` steps, then linear decay
    to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def noam_schedule(optimizer: Optimizer, d_model: int, warmup: int = 4000, factor: float = 1.0) -> LambdaLR:
    """Set the optimiser's lr to ``noam_lr`` at each step (its base lr must be 1.0)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = 1.0
    return LambdaLR(optimizer, lambda i: noam_lr(i + 1, d_model, warmup, factor))


def cosine_schedule(optimizer: Optimizer, warmup: int, total: int, min_ratio: float = 0.1) -> LambdaLR:
    """Cosine with warm-up relative to each group's base lr, decaying to ``min_ratio`` of it."""
    return LambdaLR(optimizer, lambda i: cosine_lr(i, 1.0, warmup, total, min_ratio))


def fine_tuning_schedule(optimizer: Optimizer, kind: str, warmup: int, total: int) -> LambdaLR:
    """A fine-tuning run's: ``linear_lr``, or (``kind`` "cosine") cosine to 0, after ``warmup`` steps."""
    if kind == "cosine":
        return cosine_schedule(optimizer, warmup, total, min_ratio=0.0)
    return LambdaLR(optimizer, lambda i: linear_lr(i, warmup, total))


@dataclass
class Schedule:
    """A run's learning-rate schedule, by name, for any number of steps: ``make(optimizer,
    total_steps)`` returns the LambdaLR; ``lr`` is the peak rate the optimiser is given."""

    name: str
    make: Callable[[Optimizer, int], LambdaLR]
    lr: float

    @classmethod
    def cosine(cls, lr: float, warmup: int, min_ratio: float) -> Schedule:
        """:func:`cosine_schedule` from peak rate ``lr``."""
        return cls("cosine", lambda optimizer, total: cosine_schedule(optimizer, warmup, total, min_ratio), lr)

    def for_steps(self, total: int) -> Callable[[Optimizer], LambdaLR]:
        """The trainer's ``make_scheduler`` for a run of ``total`` steps."""
        return lambda optimizer: self.make(optimizer, total)

    def rates(self, total: int) -> Callable[[int], float]:
        """The learning rate of each step (1-based) of a run of ``total`` steps."""
        scheduler = self.make(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=self.lr), total)
        return lambda step: scheduler.base_lrs[0] * scheduler.lr_lambdas[0](step - 1)

    def extension(self, reached: int, old: int, new: int) -> str:
        """What extending a run from ``old`` to ``new`` steps, resumed after step ``reached``, does to
        its learning rate: one phrase for the run's summary line."""
        before, after = self.rates(old), self.rates(new)
        nxt = reached + 1
        steps = range(nxt, new + 1)
        head = f"extending from {old:,} to {new:,} steps: the {self.name} schedule"
        if all(before(s) == after(s) for s in steps[:: max(1, len(steps) // 1000)]):
            return (f"{head} does not depend on the number of steps, so the learning rate goes on as it would have "
                    f"({after(nxt):.3g} at step {nxt:,}, {after(new):.3g} at step {new:,})")
        return (f"{head} is stretched to {new:,} steps: the learning rate at step {nxt:,} is {after(nxt):.3g} "
                f"(the {old:,}-step schedule gives {before(nxt):.3g}) and {after(new):.3g} at step {new:,}")
