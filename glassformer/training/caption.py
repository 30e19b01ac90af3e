"""Training the image-to-text model: ``glassformer train caption --dataset digits``.

    from glassformer.training.caption import CaptionSettings, train_caption
    run = train_caption("digits", CaptionSettings(steps=1000), "runs/caption")
    run.test_exact_match                   # greedy captions of held-out strips, never-seen digit images

Strips of 1..max_digits digit images are captioned with the digits' names ("seven two nine").
The loss is the label-smoothed cross-entropy per caption token (§5.4); the evaluation is the
validation loss (unsmoothed), teacher-forced token accuracy and the exact match of greedy
captions.  The trainer is the one every family uses (exact resume, checkpoints, precision,
processes); the model directory holds the word-level tokenizer and ``generation.json``
``{"task": "caption"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch.nn.functional as F

from ..data.captions import CaptionBatcher, CaptionStream, load_caption_data, word_tokenizer
from ..errors import ConfigError
from ..models import CaptionModel, preset
from ..tasks.caption import greedy_ids
from .common import summed, summed_loss
from .checks import check_positive_int
from .recipe import (Recipe, RecipeSettings, Trained, checked, evaluate_best, saver, seeded_model, settings_for,
                     start_run, train)

DATASETS = ("digits",)
DIGIT_SIZE = 8                           # scikit-learn's digits are 8×8 pixels, one channel


@dataclass
class CaptionSettings(RecipeSettings):
    """Everything a captioning run needs besides the data (the rest of the recipe's
    and how it runs: RecipeSettings, RunSettings)."""

    preset: str = "caption-digits"
    min_digits: int = 1                  # digits per strip: drawn uniformly from min_digits..max_digits
    max_digits: int = 3
    steps: int = 1000
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    shift: int = 0                       # augmentation: move training strips by up to this many pixels
    valid_strips: int = 500
    test_strips: int = 1000

    task: ClassVar[str] = "caption"
    family: ClassVar[str] = "caption"

    def check(self) -> None:
        check_positive_int(self, "min_digits", "max_digits", "batch_size", "grad_accum", "steps", "valid_strips",
                           "test_strips", "eval_every")
        if self.min_digits > self.max_digits:
            raise ConfigError(f"min_digits={self.min_digits} is more than max_digits={self.max_digits}")


@dataclass
class CaptionRun(Trained):
    test_exact_match: float
    test_token_accuracy: float


def caption_loss(label_smoothing: float):
    return summed_loss(lambda batch: (batch.images, batch.tgt_in, batch.tgt_out), label_smoothing=label_smoothing)


def evaluate_captions(model: CaptionModel, batches, device) -> dict[str, float]:
    """Mean cross-entropy per caption token (no smoothing), teacher-forced token accuracy, and the share of
    strips whose greedy caption is exactly right (all names and the end, nothing more)."""
    pad = model.config.pad_id

    def measure(batch) -> dict[str, float]:
        real = batch.tgt_out != pad
        logits = model(batch.images, batch.tgt_in).float()
        teacher_forced = {"loss": float(F.cross_entropy(logits[real], batch.tgt_out[real], reduction="sum")),
                          "right_tokens": float((logits.argmax(-1) == batch.tgt_out)[real].sum()),
                          "tokens": float(real.sum())}
        width = batch.tgt_out.shape[1]
        ids = greedy_ids(model, batch.images, width)                    # at most the names and EOS
        ids = F.pad(ids, (0, width - ids.shape[1]), value=pad)
        return {**teacher_forced, "exact": float((ids == batch.tgt_out).all(dim=1).sum()), "strips": len(ids)}
    s = summed(batches, device, measure)
    return {"loss": s["loss"] / s["tokens"], "token_accuracy": s["right_tokens"] / s["tokens"],
            "exact_match": s["exact"] / s["strips"]}


def train_caption(dataset: str | None, settings: CaptionSettings | dict[str, Any] | None, out_dir: str | Path, *,
                  resume: bool = False, extend: bool = False) -> CaptionRun:
    """Train an image captioner on ``dataset`` ("digits"); save ``out_dir/best`` and ``out_dir/last``;
    write the held-out test exact match to ``out_dir/results.json``.  Resuming: :mod:`.common`."""
    s, saved = settings_for(CaptionSettings, settings, out_dir, resume)
    dataset = dataset or saved.get("data", {}).get("dataset")
    if str(dataset) not in DATASETS:
        raise ConfigError(f"dataset {str(dataset)!r} is unknown; choose one of {list(DATASETS)}")
    run = start_run(s, out_dir, resume, extend)
    tokenizer = word_tokenizer()
    fixed = dict(image_size=DIGIT_SIZE, image_width=DIGIT_SIZE * s.max_digits, channels=1,
                 vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id,
                 eos_id=tokenizer.eos_id, unk_id=tokenizer.unk_id)
    clash = {k: v for k, v in s.model.items() if k in fixed and v != fixed[k]}
    if clash:
        raise ConfigError(f"model fields {clash} do not fit the data, which sets {fixed}")
    config = preset(s.preset, **{**s.model, **fixed})
    if config.max_len < s.max_digits + 1:
        raise ConfigError(f"max_len={config.max_len} is too short for captions of max_digits={s.max_digits} "
                          f"names and the end token; set model max_len >= {s.max_digits + 1}")
    data = load_caption_data(s.seed, min_digits=s.min_digits, max_digits=s.max_digits, valid_strips=s.valid_strips,
                             test_strips=s.test_strips)
    fp = checked(run, s, config, s.steps, dataset=str(dataset), images=len(data.digits.labels))
    model = seeded_model(config, s.seed)
    batcher = CaptionBatcher(tokenizer)
    valid_batches = batcher.batches(data.valid, 250)
    pools = {k: len(v) for k, v in data.pools.items()}
    trained = train(run, s, fp, Recipe(
        model, caption_loss(s.label_smoothing), lambda m: evaluate_captions(m, valid_batches, run.device),
        saver(tokenizer, {"task": "caption"}),
        CaptionStream(data, batcher, s.batch_size, s.seed, shift=s.shift, rank=run.world.rank, world=run.world.size),
        "caption", data=f"strips of {s.min_digits}-{s.max_digits} digits from {pools['train']:,} training, "
                        f"{pools['valid']:,} validation and {pools['test']:,} test images",
        batch=f"batch {s.batch_size} × {s.grad_accum}", trainer={"rate_unit": "caption tokens"}))
    test = evaluate_best(run, trained.result,
                         lambda m: evaluate_captions(m, batcher.batches(data.test, 250), run.device),
                         lambda test: {"dataset": str(dataset), "digits_per_strip": [s.min_digits, s.max_digits],
                                       "test_strips": len(data.test), "test_images": pools["test"],
                                       "test_exact_match": test["exact_match"],
                                       "test_token_accuracy": test["token_accuracy"], "test_loss": test["loss"]})
    return CaptionRun(trained.model, trained.result, run.out_dir, test["exact_match"], test["token_accuracy"])


__all__ = ["CaptionSettings", "CaptionRun", "train_caption", "evaluate_captions", "caption_loss", "DATASETS"]
