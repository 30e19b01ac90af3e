"""Masked-language-model pre-training end to end: corpus -> WordPiece -> packed windows -> a trained BERT.

Used by ``glassformer train mlm`` and usable from Python::

    from glassformer.training.mlm import MLMSettings, train_mlm
    run = train_mlm("data/wiki.txt", MLMSettings(preset="bert-small", steps=5000), "runs/mlm")

The recipe is BERT's (Devlin et al. 2019, Appendix A.2) with RoBERTa's dynamic masking:
15% of the tokens selected per batch (80% [MASK], 10% random, 10% kept; see
``glassformer.data.mlm``), the loss only on the selected tokens — and only they are
projected to the vocabulary — AdamW (β = 0.9, 0.999, weight decay 0.01 on matrices),
a linear warm-up then cosine decay of the learning rate, gradient clipping at 1.0.
Every ``eval_every`` steps the validation masked-LM loss and accuracy (the share of
selected tokens whose most likely prediction is the original) are measured on fixed
batches and the model saved.

    run_dir/
      windows.npy     the corpus as [CLS] ... [SEP] windows of token ids, memory-mapped
      last/           training checkpoint (a model directory + the state to resume from)
      best/           model directory with the lowest validation loss (``glassformer fill-mask`` reads it)
      log.jsonl       training and evaluation records (``glassformer plot RUN_DIR`` draws them)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch.nn.functional as F

from ..data.lm import read_corpus, read_ids
from ..data.mlm import IGNORE, Masking, MaskedWindowStream, MLMBatch, MLMData
from ..errors import ConfigError
from ..models import Bert, preset
from ..tokenizers import Tokenizer
from .common import perplexity, summed, summed_loss
from .checks import check_positive_int, check_range
from .lm import window
from .recipe import (Recipe, RecipeSettings, Trained, checked, resumed_tokenizer, saver, seeded_model, settings_for,
                     start_run, train, trained_once, written_once)

DEFAULT_BLOCK = 128        # BERT pre-trains 90% of its steps on 128-token sequences (Appendix A.2)


@dataclass
class MLMSettings(RecipeSettings):
    """Everything a masked-LM training run needs besides the text (the rest of the recipe's and how it
    runs: RecipeSettings, RunSettings)."""

    preset: str = "bert-small"
    vocab_size: int = 8000               # WordPiece vocabulary size (at most; a small corpus gives fewer)
    lowercase: bool = True               # lower-case and strip accents before WordPiece
    block_size: int | None = None        # tokens per window, [CLS] and [SEP] included; None = min(128, positions)
    batch_size: int = 32                 # windows per micro-batch
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    mask_prob: float = 0.15              # the share of tokens selected for prediction
    whole_word: bool = False             # select whole words (a piece and its "##" continuations) together
    eval_batches: int = 20

    task: ClassVar[str] = "mlm"
    family: ClassVar[str] = "bert"

    def check(self) -> None:
        check_positive_int(self, "batch_size", "grad_accum", "steps", "eval_every", "eval_batches", "vocab_size")
        check_positive_int(self, "block_size", optional=True)
        if self.block_size is not None and self.block_size < 3:
            raise ConfigError(f"block_size={self.block_size} is invalid; a window needs [CLS], a token and [SEP]: "
                              "3 or more")
        check_range(self, "mask_prob", 0, 1, low_open=True, high_open=True)


@dataclass
class MLMRun(Trained):
    tokenizer: Tokenizer
    data: MLMData


# the masked-LM loss over the selected positions (tokens, segments, attention mask, targets)
mlm_loss = summed_loss(lambda batch: (batch.tokens, None, None, batch.targets))


def evaluate_mlm(model: Bert, batches: list[MLMBatch], device) -> dict[str, float]:
    """Mean cross-entropy (nats) over the selected positions of ``batches``, its perplexity, and the
    accuracy: the share of selected positions whose most likely token is the original."""
    def measure(batch: MLMBatch) -> dict[str, float]:
        selected = batch.targets != IGNORE
        hidden = model.encode(batch.tokens).hidden[selected]                 # (n_selected, d_model)
        logits = model.mlm_logits(hidden).float()                           # (n_selected, vocab)
        targets = batch.targets[selected]
        return {"loss": float(F.cross_entropy(logits, targets, reduction="sum")),
                "correct": float((logits.argmax(-1) == targets).sum()), "count": batch.n_tokens}
    sums = summed(batches, device, measure)
    loss = sums["loss"] / sums["count"]
    return {"loss": loss, "ppl": perplexity(loss), "accuracy": sums["correct"] / sums["count"]}


def prepare(source: str | Path, settings: MLMSettings, tokenizer: Tokenizer | None = None,
            once: Callable[[Callable[[], Tokenizer]], Tokenizer] = lambda build: build()):
    """Read the corpus, train (or take) the WordPiece tokenizer and check the settings against the
    model, before anything is written: returns (tokenizer, config, block_size, texts).  ``once``
    runs the training (:func:`~.recipe.trained_once`: on the main process only)."""
    texts = read_corpus(source)
    tokenizer = tokenizer or once(lambda: Tokenizer.train_wordpiece(texts, settings.vocab_size,
                                                                    lowercase=settings.lowercase))
    config = preset(settings.preset, **{**settings.model, "vocab_size": tokenizer.vocab_size,
                                        "pad_id": tokenizer.pad_id, "head": "mlm"})
    return tokenizer, config, window(settings, config, min(DEFAULT_BLOCK, config.max_len)), texts


def train_mlm(source: str | Path | None, settings: MLMSettings | dict[str, Any] | None, out_dir: str | Path, *,
              resume: bool = False, extend: bool = False) -> MLMRun:
    """Pre-train a BERT with masked-language modelling on the text of ``source`` (a file, a folder or a
    built-in corpus: "tiny-shakespeare", "python-stdlib"); save ``out_dir/best`` and ``out_dir/last``
    model directories (with the tokenizer).  Resuming: :mod:`.common`."""
    settings, saved = settings_for(MLMSettings, settings, out_dir, resume)
    source = source or saved.get("data", {}).get("source")
    run = start_run(settings, out_dir, resume, extend)
    tokenizer, config, block, texts = prepare(source, settings, resumed_tokenizer(run),
                                              lambda build: trained_once(run, build))
    fp = checked(run, settings, config, settings.steps, source=str(source), block_size=block)
    masking = Masking.from_tokenizer(tokenizer, mask_prob=settings.mask_prob, whole_word=settings.whole_word)
    windows_file = run.out_dir / "windows.npy"
    data = written_once(run, lambda: MLMData.build(texts, tokenizer, windows_file, block, masking),
                        lambda: MLMData(read_ids(windows_file), masking))
    model = seeded_model(config, settings.seed)
    val_batches = data.validation_batches(settings.batch_size, settings.eval_batches, settings.seed + 1)
    n_train, n_val = len(data.splits["train"]), len(data.splits["val"])
    trained = train(run, settings, fp, Recipe(
        model, mlm_loss, lambda m: evaluate_mlm(m, val_batches, run.device), saver(tokenizer, {"task": "fill-mask"}),
        MaskedWindowStream(data, "train", settings.batch_size, settings.seed, rank=run.world.rank,
                           world=run.world.size),
        "bert (masked LM)", data=f"{n_train:,} training and {n_val:,} validation windows of {block} tokens "
                                 f"(vocabulary {tokenizer.vocab_size:,})",
        batch=f"batch {settings.batch_size} × {block} tokens × {settings.grad_accum} micro-batches, "
              f"{settings.mask_prob:.0%} of the tokens masked{' as whole words' if settings.whole_word else ''}",
        trainer={"rate_unit": "masked tokens"}))
    return MLMRun(trained.model, trained.result, run.out_dir, tokenizer, data)


__all__ = ["MLMSettings", "MLMRun", "train_mlm", "prepare", "evaluate_mlm", "mlm_loss"]
