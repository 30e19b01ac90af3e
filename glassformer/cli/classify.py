"""Commands of the classification task: ``finetune classify`` and ``classify``.

    glassformer finetune classify --train train.csv --valid valid.csv --text-column text --label-column label \\
        --model MODEL_DIR|PRESET [--epochs N | --steps N] [--out runs/classify]
    glassformer finetune classify --dataset number-language --model bert-small
    glassformer finetune classify --train train.csv --valid valid.csv --multi-label ...   (label cells "sci,space")
    glassformer classify runs/classify/best "drei" "trois" [--top-k 3] [--json]
"""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError, InputError
from .common import (DEVICE_HELP, add_run_flags, fraction, fresh_output_dir, non_negative_float, positive_float,
                     positive_int, setting_defaults, stdin_lines, train_settings, warnings_as_lines)

DATASETS = ("number-language",)


def register(subparsers) -> None:
    from ..models.config import preset_names
    from ..training.classify import PRETRAINED_LR, SCRATCH_LR, ClassifySettings

    d = setting_defaults(ClassifySettings)
    finetune = subparsers.add_parser("finetune", help="fine-tune a model for a task (classify)")
    tasks = finetune.add_subparsers(dest="task", metavar="TASK", parser_class=subparsers._parser_class)
    t = tasks.add_parser("classify",
                         help="fine-tune a BERT (a model directory or a preset) to classify texts or text pairs")
    t.add_argument("--train", metavar="FILE",
                   help="training examples: a .csv / .tsv (with a header line) or .jsonl file")
    t.add_argument("--valid", metavar="FILE", help="validation examples, in the same layout as --train")
    t.add_argument("--dataset", choices=DATASETS,
                   help="a built-in data set instead of files: number-language (which language is a number "
                        "written in; 7,000 / 700 / 1,400 examples, 7 languages, made offline by num2words)")
    t.add_argument("--text-column", default=None, metavar="C",
                   help="the column (or JSON field) of the text (default: text)")
    t.add_argument("--text-pair-column", default=None, metavar="C2",
                   help="the column of a second text, for sentence-pair tasks (default: none)")
    t.add_argument("--label-column", default=None, metavar="L", help="the column of the label (default: label)")
    t.add_argument("--regression", action="store_true", default=None,
                   help="the labels are numbers: predict a number (squared error) instead of a class")
    t.add_argument("--multi-label", action="store_true", default=None,
                   help="any number of labels per example: names separated by commas in a CSV/TSV cell, or a JSON "
                        "list in .jsonl (empty: none); a sigmoid and a binary cross-entropy per label")
    t.add_argument("--model", default=None, metavar="MODEL_DIR|PRESET",
                   help=f"a model directory (ours, or a Hugging Face BERT such as all-MiniLM-L6-v2: its tokenizer "
                        f"and encoder are kept, the head is new) or a preset trained from scratch: "
                        f"{', '.join(preset_names('bert'))} (default: {d['model']})")
    t.add_argument("--vocab-size", type=positive_int,
                   help=f"a preset's WordPiece vocabulary, trained on the training texts (default: {d['vocab_size']})")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int,
                        help=f"passes over the training examples (default: {d['epochs']})")
    length.add_argument("--steps", type=positive_int, help="optimiser steps (instead of --epochs)")
    t.add_argument("--batch-size", type=positive_int, help=f"examples per batch (default: {d['batch_size']})")
    t.add_argument("--grad-accum", type=positive_int,
                   help=f"micro-batches per optimiser step, over all processes (default: {d['grad_accum']})")
    t.add_argument("--lr", type=positive_float,
                   help=f"peak learning rate (default: {PRETRAINED_LR:g} from a model directory, {SCRATCH_LR:g} "
                        "for a preset)")
    t.add_argument("--warmup", type=fraction, help=f"share of the steps spent warming up (default: {d['warmup']:g})")
    t.add_argument("--schedule", choices=["linear", "cosine"],
                   help=f"learning-rate decay after the warm-up, to 0 (default: {d['schedule']})")
    t.add_argument("--weight-decay", type=non_negative_float,
                   help=f"AdamW weight decay (default: {d['weight_decay']:g})")
    t.add_argument("--max-len", type=positive_int,
                   help="tokens per example, [CLS] and [SEP] included (default: the model's positions)")
    t.add_argument("--truncate", action=argparse.BooleanOptionalAction, default=None,
                   help="cut examples longer than --max-len, with a warning saying how many (the default); "
                        "--no-truncate refuses them")
    t.add_argument("--eval-every", type=positive_int, help="steps between validations (default: once per epoch)")
    t.add_argument("--time-limit", type=positive_float,
                   help="stop training after this many seconds (default: no limit)")
    t.add_argument("--out", default="runs/classify", help="run directory (model in OUT/best and OUT/last)")
    t.add_argument("--seed", type=int, help=f"random seed (default: {d['seed']})")
    t.add_argument("--device", help=f"{DEVICE_HELP} (default: {d['device']})")
    add_run_flags(t, d)
    t.set_defaults(func=finetune_classify_cmd)

    c = subparsers.add_parser("classify", help="classify texts with a fine-tuned model directory")
    c.add_argument("model_dir")
    c.add_argument("text", nargs="*", default=[],
                   help="texts to classify (default: lines from stdin; TEXT<tab>PAIR for a pair model)")
    c.add_argument("--pair", action="append", default=None, metavar="TEXT",
                   help="the second text of a sentence-pair model: once for every text, or once per text")
    c.add_argument("--top-k", type=positive_int, default=1, metavar="K", help="print the K most likely labels")
    c.add_argument("--json", action="store_true", help="one JSON object per text (text, label, probability, top)")
    c.add_argument("--batch-size", type=positive_int, default=64, help="texts classified together")
    c.add_argument("--no-truncate", dest="truncate", action="store_false",
                   help="refuse texts longer than the model was trained on (by default they are cut, with a warning)")
    c.add_argument("--device", default="auto", help=DEVICE_HELP)
    c.set_defaults(func=classify_cmd)


# -- finetune classify --------------------------------------------------------------------------
_FLAGS = ("model", "vocab_size", "regression", "multi_label", "epochs", "steps", "batch_size", "grad_accum", "lr",
          "warmup", "schedule", "weight_decay", "max_len", "truncate", "eval_every", "time_limit", "seed", "device")
_COLUMNS = {"text_column": "text", "text_pair_column": None, "label_column": "label"}


def _data_source(args, saved: dict) -> dict:
    """Where the examples come from: the flags, else (resuming) the run's own."""
    if args.dataset or args.train or args.valid:
        if args.dataset and (args.train or args.valid):
            raise InputError("give --dataset or --train/--valid files, not both")
        if args.dataset:
            return {"dataset": args.dataset}
        if not (args.train and args.valid):
            raise InputError("give both --train FILE and --valid FILE (.csv, .tsv or .jsonl), or --dataset "
                             "number-language")
        source = {"train": args.train, "valid": args.valid}
        source.update({k: getattr(args, k) if getattr(args, k) is not None else saved.get(k, default)
                       for k, default in _COLUMNS.items()})
        return source
    if saved:
        return {k: v for k, v in saved.items() if k in ("dataset", "train", "valid", *_COLUMNS)}
    raise InputError("give --train FILE --valid FILE (.csv, .tsv or .jsonl with --text-column and --label-column), "
                     "or --dataset number-language")


def finetune_classify_cmd(args) -> int:
    from ..data.classify import read_examples
    from ..devices import pick_device
    from ..training.classify import ClassifySettings, evaluate_examples, finetune_classify

    epochs = {} if args.epochs is None else {"steps": None}      # --epochs instead of a resumed run's steps
    out, resume, _, settings, saved = train_settings(args, _FLAGS, task=ClassifySettings.task, also=epochs)
    settings = ClassifySettings.from_dict(settings)     # checks types, ranges and the model
    pick_device(settings.device)
    source = _data_source(args, saved.get("data", {}))
    test = None
    if source.get("dataset") == "number-language":
        from ..data.numbers_language import number_language_corpus

        if settings.regression or settings.multi_label:
            raise ConfigError("the number-language data set is a one-label classification task; leave out "
                              "--regression and --multi-label")
        corpus = number_language_corpus()
        train, valid, test = corpus.train, corpus.valid, corpus.test
    else:
        columns = (source["text_column"], source["label_column"], source["text_pair_column"])
        kind = {"regression": settings.regression, "multi_label": settings.multi_label}
        train = read_examples(source["train"], *columns, **kind)
        valid = read_examples(source["valid"], *columns, **kind)
    with fresh_output_dir(out):
        run = finetune_classify(train, valid, settings, out, resume=resume, extend=args.extend, data=source)
    if not run.result.main_process:                  # another process of a distributed run: rank 0 reports
        return 0
    best = run.best
    stop = f"; {run.result.stop_note}" if run.result.stop_note else ""
    if settings.regression:
        figures = f"validation mean squared error {best['loss']:.4g} (RMSE {best['rmse']:.4g})"
    else:
        exact = "exact-match " if settings.multi_label else ""
        figures = (f"validation {exact}accuracy {best['accuracy']:.2%}, macro-F1 {best['macro_f1']:.4f} "
                   f"(loss {best['loss']:.4f})")
    print(f"fine-tuned {run.result.steps} steps in {run.result.seconds:.0f}s{stop}; best (lowest validation loss, "
          f"step {best['step']}): {figures}; model saved to {out / 'best'}")
    if test is not None:
        from ..model_dir import load_model_dir

        device = next(run.model.parameters()).device
        best_dir = load_model_dir(out / "best", device)
        scores = evaluate_examples(best_dir.model, best_dir.tokenizer, test, device=device)
        print(f"test ({len(test):,} held-out numbers): accuracy {scores['accuracy']:.2%}, "
              f"macro-F1 {scores['macro_f1']:.4f}")
    return 0


# -- classify ---------------------------------------------------------------------------------------
def _inputs(args, pair_model: bool) -> tuple[list[str], list[str] | None]:
    """(texts, pairs or None) from the arguments, or lines of stdin (TEXT<tab>PAIR for a pair model)."""
    texts, pairs = list(args.text), list(args.pair) if args.pair else None
    if not texts:
        lines = [line for line in stdin_lines('give texts to classify ("text" ...) or pipe lines on stdin')
                 if line.strip()]
        if not lines:
            raise InputError("stdin holds no text to classify")
        if pairs is None and pair_model and all("\t" in line for line in lines):
            texts, pairs = zip(*(line.split("\t", 1) for line in lines))
            return list(texts), list(pairs)
        texts = lines
    for i, text in enumerate(texts, 1):
        if not text.strip():
            raise InputError(f"text {i} is empty; give a text to classify")
    if pairs is not None:
        if len(pairs) == 1:
            pairs = pairs * len(texts)
        if len(pairs) != len(texts):
            raise InputError(f"{len(pairs)} --pair texts for {len(texts)} texts; give one for all or one per text")
    return texts, pairs


def classify_cmd(args) -> int:
    from ..devices import pick_device
    from ..model_dir import load_model_dir
    from ..tasks import check_text_classifier, classify

    device = pick_device(args.device)
    loaded = load_model_dir(args.model_dir, device)
    check_text_classifier(loaded, args.model_dir)
    texts, pairs = _inputs(args, bool(loaded.generation.get("pair")))
    with warnings_as_lines():
        predictions = classify(loaded, texts, pairs, top_k=args.top_k, batch_size=args.batch_size, device=device,
                               truncate=args.truncate)
    for i, (text, p) in enumerate(zip(texts, predictions)):
        if args.json:
            record = {"text": text} if pairs is None else {"text": text, "pair": pairs[i]}
            if p.value is not None:
                record["value"] = p.value
            else:
                record.update(label=p.label, probability=round(p.probability, 6),
                              top=[{"label": name, "probability": round(q, 6)} for name, q in p.top])
            print(json.dumps(record, ensure_ascii=False))
        elif p.value is not None:
            print(f"{p.value:.6g}")
        else:
            print("\t".join(f"{name}\t{q:.4f}" for name, q in p.top))
    return 0


__all__ = ["register", "finetune_classify_cmd", "classify_cmd"]
