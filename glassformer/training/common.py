"""What the task files (lm, mlm, vit, caption, translation, classify) share besides the recipe: the
summed loss a step trains on, sums over fixed evaluation batches, perplexity, a digest of the data.

Resuming, the same for every task's ``train_*`` / ``finetune_*``: ``resume`` continues the run in
``out_dir`` exactly where its last checkpoint stopped (``extend``: to ``settings.steps``, more than it
was set to); ``settings`` as a dict of the settings that change (or None) and the data None take the
run's own, as ``--resume`` does."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import Any, Callable, Iterable

import torch

from .trainer import StepLoss


def summed_loss(inputs: Callable[[Any], tuple], **options: Any) -> Callable[[Any, Any], StepLoss]:
    """The loss of a step: the (possibly wrapped) model's forward on ``inputs(batch)`` with
    ``reduction="sum"``, which the trainer divides by ``batch.n_tokens`` (what the task counts)."""
    def loss(module, batch) -> StepLoss:
        return StepLoss(module(*inputs(batch), reduction="sum", **options), batch.n_tokens)
    return loss


@torch.no_grad()
def summed(batches: Iterable, device, measure: Callable[[Any], dict[str, float]]) -> Counter:
    """The sums over ``batches`` (each moved to ``device``) of the figures ``measure(batch)`` returns."""
    sums = Counter()
    for batch in batches:
        sums.update(measure(batch.to(device)))
    return sums


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats), capped at exp(50) so a diverged run still logs a number."""
    return math.exp(min(loss, 50.0))


def digest(lines: Iterable[str]) -> str:
    """A short fingerprint of the training data, one line per example (a resumed run must read the same data)."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
    return h.hexdigest()[:16]


__all__ = ["summed_loss", "summed", "perplexity", "digest"]
