"""Training a ViT image classifier: ``glassformer train vit --dataset digits`` (or a folder of images per class).

    from glassformer.training.vit import ViTSettings, train_vit
    run = train_vit("digits", ViTSettings(steps=1500), "runs/vit")
    run.test_accuracy                      # on the held-out 20%, never seen in training or validation

AdamW with weight decay on matrices, warm-up then cosine decay, gradient clipping; the trainer
is the one every family uses (exact resume, checkpoints, precision, processes).  The data are
split by the seed: 20% held out for the test, 10% of the rest for validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..data.images import ImageSet, ImageStream, batches_of, load_digits, load_image_folder, split
from ..errors import ConfigError
from ..models import ViT, preset
from .common import summed, summed_loss
from .checks import check_positive_int
from .recipe import (Recipe, RecipeSettings, Trained, checked, evaluate_best, saver, seeded_model, settings_for,
                     start_run, train)

DATASETS = ("digits",)


@dataclass
class ViTSettings(RecipeSettings):
    """Everything a ViT training run needs besides the images (the rest of the recipe's
    and how it runs: RecipeSettings, RunSettings)."""

    preset: str = "vit-digits"
    steps: int = 1500
    min_lr_ratio: float = 0.01
    shift: int = 0                       # augmentation: move training images by up to this many pixels

    task: ClassVar[str] = "vit"
    family: ClassVar[str] = "vit"

    def check(self) -> None:
        check_positive_int(self, "batch_size", "grad_accum", "steps", "eval_every")


@dataclass
class ViTRun(Trained):
    test_accuracy: float


def load_images(dataset: str | Path, config_size: int | None = None, channels: int | None = None) -> ImageSet:
    if str(dataset) == "digits":
        return load_digits()
    return load_image_folder(dataset, config_size, channels)


image_loss = summed_loss(lambda batch: (batch.images, batch.labels))


def evaluate_images(model: ViT, batches, device) -> dict[str, float]:
    """Mean cross-entropy per image and accuracy."""
    def measure(batch) -> dict[str, float]:
        logits = model(batch.images)
        return {"loss": float(torch.nn.functional.cross_entropy(logits.float(), batch.labels, reduction="sum")),
                "right": float((logits.argmax(-1) == batch.labels).sum()), "n": batch.n_tokens}
    sums = summed(batches, device, measure)
    return {"loss": sums["loss"] / sums["n"], "accuracy": sums["right"] / sums["n"]}


def train_vit(dataset: str | Path | None, settings: ViTSettings | dict[str, Any] | None, out_dir: str | Path, *,
              resume: bool = False, extend: bool = False) -> ViTRun:
    """Train a ViT on ``dataset`` ("digits" or a folder of class folders); save ``out_dir/best``
    and ``out_dir/last``; write the held-out test accuracy to ``out_dir/results.json``.  Resuming:
    :mod:`.common`."""
    settings, saved = settings_for(ViTSettings, settings, out_dir, resume)
    dataset = dataset or saved.get("data", {}).get("dataset")
    run = start_run(settings, out_dir, resume, extend)
    base = preset(settings.preset, **settings.model)
    data = load_images(dataset, None if str(dataset) == "digits" else base.image_size, base.channels)
    size, channels = data.images.shape[-1], data.images.shape[1]
    config = preset(settings.preset, **{**settings.model, "n_classes": len(data.classes), "labels": data.classes})
    if (size, channels) != (config.image_size, config.channels):
        raise ConfigError(f"the images are {channels}×{size}×{size} (channels × pixels) but preset "
                          f"{settings.preset!r} takes {config.channels}×{config.image_size}×{config.image_size}; "
                          "choose a preset (or --config model fields) that fits")
    parts = split(data, settings.seed)
    fp = checked(run, settings, config, settings.steps, dataset=str(dataset), images=len(data.labels))
    model = seeded_model(config, settings.seed)
    valid_batches = batches_of(parts.valid, 256)
    trained = train(run, settings, fp, Recipe(
        model, image_loss, lambda m: evaluate_images(m, valid_batches, run.device),
        saver(None, {"task": "image-classification"}),
        ImageStream(parts.train, settings.batch_size, settings.seed, shift=settings.shift, rank=run.world.rank,
                    world=run.world.size),
        "vit", data=f"{len(parts.train.labels):,} training, {len(parts.valid.labels):,} validation and "
                    f"{len(parts.test.labels):,} test images of {channels}×{size}×{size}, {len(data.classes)} classes",
        batch=f"batch {settings.batch_size} × {settings.grad_accum}", trainer={"rate_unit": "images"}))
    test = evaluate_best(run, trained.result, lambda m: evaluate_images(m, batches_of(parts.test, 256), run.device),
                         lambda test: {"dataset": str(dataset), "test_images": len(parts.test.labels),
                                       "test_accuracy": test["accuracy"], "test_loss": test["loss"]})
    return ViTRun(trained.model, trained.result, run.out_dir, test["accuracy"])


__all__ = ["ViTSettings", "ViTRun", "train_vit", "evaluate_images", "image_loss", "load_images", "DATASETS"]
