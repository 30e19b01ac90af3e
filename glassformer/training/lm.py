"""Language modelling end to end: corpus -> tokenizer -> token ids on disk -> a trained GPT.

Used by ``glassformer train lm`` and usable from Python::

    from glassformer.training.lm import LMSettings, train_lm
    run = train_lm("tiny-shakespeare", LMSettings(preset="gpt-mini", block_size=64, steps=2000), "runs/lm")

The recipe is GPT-2/GPT-3's: AdamW with weight decay on matrices only, a linear
warm-up then cosine decay of the learning rate, gradient clipping at 1.0,
gradient accumulation to reach a larger batch; every ``eval_every`` steps the
validation loss and perplexity are measured and the model saved.

    run_dir/
      tokens.npy      the corpus as token ids (uint16/uint32), memory-mapped
      last/           training checkpoint (a model directory + the state to resume from)
      best/           model directory with the lowest validation loss
      log.jsonl       training and evaluation records (``glassformer plot RUN_DIR`` draws them)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..data.lm import LMBatch, LMData, read_corpus, read_ids
from ..data.streams import WindowStream
from ..errors import ConfigError
from ..models import GPT, preset
from ..tokenizers import Tokenizer
from .common import perplexity, summed, summed_loss
from .checks import check_positive_int
from .recipe import (Recipe, RecipeSettings, Trained, checked, resumed_tokenizer, saver, seeded_model, settings_for,
                     start_run, train, written_once)

TOKENIZERS = ("char", "bpe")


@dataclass
class LMSettings(RecipeSettings):
    """Everything a language-model training run needs besides the text (the rest of the recipe's and
    how it runs: RecipeSettings, RunSettings)."""

    preset: str = "gpt-mini"
    tokenizer: str = "char"              # "char" | "bpe" (byte-level, GPT-2 style)
    vocab_size: int = 4096               # BPE only
    block_size: int | None = None        # tokens per training window; None = the model's context
    batch_size: int = 12                 # windows per micro-batch
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    eval_batches: int = 20

    task: ClassVar[str] = "lm"
    family: ClassVar[str] = "gpt"

    def check(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"tokenizer={self.tokenizer!r} is invalid; choose one of {list(TOKENIZERS)}")
        check_positive_int(self, "batch_size", "grad_accum", "steps", "eval_every", "eval_batches", "vocab_size")
        check_positive_int(self, "block_size", optional=True)


@dataclass
class LMRun(Trained):
    tokenizer: Tokenizer
    data: LMData


def build_tokenizer(texts: list[str], kind: str, vocab_size: int) -> Tokenizer:
    if kind == "char":
        return Tokenizer.train_char(texts)
    return Tokenizer.train_byte_bpe(texts, vocab_size)


lm_loss = summed_loss(lambda batch: (batch.x, batch.y))          # the next-token loss


def evaluate_lm(model: GPT, batches: list[LMBatch], device) -> dict[str, float]:
    """Mean next-token cross-entropy (nats) over ``batches`` and its perplexity."""
    sums = summed(batches, device, lambda b: {"loss": float(model(b.x, b.y, reduction="sum")), "tokens": b.n_tokens})
    loss = sums["loss"] / sums["tokens"]
    return {"loss": loss, "ppl": perplexity(loss)}


def prepare(source: str | Path, settings: LMSettings, tokenizer: Tokenizer | None = None):
    """Read and tokenize the corpus and check the settings against the model, before anything
    is written: returns (tokenizer, config, block_size, texts).  ``tokenizer``: an existing one
    (a resumed run's) instead of training one."""
    texts = read_corpus(source)
    tokenizer = tokenizer or build_tokenizer(texts, settings.tokenizer, settings.vocab_size)
    config = preset(settings.preset, **{**settings.model, "vocab_size": tokenizer.vocab_size})
    return tokenizer, config, window(settings, config, config.max_len), texts


def window(settings, config, default: int) -> int:
    """Tokens per training window: ``settings.block_size`` or ``default``, at most the model's positions."""
    block = settings.block_size or default
    if block > config.max_len:
        raise ConfigError(f"block size {block} is more than the model's {config.max_len} positions "
                          f"(preset {settings.preset!r}); use --block-size <= {config.max_len}")
    return block


def train_lm(source: str | Path | None, settings: LMSettings | dict[str, Any] | None, out_dir: str | Path, *,
             resume: bool = False, extend: bool = False) -> LMRun:
    """Train a GPT on the text of ``source`` (a file, a folder, or a built-in corpus: "tiny-shakespeare",
    "python-stdlib"); save ``out_dir/best`` and ``out_dir/last`` model directories.  Resuming: :mod:`.common`."""
    settings, saved = settings_for(LMSettings, settings, out_dir, resume)
    source = source or saved.get("data", {}).get("source")
    run = start_run(settings, out_dir, resume, extend)
    tokenizer, config, block, texts = prepare(source, settings, resumed_tokenizer(run))
    fp = checked(run, settings, config, settings.steps, source=str(source), block_size=block)
    tokens_file = run.out_dir / "tokens.npy"
    data = written_once(run, lambda: LMData.build(texts, tokenizer, tokens_file, block),
                        lambda: LMData(read_ids(tokens_file), block))
    model = seeded_model(config, settings.seed)
    val_generator = torch.Generator().manual_seed(settings.seed + 1)
    val_batches = [data.batch("val", settings.batch_size, val_generator) for _ in range(settings.eval_batches)]
    trained = train(run, settings, fp, Recipe(
        model, lm_loss, lambda m: evaluate_lm(m, val_batches, run.device),
        saver(tokenizer, {"task": "lm", "temperature": 0.8, "top_k": 200, "block_size": block}),
        WindowStream(data, "train", settings.batch_size, settings.seed, rank=run.world.rank, world=run.world.size),
        "gpt", data=f"{len(data.splits['train']):,} training and {len(data.splits['val']):,} validation tokens",
        batch=f"batch {settings.batch_size} × {block} tokens × {settings.grad_accum} micro-batches = "
              f"{settings.batch_size * block * settings.grad_accum:,} tokens per step"))
    return LMRun(trained.model, trained.result, run.out_dir, tokenizer, data)


__all__ = ["LMSettings", "LMRun", "train_lm", "prepare", "evaluate_lm", "lm_loss", "build_tokenizer"]
