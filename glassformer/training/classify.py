"""Fine-tuning a BERT to classify sequences (or to predict a number), end to end.

Used by ``glassformer finetune classify`` and usable from Python::

    from glassformer.data.numbers_language import number_language_corpus
    from glassformer.training.classify import ClassifySettings, finetune_classify
    corpus = number_language_corpus()
    run = finetune_classify(corpus.train, corpus.valid, ClassifySettings(model="bert-small", epochs=2), "runs/cls")

The model is a preset trained from scratch (its WordPiece vocabulary learned from the
training texts) or a model directory — ours, or a Hugging Face BERT such as
all-MiniLM-L6-v2 — whose tokenizer, embeddings and encoder are kept and topped with a
fresh classification head (Devlin et al. 2019, §4.1):

    [CLS] text [SEP] (pair [SEP]) ─► encoder (loaded) ─► pooler tanh(W·h_[CLS]) ─► dropout ─► linear (new)

The recipe is BERT's fine-tuning one: AdamW (weight decay 0.01 on matrices), a linear
warm-up over the first 10% of the steps then linear (or cosine) decay to zero, gradient
clipping at 1.0, batches of 32; lr 5e-5 for a pretrained model, 5e-4 from scratch.
Validation after every epoch: loss, accuracy and macro-F1 (regression: mean squared
error and its root; multi-label: binary cross-entropy, exact-match accuracy, macro-F1 over
the labels, a label predicted when its probability passes 0.5).  ``best/`` holds the model
with the lowest validation loss.

    run_dir/
      last/          training checkpoint (a model directory + the state to resume from)
      best/          model directory with the lowest validation loss: config.json (head "classify",
                     the labels), model.safetensors, tokenizer.json, generation.json {"task": "classify"}
      log.jsonl      training and evaluation records
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F

from ..data.classify import ClassifyData, ClassifyStream, Example, encode_examples, label_names
from ..errors import CheckpointError, ConfigError, InputError
from ..model_dir import load_model_dir
from ..models import Bert, preset
from ..models.config import PRESETS, preset_names
from ..tasks.classify import predict
from ..tokenizers import Tokenizer
from .common import digest, summed_loss
from .checks import check_positive_int, check_range
from .optim import adamw
from .metrics import macro_f1
from .recipe import (Recipe, RunSettings, Trained, checked, resumed_tokenizer, saver, settings_for, start_run, train,
                     trained_once)
from .schedules import Schedule, fine_tuning_schedule

SCHEDULES = ("linear", "cosine")
PRETRAINED_LR, SCRATCH_LR = 5e-5, 5e-4


@dataclass
class ClassifySettings(RunSettings):
    """Everything a fine-tuning run needs besides the examples (and how it runs: RunSettings)."""

    model: str = "bert-small"            # a model directory (ours or Hugging Face BERT) or a BERT preset name
    vocab_size: int = 8000               # a preset's WordPiece vocabulary, trained on the training texts
    regression: bool = False             # labels are numbers: one output, squared error
    multi_label: bool = False            # any number of labels per example: a sigmoid and a binary cross-entropy each
    epochs: int = 3
    steps: int | None = None             # optimiser steps; replaces epochs when given
    batch_size: int = 32                 # examples per micro-batch
    grad_accum: int = 1                  # micro-batches per step, over all processes
    lr: float | None = None              # None: 5e-5 from a model directory, 5e-4 for a preset
    warmup: float = 0.1                  # share of the steps spent warming the learning rate up
    schedule: str = "linear"             # decay after the warm-up: linear | cosine (both to 0)
    weight_decay: float = 0.01
    clip_norm: float | None = 1.0
    max_len: int | None = None           # tokens per example, [CLS]/[SEP] included; None = the model's positions
    truncate: bool = True                # longer examples are cut (a warning says how many); False refuses them
    eval_every: int | None = None        # steps between validations; None = once per epoch
    eval_batch_size: int = 64
    seed: int = 0

    def check(self) -> None:
        check_positive_int(self, "vocab_size", "epochs", "batch_size", "grad_accum", "eval_batch_size")
        check_positive_int(self, "steps", "max_len", "eval_every", optional=True)
        check_range(self, "warmup", 0, 1, high_open=True)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r} is invalid; choose one of {list(SCHEDULES)}")
        if self.max_len is not None and self.max_len < 3:
            raise ConfigError(f"max_len={self.max_len} is invalid; [CLS] text [SEP] needs at least 3 positions")
        if self.regression and self.multi_label:
            raise ConfigError("regression and multi_label exclude each other (numbers, or several class names)")
        if self.from_preset:
            preset(self.model, family="bert")            # a preset of another family is a clear error
        elif not Path(self.model).is_dir():
            raise ConfigError(f"model={self.model!r} is neither a model directory nor a BERT preset "
                              f"({', '.join(preset_names('bert'))})")

    @property
    def from_preset(self) -> bool:
        return self.model in PRESETS and not Path(self.model).is_dir()

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (SCRATCH_LR if self.from_preset else PRETRAINED_LR)

    setting_name: ClassVar[str] = "fine-tuning setting"
    task: ClassVar[str] = "classify"


@dataclass
class ClassifyRun(Trained):
    tokenizer: Tokenizer
    labels: list[str] | None             # None for regression

    @property
    def best(self) -> dict[str, float]:
        """The validation figures of the saved ``best/`` model (the lowest validation loss)."""
        return min(self.result.history, key=lambda m: m["loss"])


# -- the model ---------------------------------------------------------------------------------
def classifier_from_preset(name: str, tokenizer: Tokenizer, labels: list[str] | None, max_len: int | None,
                           seed: int, multi_label: bool = False) -> Bert:
    """A fresh BERT of preset ``name`` with a classification head (its vocabulary: ``tokenizer``'s)."""
    overrides = {"vocab_size": tokenizer.vocab_size, "pad_id": tokenizer.pad_id, "head": "classify",
                 "labels": labels, "regression": labels is None, "multi_label": multi_label, "pooler": True}
    if max_len is not None:
        overrides["max_len"] = max_len                  # positions are learned from scratch: any number will do
    torch.manual_seed(seed)
    return Bert(preset(name, family="bert", **overrides))


def classifier_from_pretrained(source: Bert, labels: list[str] | None, seed: int, multi_label: bool = False) -> Bert:
    """A BERT with ``source``'s embeddings, encoder (and pooler, if it has one) and a fresh
    classification head; every embedding and encoder tensor must be there with its shape."""
    if not isinstance(source, Bert):
        raise ConfigError(f"fine-tuning for classification needs a BERT encoder; this directory holds a "
                          f"{getattr(source.config, 'family', type(source).__name__)!r} model")
    config = dataclasses.replace(source.config, head="classify", labels=labels, regression=labels is None,
                                 multi_label=multi_label, pooler=True)
    torch.manual_seed(seed)
    model = Bert(config)
    theirs = source.state_dict()
    ours = model.state_dict()
    keep = [k for k in ours if k.startswith(("embed.", "encoder."))]
    if source.pooler is not None:
        keep += [k for k in ours if k.startswith("pooler.")]
    wrong = [k for k in keep if k not in theirs or theirs[k].shape != ours[k].shape]
    if wrong:
        raise CheckpointError(f"the source model's weights do not fit a {config.n_layers}-layer, d_model "
                              f"{config.d_model} BERT: {wrong[:3]} missing or of another shape")
    model.load_state_dict({k: theirs[k].float() for k in keep}, strict=False)
    return model


def build_classifier(settings: ClassifySettings, train: Sequence[Example], labels: list[str] | None,
                     tokenizer: Tokenizer | None = None,
                     once: Callable[[Callable[[], Tokenizer]], Tokenizer] = lambda build: build()) -> tuple[Bert, Tokenizer]:
    """The model to fine-tune and its tokenizer.  ``tokenizer``: a resumed run's (a preset's
    vocabulary is trained on the training texts otherwise, through ``once``:
    :func:`~.recipe.trained_once` trains it on the main process only)."""
    if settings.from_preset:
        if tokenizer is None:
            texts = [t for e in train for t in (e.text, e.pair) if t is not None]
            tokenizer = once(lambda: Tokenizer.train_wordpiece(texts, settings.vocab_size))
        return classifier_from_preset(settings.model, tokenizer, labels, settings.max_len, settings.seed,
                                      settings.multi_label), tokenizer
    loaded = load_model_dir(settings.model)
    if loaded.tokenizer is None or loaded.tokenizer.token_to_id("[CLS]") is None:
        raise CheckpointError(f"{settings.model} has no BERT tokenizer (tokenizer.json with [CLS] and [SEP], or "
                              "vocab.txt); fine-tuning needs the one the model was trained with")
    model = classifier_from_pretrained(loaded.model, labels, settings.seed, settings.multi_label)
    if settings.max_len is not None and settings.max_len > model.config.max_len:
        raise ConfigError(f"max_len={settings.max_len} is more than the model's {model.config.max_len} positions; "
                          f"use --max-len <= {model.config.max_len}")
    return model, loaded.tokenizer


# -- the loss, the figures ----------------------------------------------------------------------
# the summed cross-entropy (squared error; multi-label: mean binary cross-entropy over the labels), per example
classify_loss = summed_loss(lambda batch: (batch.tokens, batch.segments, batch.mask, batch.targets))


def scores(outputs: torch.Tensor, targets: Sequence[int] | Sequence[float] | Sequence[Sequence[float]],
           regression: bool, multi_label: bool = False) -> dict[str, float]:
    """Loss and quality of ``outputs`` against ``targets``: loss (mean cross-entropy), accuracy,
    macro-F1; for regression loss (mean squared error) and rmse; multi-label (targets 0/1 per
    label) loss (mean binary cross-entropy), accuracy (every label right) and macro-F1 (the mean
    F1 = 2TP / (predicted + true) of the labels that occur), a label predicted above probability 0.5."""
    if regression:
        mse = float(F.mse_loss(outputs, torch.tensor(targets, dtype=torch.float32)))
        return {"loss": mse, "rmse": math.sqrt(mse)}
    if multi_label:
        targets = torch.tensor(targets, dtype=torch.float32)
        predicted, true = outputs > 0, targets > 0.5
        tp, n_predicted, n_true = (predicted & true).sum(0), predicted.sum(0), true.sum(0)
        present = (n_predicted + n_true) > 0
        f1 = 2 * tp[present].double() / (n_predicted + n_true)[present]
        return {"loss": float(F.binary_cross_entropy_with_logits(outputs, targets)),
                "accuracy": float((predicted == true).all(-1).double().mean()),
                "macro_f1": float(f1.mean()) if present.any() else 0.0}
    targets = torch.tensor(targets, dtype=torch.long)
    predicted = outputs.argmax(-1)
    return {"loss": float(F.cross_entropy(outputs, targets)), "accuracy": float((predicted == targets).double().mean()),
            "macro_f1": macro_f1(predicted, targets)}


def evaluate_classifier(model: Bert, data: ClassifyData, batch_size: int = 64, device="cpu") -> dict[str, float]:
    return scores(predict(model, data, batch_size, device), data.targets, data.regression, data.multi_label)


def evaluate_examples(model: Bert, tokenizer: Tokenizer, examples: Sequence[Example], *, batch_size: int = 64,
                      device="cpu") -> dict[str, float]:
    """Scores of a fine-tuned model on labelled examples (a test set), long ones cut to its positions."""
    data, _ = encode_examples(examples, tokenizer, None if model.config.regression else model.config.labels,
                              model.config.max_len, multi_label=model.config.multi_label)
    return evaluate_classifier(model.eval(), data, batch_size, device)


# -- the run ---------------------------------------------------------------------------------------
def finetune_classify(
    train_rows: Sequence[Example],
    valid_rows: Sequence[Example],
    settings: ClassifySettings | dict[str, Any] | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    extend: bool = False,
    data: dict[str, Any] | None = None,
) -> ClassifyRun:
    """Fine-tune ``settings.model`` on ``train_rows`` and save ``out_dir/best`` and ``out_dir/last``
    model directories.  ``data``: where the examples came from (files, columns), recorded with the
    run.  Resuming: :mod:`.common`."""
    if not train_rows or not valid_rows:
        raise InputError(f"fine-tuning needs training and validation examples ({len(train_rows)} and "
                         f"{len(valid_rows)} given)")
    settings, _ = settings_for(ClassifySettings, settings, out_dir, resume)
    regression = settings.regression
    if not regression and any(isinstance(e.label, float) for e in (*train_rows, *valid_rows)):
        raise InputError("the labels are numbers read for regression; give regression=True (--regression), "
                         "or read them as class names")
    labels = None if regression else label_names(train_rows, valid_rows)
    if labels is not None and len(labels) < 2:
        raise InputError(f"the training data has one label only ({labels[0]!r}); classification needs two or more")
    run = start_run(settings, out_dir, resume, extend)
    model, tokenizer = build_classifier(settings, train_rows, labels,
                                        resumed_tokenizer(run) if settings.from_preset else None,
                                        lambda build: trained_once(run, build))
    max_len = settings.max_len or model.config.max_len
    train_set, n_cut = encode_examples(train_rows, tokenizer, labels, max_len, truncate=settings.truncate,
                                       multi_label=settings.multi_label)
    valid, v_cut = encode_examples(valid_rows, tokenizer, labels, max_len, truncate=settings.truncate,
                                   multi_label=settings.multi_label)
    if (n_cut or v_cut) and run.world.main:
        print(f"glassformer: warning: {n_cut} of {len(train_set)} training and {v_cut} of {len(valid)} validation "
              f"examples are longer than {max_len} tokens and were cut (--no-truncate refuses them)",
              file=sys.stderr, flush=True)
    steps_per_epoch = max(1, math.ceil(len(train_set) / settings.batch_size) // settings.grad_accum)
    total = settings.steps or settings.epochs * steps_per_epoch
    fp = checked(run, settings, model.config, total, **(data or {}), examples=len(train_rows),
                 digest=digest(f"{e.text}\t{e.pair}\t{e.label}\n" for e in (*train_rows, *valid_rows)))
    lr = settings.learning_rate

    def warmup(steps: int) -> int:                # a share of the steps: an extended run warms up longer
        return round(settings.warmup * steps)

    what = "regression" if regression else f"{len(labels)} labels"
    if settings.multi_label:
        what += ", several per example"
    trained = train(run, settings, fp, Recipe(
        model, classify_loss, lambda m: evaluate_classifier(m, valid, settings.eval_batch_size, run.device),
        saver(tokenizer, {"task": "classify", "max_len": max_len, "pair": any(e.pair is not None for e in train_rows)}),
        ClassifyStream(train_set, settings.batch_size, settings.seed, rank=run.world.rank, world=run.world.size),
        "bert", data=f"{len(train_set):,} training and {len(valid):,} validation examples ({what})",
        batch=f"batch {settings.batch_size} × {settings.grad_accum} micro-batches, lr {lr:g} ({settings.schedule}, "
              f"{warmup(total)} warm-up steps), {steps_per_epoch:,} steps per epoch",
        steps=total, schedule=Schedule(settings.schedule,
                                       lambda opt, n: fine_tuning_schedule(opt, settings.schedule, warmup(n), n), lr),
        optimizer=lambda m: adamw(m, lr, settings.weight_decay, (0.9, 0.999)),
        trainer={"eval_every": settings.eval_every or steps_per_epoch, "rate_unit": "examples"}))
    return ClassifyRun(trained.model, trained.result, run.out_dir, tokenizer, labels)


__all__ = ["ClassifySettings", "ClassifyRun", "finetune_classify", "build_classifier", "classifier_from_preset",
           "classifier_from_pretrained", "classify_loss", "scores", "evaluate_classifier",
           "evaluate_examples", "SCHEDULES"]
