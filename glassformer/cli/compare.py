"""The ``compare`` command: a Transformer and recurrent models on the same work, for the same wall time.

    glassformer compare --task numbers --out report/               # vaswani-small vs lstm-attention
    glassformer compare --src train.de --tgt train.en --models vaswani-small,lstm-attention,gru-attention,lstm
    glassformer compare --probe --out probe/                        # the long-range recall probe only
    glassformer compare --task numbers --probe --budget 300 --override lstm-attention:hidden_size=256

The work is in ``training/compare.py``; the report's files in ``training/compare_report.py``.
"""

from __future__ import annotations

import json

from ..errors import InputError
from .common import DEVICE_HELP, check_output_dir, note, positive_float, positive_int

SPREAD_NOTE = 1.5          # largest / smallest parameter count above which the command says so


def register(subparsers) -> None:
    from ..training.compare import DEFAULT_MODELS

    p = subparsers.add_parser(
        "compare", help="train a Transformer and recurrent models for the same wall time on the same data and "
                        "write a report (loss against time, speed, BLEU by length, attention, a long-range probe)")
    data = p.add_argument_group("what to compare on (one or both of a translation task and --probe)")
    data.add_argument("--task", choices=["numbers"],
                      help="the built-in German→English number task (quickstart's data; held-out test numbers)")
    data.add_argument("--src", help="source text file of a parallel corpus (or a .tsv/.jsonl with two columns)")
    data.add_argument("--tgt", help="target text file aligned with --src")
    data.add_argument("--valid-src", help="validation source file (default: hold out 2%% of the pairs)")
    data.add_argument("--valid-tgt", help="validation target file")
    data.add_argument("--test-src", help="test source file evaluated (default: the validation pairs)")
    data.add_argument("--test-tgt", help="test target file")
    data.add_argument("--probe", action="store_true",
                      help="also (or only) the long-range probe: recall the marked symbol, with N random symbols "
                           "after it and N before the marker; accuracy against N for each model")
    data.add_argument("--probe-distances", default="2,4,8,16,32", metavar="N,N,...",
                      help="the probe's distances, trained together, each with its own held-out examples")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), metavar="PRESET,PRESET,...",
                   help="the presets to compare, trained one after the other (e.g. vaswani-small, lstm-attention, "
                        "gru-attention, lstm)")
    p.add_argument("--override", action="append", metavar="PRESET:FIELD=VALUE",
                   help="change one model's preset field, e.g. to bring parameter counts close (repeatable; "
                        "the report states each model's parameters and the fields changed)")
    p.add_argument("--budget", type=positive_float, default=120.0,
                   help="seconds of training per model and task (the recipe's time limit)")
    p.add_argument("--eval-every", type=positive_int,
                   help="steps between validations (default: about 10 in the budget, from the time per step of an "
                        "untimed warm-up run of each model)")
    p.add_argument("--n-test", type=positive_int, default=1000, help="held-out test numbers (--task numbers)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the weights and the batches")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", required=True, help="report directory (written whole once everything is measured)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists and is not empty")
    p.set_defaults(func=compare_cmd)


def parse_override(text: str) -> tuple[str, str, object]:
    """``PRESET:FIELD=VALUE`` -> (preset, field, value); the value read as JSON (numbers, true, null),
    else as a string."""
    name, colon, rest = text.partition(":")
    field, equals, value = rest.partition("=")
    if not (colon and equals and name and field):
        raise InputError(f"--override {text!r} is not PRESET:FIELD=VALUE (e.g. lstm-attention:hidden_size=256)")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return name, field, parsed


def distances(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise InputError(f"--probe-distances {text!r} must be positive whole numbers separated by commas, e.g. 2,4,8")
    return values


def compare_cmd(args) -> int:
    from ..data.parallel import read_parallel
    from ..data.probes import recall_probe
    from ..devices import pick_device
    from ..training.compare import (NUMBERS_TASK, PROBE_TASK, CompareSettings, numbers_translation,
                                    run_comparison)

    files = args.src or args.tgt or args.valid_src or args.valid_tgt or args.test_src or args.test_tgt
    if args.task and files:
        raise InputError("give either --task numbers or a corpus (--src FILE --tgt FILE), not both")
    if not (args.task or files or args.probe):
        raise InputError("nothing to compare on: give --task numbers, a corpus (--src FILE --tgt FILE), "
                         "and/or --probe")
    if files and not args.src:
        raise InputError("give the corpus with --src FILE (and --tgt FILE)")
    for a, b in (("valid_src", "valid_tgt"), ("test_src", "test_tgt")):
        if bool(getattr(args, a)) != bool(getattr(args, b)):
            raise InputError(f"give both --{a.replace('_', '-')} and --{b.replace('_', '-')}, or neither")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    overrides: dict[str, dict] = {}
    for text in args.override or []:
        name, field, value = parse_override(text)
        overrides.setdefault(name, {})[field] = value
    probe_at = distances(args.probe_distances) if args.probe else None
    settings = CompareSettings(models=models, budget=args.budget, overrides=overrides, eval_every=args.eval_every,
                               seed=args.seed, device=args.device)   # every model's settings checked here
    pick_device(args.device)
    out = check_output_dir(args.out, force=args.force,
                           reading=[f for f in (args.src, args.tgt, args.valid_src, args.valid_tgt,
                                                args.test_src, args.test_tgt) if f])
    translation, task = None, None
    if args.task == "numbers":
        translation, task = numbers_translation(n_test=args.n_test, seed=args.seed), NUMBERS_TASK
    elif files:
        pairs = read_parallel(args.src, args.tgt)
        if args.valid_src:
            train, valid = pairs, read_parallel(args.valid_src, args.valid_tgt)
        else:
            n_valid = max(1, len(pairs) // 50)
            if len(pairs) - n_valid < 1:
                raise InputError(f"{len(pairs)} sentence pairs are too few to hold out a validation set")
            train, valid = pairs[n_valid:], pairs[:n_valid]
        test = read_parallel(args.test_src, args.test_tgt) if args.test_src else valid
        translation = {"name": f"{args.src}" + (f" → {args.tgt}" if args.tgt else ""), "train": train,
                       "valid": valid, "eval": test, "eval_split": "test" if args.test_src else "validation"}
    probe = recall_probe(probe_at, seed=args.seed) if probe_at else None
    results = run_comparison(out, settings, translation=translation, probe=probe, translation_task=task,
                             probe_task=PROBE_TASK, on_progress=lambda line: note(line))
    for part in ("translation", "probe"):
        for m in results.get(part, {}).get("models", []):
            figures = (f"exact match {m['eval']['exact_match']:.2f}%, BLEU {m['eval']['bleu']:.2f}"
                       if part == "translation" else
                       "accuracy by distance " + ", ".join(f"{d}: {a:.0f}%" for d, a in m["accuracy"].items()))
            print(f"{part} {m['name']}: {m['parameters']:,} parameters, {m['steps']:,} steps; {figures}")
        spread = results.get(part, {}).get("parameter_spread")
        if spread and spread > SPREAD_NOTE:
            note(f"{part}: the parameter counts differ by {spread:.2f}x; bring them closer with --override "
                 "PRESET:FIELD=VALUE for a fairer comparison")
    print(f"report written to {out / 'report.md'}")
    return 0
