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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from ..data.batching import ParallelDataset, TranslationBatch, token_budget_batches
from ..data.streams import EpochStream
from ..errors import InputError
from ..generation.translation import score, translate, translate_nbest  # noqa: F401  (were defined here)
from ..model_dir import SOURCE_TOKENIZER
from ..models import TRANSLATORS, preset
from ..tokenizers import Tokenizer
from .common import digest, perplexity, summed, summed_loss
from .checks import check_positive_int, check_range
from .optim import paper_adam
from .recipe import (Recipe, RunSettings, Trained, checked, resumed_tokenizer, saver, seeded_model, settings_for,
                     start_run, train)
from .schedules import Schedule, noam_schedule


@dataclass
class TranslationSettings(RunSettings):
    """Everything a translation training run needs besides the data (and how it runs: RunSettings)."""

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
    grad_accum: int = 1                  # batches per step, over all processes (a multiple of their number)
    eval_every: int | None = None        # steps between evaluations; None = once per epoch
    keep_checkpoints: int = 0
    seed: int = 0

    task: ClassVar[str] = "translation"
    family: ClassVar[tuple[str, ...]] = TRANSLATORS

    def check(self) -> None:
        check_positive_int(self, "vocab_size", "max_tokens", "steps", "warmup", "grad_accum")
        check_positive_int(self, "max_sentences", "eval_every", optional=True)
        check_range(self, "lr_factor", 0, low_open=True)


@dataclass
class TranslationRun(Trained):
    tokenizer: Tokenizer                 # target side (shared if shared_vocab)
    source_tokenizer: Tokenizer


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


def translation_loss(label_smoothing: float):
    """The summed label-smoothed loss of a batch, through the (possibly wrapped) model's forward."""
    return summed_loss(lambda batch: (batch.src, batch.tgt_in, batch.tgt_out), label_smoothing=label_smoothing)


def validation(model, batches: list[TranslationBatch], label_smoothing: float, device) -> dict[str, float]:
    """Label-smoothed loss (what is optimised) and perplexity (from the un-smoothed NLL) per target token,
    both from one pass of the model (``target_loss``: the training loss, the fused ``linear_cross_entropy``)."""
    def measure(batch: TranslationBatch) -> dict[str, float]:
        hidden = model.decoder_hidden(batch.src, batch.tgt_in)
        smoothed = float(model.target_loss(hidden, batch.tgt_out, label_smoothing=label_smoothing, reduction="sum"))
        nll = float(model.target_loss(hidden, batch.tgt_out, reduction="sum")) if label_smoothing else smoothed
        return {"loss": smoothed, "nll": nll, "tokens": batch.n_tokens}
    sums = summed(batches, device, measure)
    return {"loss": sums["loss"] / sums["tokens"], "ppl": perplexity(sums["nll"] / sums["tokens"])}


def train_translation(
    train_pairs: Sequence[tuple[str, str]],
    valid_pairs: Sequence[tuple[str, str]],
    settings: TranslationSettings | dict[str, Any] | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    extend: bool = False,
    sources: dict[str, Any] | None = None,
) -> TranslationRun:
    """Train tokenizers and an encoder–decoder (the preset's family: a Transformer or a recurrent
    model); save ``out_dir/best`` and ``out_dir/last`` model directories.  ``sources``: where the pairs
    were read from (files), recorded with the run as the defaults of its resumption (:mod:`.common`)."""
    settings, _ = settings_for(TranslationSettings, settings, out_dir, resume)
    run = start_run(settings, out_dir, resume, extend)
    tgt_tok = resumed_tokenizer(run)
    if tgt_tok is not None:
        src_tok = resumed_tokenizer(run, SOURCE_TOKENIZER) or tgt_tok
    else:
        src_tok, tgt_tok = build_tokenizers(train_pairs, settings.vocab_size, settings.shared_vocab)
    overrides = {"src_vocab_size": src_tok.vocab_size, "tgt_vocab_size": tgt_tok.vocab_size,
                 "pad_id": tgt_tok.pad_id, "bos_id": tgt_tok.bos_id, "eos_id": tgt_tok.eos_id, "unk_id": tgt_tok.unk_id}
    if not settings.shared_vocab:
        overrides["tie_embeddings"] = "decoder"
    config = preset(settings.preset, **{**settings.model, **overrides})
    train_set = ParallelDataset(encode_pairs(train_pairs, src_tok, tgt_tok), config.pad_id, config.bos_id,
                                config.eos_id)
    valid = ParallelDataset(encode_pairs(valid_pairs, src_tok, tgt_tok), config.pad_id, config.bos_id, config.eos_id)
    too_long = max(train_set.lengths + valid.lengths)
    if too_long > config.max_len:
        raise InputError(f"a training sentence has {too_long} tokens but the model takes at most "
                         f"max_len={config.max_len}; raise max_len or filter long sentences")
    fp = checked(run, settings, config, settings.steps, sources=sources, pairs=len(train_pairs),
                 digest=digest(f"{src}\t{tgt}\n" for src, tgt in train_pairs))
    model = seeded_model(config, settings.seed)
    valid_batches = valid.batches(settings.max_tokens, shuffle=False)
    steps_per_epoch = len(token_budget_batches(train_set.lengths, settings.max_tokens, seed=settings.seed,
                                               max_sentences=settings.max_sentences,
                                               by_length=settings.length_buckets))
    trained = train(run, settings, fp, Recipe(
        model, translation_loss(settings.label_smoothing),
        lambda m: validation(m, valid_batches, settings.label_smoothing, run.device),
        saver(tgt_tok, {"task": "translation", "beam": 4, "alpha": 0.6, "max_len_a": 1.0, "max_len_b": 50},
              source_tokenizer=None if settings.shared_vocab else src_tok),
        EpochStream(train_set, settings.max_tokens, settings.seed, max_sentences=settings.max_sentences,
                    by_length=settings.length_buckets, rank=run.world.rank, world=run.world.size),
        config.family, data=f"{len(train_set):,} training and {len(valid):,} validation sentence pairs",
        batch=f"batches of up to {settings.max_tokens:,} tokens × {settings.grad_accum} per step "
              f"({steps_per_epoch:,} batches per epoch)",
        # the paper's schedule: the optimiser's rate is set by the schedule alone
        schedule=Schedule("inverse-square-root", lambda opt, total: noam_schedule(
            opt, config.d_model, settings.warmup, settings.lr_factor), 1.0),
        optimizer=paper_adam,
        trainer={"eval_every": settings.eval_every or steps_per_epoch, "rate_unit": "target tokens"}))
    return TranslationRun(trained.model, trained.result, run.out_dir, tgt_tok, src_tok)
