"""Training a translator: tokenizers, batches, the paper's recipe (translating and scoring: generation.translation).

Used by ``glassformer train translation``, ``translate``, ``evaluate`` and
``quickstart``, and usable from Python::

    from glassformer.data.numbers import number_corpus
    from glassformer.generation.translation import translate
    from glassformer.training.translation import TranslationSettings, train_translation
    corpus = number_corpus("de", "en", n_train=20000)
    run = train_translation(corpus.train, corpus.valid, TranslationSettings(steps=300), "runs/demo")
    translate(run.model, run.source_tokenizer, run.tokenizer, ["vierunddreißig"])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.batching import ParallelDataset, TranslationBatch, token_budget_batches
from ..errors import InputError
from ..generation.translation import score, translate, translate_nbest  # noqa: F401  (were defined here)
from ..models import Transformer, build_model, preset
from ..models.config import dataclass_from_dict
from ..tokenizers import Tokenizer
from ..model_dir import save_model_dir
from .checks import check_positive_int, check_preset, check_range, check_types
from .losses import LabelSmoothedCrossEntropy
from .optim import paper_adam
from .schedules import noam_schedule
from ..devices import pick_device
from .trainer import StepLoss, Trainer, TrainerConfig, TrainResult


@dataclass
class TranslationSettings:
    """Everything a translation training run needs besides the data."""

    preset: str = "vaswani-small"
    model: dict[str, Any] = field(default_factory=dict)   # overrides of the preset's fields
    vocab_size: int = 8000               # BPE merges stop at this size
    shared_vocab: bool = True            # one BPE for both sides (needed for three-way tying)
    max_tokens: int = 4096               # tokens per batch, padding included
    max_sentences: int | None = None     # and at most this many sentence pairs per batch
    length_buckets: bool = True          # batch sentences of similar length (False: random mixes of lengths)
    steps: int = 4000
    warmup: int = 4000
    lr_factor: float = 1.0               # multiplies the paper's schedule
    label_smoothing: float = 0.1
    clip_norm: float | None = 1.0
    grad_accum: int = 1
    eval_every: int | None = None        # steps between evaluations; None = once per epoch
    keep_checkpoints: int = 0
    seed: int = 0
    device: str = "auto"
    time_limit: float | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        check_types(self)
        check_positive_int(self, "vocab_size", "max_tokens", "steps", "warmup", "grad_accum")
        check_positive_int(self, "max_sentences", "eval_every", optional=True)
        check_range(self, "keep_checkpoints", 0)
        check_range(self, "lr_factor", 0, low_open=True)
        check_range(self, "label_smoothing", 0, 1, high_open=True)
        check_range(self, "clip_norm", 0, low_open=True, optional=True)
        check_range(self, "time_limit", 0, low_open=True, optional=True)
        check_preset(self, "transformer")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TranslationSettings":
        return dataclass_from_dict(cls, data, "training setting")


@dataclass
class TranslationRun:
    model: Transformer
    tokenizer: Tokenizer                 # target side (shared if shared_vocab)
    source_tokenizer: Tokenizer
    result: TrainResult
    out_dir: Path


def build_tokenizers(pairs: Sequence[tuple[str, str]], vocab_size: int, shared: bool) -> tuple[Tokenizer, Tokenizer]:
    """BPE trained on the training text: (source tokenizer, target tokenizer)."""
    if shared:
        tok = Tokenizer.train_bpe([t for pair in pairs for t in pair], vocab_size)
        return tok, tok
    return Tokenizer.train_bpe([s for s, _ in pairs], vocab_size), Tokenizer.train_bpe([t for _, t in pairs], vocab_size)


def encode_pairs(pairs, src_tok: Tokenizer, tgt_tok: Tokenizer) -> list[tuple[list[int], list[int]]]:
    src = src_tok.encode_batch([s for s, _ in pairs])
    tgt = tgt_tok.encode_batch([t for _, t in pairs])
    return list(zip(src, tgt))


def translation_loss(criterion: LabelSmoothedCrossEntropy):
    def loss_fn(model: Transformer, batch: TranslationBatch) -> StepLoss:
        out = criterion(model(batch.src, batch.tgt_in), batch.tgt_out)
        return StepLoss(out.total, batch.n_tokens)
    return loss_fn


def validation(model: Transformer, batches: list[TranslationBatch], criterion, device) -> dict[str, float]:
    """Label-smoothed loss (what is optimised) and perplexity (from the un-smoothed NLL) per target token."""
    total = nll = tokens = 0.0
    for batch in batches:
        batch = batch.to(device)
        out = criterion(model(batch.src, batch.tgt_in), batch.tgt_out, with_nll=True)
        total += float(out.total)
        nll += float(out.nll)
        tokens += int(out.n_tokens)
    return {"loss": total / tokens, "ppl": math.exp(min(nll / tokens, 50.0))}


def train_translation(
    train_pairs: Sequence[tuple[str, str]],
    valid_pairs: Sequence[tuple[str, str]],
    settings: TranslationSettings,
    out_dir: str | Path,
) -> TranslationRun:
    """Train tokenizers and a Transformer; save ``out_dir/best`` and ``out_dir/last`` model directories."""
    torch.manual_seed(settings.seed)
    device = pick_device(settings.device)
    src_tok, tgt_tok = build_tokenizers(train_pairs, settings.vocab_size, settings.shared_vocab)
    overrides = {"src_vocab_size": src_tok.vocab_size, "tgt_vocab_size": tgt_tok.vocab_size,
                 "pad_id": tgt_tok.pad_id, "bos_id": tgt_tok.bos_id, "eos_id": tgt_tok.eos_id, "unk_id": tgt_tok.unk_id}
    if not settings.shared_vocab:
        overrides["tie_embeddings"] = "decoder"
    config = preset(settings.preset, **{**settings.model, **overrides})
    train = ParallelDataset(encode_pairs(train_pairs, src_tok, tgt_tok), config.pad_id, config.bos_id, config.eos_id)
    valid = ParallelDataset(encode_pairs(valid_pairs, src_tok, tgt_tok), config.pad_id, config.bos_id, config.eos_id)
    too_long = max(train.lengths + valid.lengths)
    if too_long > config.max_len:
        raise InputError(f"a training sentence has {too_long} tokens but the model takes at most "
                         f"max_len={config.max_len}; raise max_len or filter long sentences")
    model = build_model(config).to(device)
    optimizer = paper_adam(model)
    scheduler = noam_schedule(optimizer, config.d_model, settings.warmup, settings.lr_factor)
    criterion = LabelSmoothedCrossEntropy(settings.label_smoothing, ignore_index=config.pad_id)
    valid_batches = valid.batches(settings.max_tokens, shuffle=False)
    steps_per_epoch = len(token_budget_batches(train.lengths, settings.max_tokens, seed=settings.seed,
                                               max_sentences=settings.max_sentences,
                                               by_length=settings.length_buckets))
    eval_every = settings.eval_every or steps_per_epoch
    out_dir = Path(out_dir)

    def save(path: Path) -> None:
        save_model_dir(path, model, tgt_tok, source_tokenizer=None if settings.shared_vocab else src_tok,
                       generation={"task": "translation", "beam": 4, "alpha": 0.6, "max_len_a": 1.0, "max_len_b": 50})

    trainer = Trainer(
        model, optimizer, scheduler, translation_loss(criterion),
        lambda m: validation(m, valid_batches, criterion, device), save,
        TrainerConfig(max_steps=settings.steps, eval_every=eval_every, grad_accum=settings.grad_accum,
                      clip_norm=settings.clip_norm, keep_checkpoints=settings.keep_checkpoints,
                      progress=settings.progress, time_limit=settings.time_limit),
        out_dir, device,
    )
    result = trainer.fit(iter(train.forever(settings.max_tokens, seed=settings.seed,
                                            max_sentences=settings.max_sentences,
                                            by_length=settings.length_buckets)))
    return TranslationRun(model, tgt_tok, src_tok, result, out_dir)
