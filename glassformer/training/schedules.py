"""Learning-rate schedules, as plain functions of the step and LambdaLR wrappers.

* ``noam_lr``: the paper's (§5.3)  lrate = d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)
  — linear warm-up, then decay with the inverse square root of the step.
* ``cosine_lr``: linear warm-up then cosine decay to ``min_lr`` (GPT-3, nanoGPT).
"""

from __future__ import annotations

import math

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


def noam_schedule(optimizer: Optimizer, d_model: int, warmup: int = 4000, factor: float = 1.0) -> LambdaLR:
    """Set the optimiser's lr to ``noam_lr`` at each step (its base lr must be 1.0)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = 1.0
    return LambdaLR(optimizer, lambda i: noam_lr(i + 1, d_model, warmup, factor))


def cosine_schedule(optimizer: Optimizer, warmup: int, total: int, min_ratio: float = 0.1) -> LambdaLR:
    """Cosine with warm-up relative to each group's base lr, decaying to ``min_ratio`` of it."""
    return LambdaLR(optimizer, lambda i: cosine_lr(i, 1.0, warmup, total, min_ratio))
