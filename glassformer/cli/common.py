"""Helpers shared by the command modules: argument types, help texts and the run directory."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError

DEVICE_HELP = "where to run: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
CORPUS_CHOICES = "a text file, a folder of text files, or a built-in corpus: 'tiny-shakespeare' (shipped with " \
                 "glassformer) or 'python-stdlib' (this Python's standard library)"
CORPUS_HELP = f"{CORPUS_CHOICES}; with --resume, the run's own by default"


# -- argument types: a bad number is refused by argparse, before any work ------------------------
def _int_at_least(low: int, wanted: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is invalid; it must be {wanted}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "0 or more")


def _float_in(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False):
    """An argument type: a finite number (never NaN or an infinity) from ``low`` to ``high``, open ends where asked."""
    if high == math.inf:
        wanted = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        wanted = "a number in " + ("(" if low_open else "[") + f"{low:g}, {high:g}" + (")" if high_open else "]")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"{text} is invalid; it must be {wanted}")
        return value
    return parse


positive_float = _float_in(0, low_open=True)
non_negative_float = _float_in(0)
fraction = _float_in(0, 1, high_open=True)                      # [0, 1): a share that cannot be all
open_fraction = _float_in(0, 1, low_open=True, high_open=True)  # (0, 1): a share of a split, neither side empty
probability = _float_in(0, 1, low_open=True)                    # (0, 1]


# -- options several commands share, help texts --------------------------------------------------
def add_preset_flags(parser, family: str, default: str) -> None:
    """--preset (one of ``family``'s presets, ``default`` when left out) and --config."""
    from ..models.config import preset_names

    presets = ", ".join(preset_names(family))
    parser.add_argument("--preset", help=f"model preset, one of: {presets} (default: {default})")
    parser.add_argument("--config", help="JSON file of training settings; its 'model' object overrides preset fields")


def add_dtype_flag(parser, what: str = "precision of the weights") -> None:
    from ..devices import DTYPE_NAMES

    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="auto",
                        help=f"{what}: fp32, bf16, fp16 (GPU only), or auto = bf16 on a CUDA GPU that supports it, "
                             "else fp32")


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype`` and ``--compile``, shared by ``generate``, ``translate`` and ``evaluate``."""
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_dtype_flag(p, "precision of the weights while decoding")
    p.add_argument("--compile", action="store_true",
                   help="compile the decoding step with torch.compile (CUDA graphs on a GPU): faster per token after "
                        "a one-off compile of seconds to a minute; needs a C++ compiler on a CPU")


def setting_defaults(settings_cls) -> dict:
    """Field name -> default of a settings dataclass, for help texts (the dataclass is the one source)."""
    return {f.name: f.default for f in dataclasses.fields(settings_cls) if f.default is not dataclasses.MISSING}


def note(message: str) -> None:
    """One line on stderr that is not an error (the output on stdout stays clean)."""
    print(f"glassformer: note: {message}", file=sys.stderr)


@contextlib.contextmanager
def warnings_as_lines(kind: str = "warning"):
    """Each warning the library raises inside the block becomes one ``glassformer: KIND: ...`` line on
    stderr, after the block."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"glassformer: {kind}: {w.message}", file=sys.stderr)


def stdin_lines(nothing_piped: str) -> list[str]:
    """The lines of standard input (newlines stripped), read as UTF-8 like any input file.

    The bytes are decoded here, not by ``sys.stdin``: under a C/POSIX locale Python reads stdin with
    ``surrogateescape`` and would hand invalid bytes on as lone surrogates.  A terminal (nothing piped)
    is an InputError saying ``nothing_piped``.
    """
    from ..data.parallel import decode_text

    if sys.stdin.isatty():
        raise InputError(nothing_piped)
    raw = getattr(sys.stdin, "buffer", None)         # absent when stdin was replaced by a text stream
    text = decode_text(raw.read(), "stdin") if raw is not None else sys.stdin.read()
    lines = text.split("\n")     # not splitlines(): its extra separators (\f, \u2028 ...) would shift output lines
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


# -- how a training run runs (shared by every `train` task) ------------------------------------------
RUN_FLAGS = ("precision", "compile", "on_nan", "distributed", "log_every", "tensorboard")


def add_run_flags(parser, defaults: dict) -> None:
    """--resume, --extend, --precision, --compile, --on-nan, --distributed, --log-every, --tensorboard."""
    from ..training.distributed import KINDS
    from ..training.precision import PRECISIONS
    from ..training.trainer import ON_NAN

    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR (default: --out) exactly where its last checkpoint stopped; "
                             "every setting it was started with (and its data) is the default")
    parser.add_argument("--extend", action="store_true",
                        help="with --resume and --steps N: train the run for more steps than it was set to; its "
                             "learning-rate schedule is made for N steps (the first line says what that changes)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help=f"numeric precision (default: {defaults['precision']}: bf16 on a GPU that has it, else fp32)")
    parser.add_argument("--compile", action="store_true", default=None, help="compile the model with torch.compile")
    parser.add_argument("--on-nan", choices=ON_NAN,
                        help=f"a non-finite loss or gradient skips the step or stops training (default: {defaults['on_nan']})")
    parser.add_argument("--distributed", choices=KINDS,
                        help="data-parallel (ddp) or sharded (fsdp) training over the processes torchrun starts")
    parser.add_argument("--log-every", type=positive_int, help=f"steps between progress lines (default: {defaults['log_every']})")
    parser.add_argument("--tensorboard", action="store_true", default=None,
                        help="also write TensorBoard scalars to OUT/tensorboard (pip install 'glassformer[tensorboard]')")


# The flags of the tasks trained with AdamW on a cosine schedule after a linear warm-up (lm, mlm, vit, caption)
COSINE_FLAGS = ("grad_accum", "steps", "lr", "warmup", "weight_decay", "eval_every", "keep_checkpoints", "time_limit",
                "device")


def add_cosine_schedule_flags(parser, defaults: dict) -> None:
    """--grad-accum, --steps, --lr, --warmup, --weight-decay, --eval-every, --keep-checkpoints,
    --time-limit and --device (the settings named in :data:`COSINE_FLAGS`), with their defaults."""
    d = defaults
    parser.add_argument("--grad-accum", type=positive_int,
                        help=f"micro-batches per optimiser step, over all processes (default: {d['grad_accum']})")
    parser.add_argument("--steps", type=positive_int, help=f"optimiser steps (default: {d['steps']})")
    parser.add_argument("--lr", type=positive_float,
                        help=f"peak learning rate, cosine schedule with linear warm-up (default: {d['lr']:g})")
    parser.add_argument("--warmup", type=non_negative_int, help=f"warm-up steps (default: {d['warmup']})")
    parser.add_argument("--weight-decay", type=non_negative_float,
                        help=f"AdamW weight decay (default: {d['weight_decay']:g})")
    parser.add_argument("--eval-every", type=positive_int,
                        help=f"steps between validations (default: {d['eval_every']})")
    parser.add_argument("--keep-checkpoints", type=non_negative_int,
                        help=f"keep the last K evaluation checkpoints, for averaging (default: {d['keep_checkpoints']})")
    parser.add_argument("--time-limit", type=positive_float,
                        help="stop training after this many seconds, evaluating first (default: no limit)")
    parser.add_argument("--device", help=f"{DEVICE_HELP} (default: {d['device']})")


def train_settings(args, flags: tuple[str, ...], *, task: str, data_flag: str | None = None,
                   data_key: str | None = None, missing: str = "",
                   also: dict | None = None) -> tuple[Path, bool, Any, dict, dict]:
    """What every ``train`` command of ``task`` gathers before it builds its settings: (run directory,
    resume?, the data (``args.<data_flag>`` or, when resuming, the run's own), the settings dict, the
    saved run).  Settings win by the library's one rule (``training.recipe.merged_settings``): the
    resumed run's, then ``--config``, then the task's ``flags`` that were given (and ``also``, settings
    other flags imply), then the run flags (--precision, --compile, ...)."""
    from ..training.recipe import merged_settings

    resume = args.resume is not None              # --resume: the run in --out; --resume RUN_DIR: that one
    out = Path(args.out if args.resume in (None, True) else args.resume)
    given = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    run = {k: getattr(args, k) for k in RUN_FLAGS if getattr(args, k) is not None}
    settings, saved = merged_settings(task, out, resume, config=getattr(args, "config", None),
                                      given={**given, **(also or {})}, run=run)
    data = None
    if data_flag is not None:
        data = getattr(args, data_flag) or saved.get("data", {}).get(data_key)
        if not data:
            raise InputError(missing)
    return out, resume, data, settings, saved


def run_training(args, flags: tuple[str, ...], settings_cls, train, **where) -> tuple[Path, Any]:
    """The run of a ``train`` command whose task reads one data flag, or none (``where``: its ``data_flag``,
    ``data_key``, ``missing`` and ``also``, see :func:`train_settings`): its settings checked by
    ``settings_cls``, the device, then ``train(data, settings, out, ...)`` in a fresh run directory (data
    None without a data flag).  Returns (the run directory, the run)."""
    from ..devices import pick_device

    out, resume, data, settings, _ = train_settings(args, flags, task=settings_cls.task, **where)
    settings = settings_cls.from_dict(settings)        # checks types, ranges, the preset and its fields
    pick_device(settings.device)
    with fresh_output_dir(out):
        return out, train(data, settings, out, resume=resume, extend=args.extend)


def trained(result) -> str:
    """The start of a training command's last line: the steps, the time and why it stopped early."""
    stop = f"; {result.stop_note}" if result.stop_note else ""
    return f"trained {result.steps} steps in {result.seconds:.0f}s{stop}"


# -- the run directory ---------------------------------------------------------------------------
def check_output_dir(path: str | Path, *, force: bool, reading=()) -> Path:
    """Refuse, before any work, a model directory to write at ``path`` whose replacement would destroy
    what a user has: a file or a non-empty directory (unless ``force``), and even with ``force`` a
    training run, the current directory or a mount point (neither can be renamed away), or a
    directory that is or holds one of the directories ``reading`` (what the command reads)."""
    from ..training.checkpoints import existing_run

    out = Path(path)
    where, cwd = out.resolve(), Path.cwd().resolve()
    unmovable = ("the current directory" if where == cwd else "a folder above the current directory"
                 if where in cwd.parents else "a mount point" if os.path.ismount(where) else None)
    if unmovable:
        raise ConfigError(f"cannot write {out}: it is {unmovable}, which cannot be replaced (not even with "
                          f"--force); name a new directory, e.g. {out / 'model'}")
    for source in reading:
        if where == Path(source).resolve() or where in Path(source).resolve().parents:
            raise ConfigError(f"cannot write {out}: it is or holds {source}, which this command reads; "
                              "choose another directory")
    if out.is_dir() and (run := existing_run(out)):
        raise ConfigError(f"{out} holds {run}; it is never replaced (not even with --force): choose another directory")
    if out.exists() and not out.is_dir() and not out.is_file():
        raise ConfigError(f"cannot write {out}: it is not a regular file or directory (a device, pipe or socket)")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())) or force:
        return out
    kind = "a directory that is not empty" if out.is_dir() else "a file"
    raise ConfigError(f"{out} already exists and is {kind}; --force replaces it")


def saved_models(path: Path) -> list[Path]:
    """Model directories (with a config.json) under ``path``; temporary ``.name.tmp-*`` ones do not count:
    a model directory is renamed into place only once it is complete."""
    if not path.is_dir():
        return []
    return sorted(c.parent for c in path.rglob("config.json")
                  if not any(part.startswith(".") for part in c.relative_to(path).parts))


class fresh_output_dir:
    """The run directory of a command that writes one: created (with a clear error when it cannot be
    written) on entry; removed again if the command fails or is interrupted *before it saved any
    model*.  A directory that holds a saved model (``best/``, ``last/``, a checkpoint) is never removed:
    an interrupt after an hour of training keeps what the hour produced."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # The topmost directory this command creates (--out a/b/c with no a/ creates a/).
        self.created = None
        for candidate in [self.path, *self.path.parents]:
            if candidate.exists():
                break
            self.created = candidate

    def __enter__(self) -> Path:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=self.path).close()     # writable, not only present
        except OSError as e:
            self._clean_up()
            reason = e.strerror or type(e).__name__
            if isinstance(e, FileExistsError) or (self.path.exists() and not self.path.is_dir()):
                reason = "it is a file, not a directory"
            raise ConfigError(f"cannot write the run directory --out {self.path}: {reason}") from None
        return self.path

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None or self.created is None:
            return False
        models = saved_models(self.created)
        if not models:
            self._clean_up()
        else:
            names = ", ".join(str(m.relative_to(self.path)) if m.is_relative_to(self.path) else str(m) for m in models[:3])
            why = "interrupt" if issubclass(exc_type, KeyboardInterrupt) else "error"
            note(f"{self.path} keeps the models saved before the {why} ({names}{', ...' if len(models) > 3 else ''})")
        return False

    def _clean_up(self) -> None:
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)


__all__ = ["check_output_dir", "add_run_flags", "train_settings", "run_training", "trained", "RUN_FLAGS",
           "fresh_output_dir", "saved_models", "positive_int", "non_negative_int", "positive_float", "add_preset_flags",
           "add_dtype_flag", "add_inference_args", "non_negative_float", "fraction", "open_fraction", "probability",
           "setting_defaults", "note", "DEVICE_HELP", "CORPUS_CHOICES", "CORPUS_HELP"]
