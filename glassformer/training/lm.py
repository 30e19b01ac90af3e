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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..data.lm import LMBatch, LMData, read_corpus, read_ids
from ..data.streams import WindowStream
from ..errors import ConfigError
from ..models import GPT, build_model, preset
from ..tokenizers import Tokenizer
from ..model_dir import TOKENIZER, save_model_dir
from .checks import check_positive_int, check_preset, check_types
from .optim import adamw
from .schedules import Schedule
from .checkpoints import find_checkpoint
from .distributed import barrier, shutdown
from .runs import RunSettings, check_resume, fingerprint, start_run, summary, trainer_config
from .trainer import StepLoss, Trainer, TrainResult

TOKENIZERS = ("char", "bpe")


@dataclass
class LMSettings(RunSettings):
    """Everything a language-model training run needs besides the text (and how it runs: RunSettings)."""

    preset: str = "gpt-mini"
    model: dict[str, Any] = field(default_factory=dict)   # overrides of the preset's fields
    tokenizer: str = "char"              # "char" | "bpe" (byte-level, GPT-2 style)
    vocab_size: int = 4096               # BPE only
    block_size: int | None = None        # tokens per training window; None = the model's context
    batch_size: int = 12                 # windows per micro-batch
    grad_accum: int = 1                  # micro-batches per step, over all processes (a multiple of their number)
    steps: int = 2000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1            # the cosine ends at lr * min_lr_ratio
    warmup: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    clip_norm: float | None = 1.0
    eval_every: int = 250
    eval_batches: int = 20
    keep_checkpoints: int = 0            # step-* model directories kept (for checkpoint averaging)
    seed: int = 0

    task: ClassVar[str] = "lm"

    def __post_init__(self) -> None:
        check_types(self)
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"tokenizer={self.tokenizer!r} is invalid; choose one of {list(TOKENIZERS)}")
        check_positive_int(self, "batch_size", "grad_accum", "steps", "eval_every", "eval_batches", "vocab_size")
        check_positive_int(self, "block_size", optional=True)
        self.check_run_settings()
        check_preset(self, "gpt")



@dataclass
class LMRun:
    model: GPT
    tokenizer: Tokenizer
    data: LMData
    result: TrainResult
    out_dir: Path


def build_tokenizer(texts: list[str], kind: str, vocab_size: int) -> Tokenizer:
    if kind == "char":
        return Tokenizer.train_char(texts)
    return Tokenizer.train_byte_bpe(texts, vocab_size)


def lm_loss(module, batch: LMBatch) -> StepLoss:
    """The summed next-token loss of ``batch``, through the (possibly wrapped) model's forward."""
    return StepLoss(module(batch.x, batch.y, reduction="sum"), batch.n_tokens)


@torch.no_grad()
def evaluate_lm(model: GPT, batches: list[LMBatch], device) -> dict[str, float]:
    """Mean next-token cross-entropy (nats) over ``batches`` and its perplexity."""
    total = tokens = 0.0
    for batch in batches:
        batch = batch.to(device)
        total += float(model(batch.x, batch.y, reduction="sum"))
        tokens += batch.n_tokens
    loss = total / tokens
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}


def prepare(source: str | Path, settings: LMSettings, tokenizer: Tokenizer | None = None):
    """Read and tokenize the corpus and check the settings against the model, before anything
    is written: returns (tokenizer, config, block_size, texts).  ``tokenizer``: an existing one
    (a resumed run's) instead of training one."""
    texts = read_corpus(source)
    tokenizer = tokenizer or build_tokenizer(texts, settings.tokenizer, settings.vocab_size)
    config = preset(settings.preset, **{**settings.model, "vocab_size": tokenizer.vocab_size})
    if config.family != "gpt":
        raise ConfigError(f"preset {settings.preset!r} is a {config.family} model; train lm needs a GPT preset")
    block = settings.block_size or config.max_len
    if block > config.max_len:
        raise ConfigError(f"block size {block} is more than the model's {config.max_len} positions "
                          f"(preset {settings.preset!r}); use --block-size <= {config.max_len}")
    return tokenizer, config, block, texts


def train_lm(source: str | Path, settings: LMSettings, out_dir: str | Path, *, resume: bool = False,
             extend: bool = False) -> LMRun:
    """Train a GPT on the text of ``source`` (a file, a folder, or a built-in corpus: "tiny-shakespeare",
    "python-stdlib"); save ``out_dir/best`` and ``out_dir/last`` model directories.  ``resume``: continue
    the run in ``out_dir`` exactly where its last checkpoint stopped (``extend``: to ``settings.steps``,
    more than it was set to)."""
    run = start_run(settings, out_dir, resume, extend)
    saved_tokenizer = Tokenizer.load(find_checkpoint(run.out_dir) / TOKENIZER) if resume else None
    tokenizer, config, block, texts = prepare(source, settings, saved_tokenizer)
    fp = fingerprint(settings, config, source=str(source), block_size=block)
    check_resume(run, fp, settings.steps)
    tokens_file = run.out_dir / "tokens.npy"
    if run.world.main:
        data = LMData.build(texts, tokenizer, tokens_file, block)
    barrier(run.world)
    if not run.world.main:
        data = LMData(read_ids(tokens_file), block)
    torch.manual_seed(settings.seed)
    model = build_model(config)
    val_generator = torch.Generator().manual_seed(settings.seed + 1)
    val_batches = [data.batch("val", settings.batch_size, val_generator) for _ in range(settings.eval_batches)]

    def save(path: Path, model: GPT) -> None:
        save_model_dir(path, model, tokenizer, generation={"task": "lm", "temperature": 0.8, "top_k": 200,
                                                            "block_size": block})

    schedule = Schedule.cosine(settings.lr, settings.warmup, settings.min_lr_ratio)
    trainer = Trainer(
        model,
        lambda m: adamw(m, settings.lr, settings.weight_decay, settings.betas),
        schedule.for_steps(settings.steps),
        lm_loss, lambda m: evaluate_lm(m, val_batches, run.device), save,
        trainer_config(settings, run, max_steps=settings.steps),
        run.out_dir, run.device, world=run.world, fingerprint=fp,
        summary=summary("gpt", model, run, data=f"{len(data.splits['train']):,} training and "
                        f"{len(data.splits['val']):,} validation tokens",
                        batch=f"batch {settings.batch_size} × {block} tokens × {settings.grad_accum} micro-batches = "
                              f"{settings.batch_size * block * settings.grad_accum:,} tokens per step",
                        steps=settings.steps, schedule=schedule),
    )
    stream = WindowStream(data, "train", settings.batch_size, settings.seed, rank=run.world.rank,
                          world=run.world.size)
    try:
        result = trainer.fit(stream, resume=resume, extend=extend)
    finally:
        shutdown(run.world)
    return LMRun(trainer.model, tokenizer, data, result, run.out_dir)


__all__ = ["LMSettings", "LMRun", "train_lm", "prepare", "evaluate_lm", "lm_loss", "build_tokenizer"]
