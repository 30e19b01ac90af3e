"""Commands of the translation task: quickstart, train translation, translate, evaluate.

``translate`` / ``evaluate`` ``--dtype/--compile`` only pass on to the library: the weights'
dtype to ``load_model_dir`` (parsed by ``devices.pick_dtype``), ``compile`` to
``tasks.translate``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time

from ..errors import InputError
from ..files import write_text_atomically
from .common import (DEVICE_HELP, add_inference_args, add_preset_flags, add_run_flags, fresh_output_dir,
                     non_negative_float, non_negative_int, note, open_fraction, positive_float, positive_int,
                     probability, setting_defaults, stdin_lines, train_settings, trained)
from .quickstart_post import (POST_TRAINING, add_post_training_flags, quickstart_post_training,
                              refuse_post_training_flags)


def register(subparsers) -> None:
    from ..training.quickstart import QUICKSTART_SETTINGS, QUICKSTART_TIME_LIMIT as QUICKSTART_LIMIT
    from ..training.translation import TranslationSettings

    QUICKSTART_STEPS = QUICKSTART_SETTINGS["steps"]
    defaults = setting_defaults(TranslationSettings)
    p = subparsers.add_parser("quickstart", help="build the number corpus, train a small translator, evaluate it "
                                                 "(`quickstart post-training`: a small GPT through SFT, DPO and RL)")
    p.add_argument("--out", help="run directory (model in OUT/best; default: runs/quickstart)")
    p.add_argument("--src-lang", default="de", help="source language of the number corpus")
    p.add_argument("--tgt-lang", default="en", help="target language of the number corpus")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"training steps (default: {QUICKSTART_STEPS}, the quickstart setting)")
    p.add_argument("--time-limit", type=positive_float, default=None,
                   help=f"stop training after this many seconds (default: {QUICKSTART_LIMIT:g})")
    p.add_argument("--n-test", type=positive_int, default=2000, help="held-out test numbers")
    p.add_argument("--seed", type=int, default=0, help="random seed of the corpus split, training and sampling")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_decoding_args(p, seed=False)
    add_post_training_flags(p)                  # `quickstart post-training`: cli/quickstart_post.py
    p.set_defaults(func=quickstart)

    train = subparsers.add_parser("train", help="train a model")      # the tasks are named once registered, below
    train_sub = train.add_subparsers(dest="task", metavar="TASK", parser_class=subparsers._parser_class)
    t = train_sub.add_parser("translation", help="train an encoder-decoder on a parallel corpus")
    t.add_argument("--src", help="source text file (one sentence per line), or a .tsv/.jsonl with two columns")
    t.add_argument("--tgt", help="target text file aligned with --src")
    t.add_argument("--valid-src", help="validation source file (default: hold out --valid-fraction of training)")
    t.add_argument("--valid-tgt", help="validation target file")
    t.add_argument("--valid-fraction", type=open_fraction,
                   help=f"share of the pairs held out for validation (default: {VALID_FRACTION:g})")
    add_preset_flags(t, TranslationSettings.family, defaults["preset"])
    t.add_argument("--out", default="runs/translation", help="run directory (model in OUT/best and OUT/last)")
    t.add_argument("--steps", type=positive_int, help=f"optimiser steps (default: {defaults['steps']})")
    t.add_argument("--max-tokens", type=positive_int, help=f"tokens per batch (default: {defaults['max_tokens']})")
    t.add_argument("--max-sentences", type=positive_int, help="sentence pairs per batch at most (default: no limit)")
    t.add_argument("--vocab-size", type=positive_int, help=f"BPE vocabulary size (default: {defaults['vocab_size']})")
    t.add_argument("--separate-vocab", action="store_true", help="one BPE per language instead of a shared one")
    t.add_argument("--eval-every", type=positive_int, help="steps between validations (default: once per epoch)")
    t.add_argument("--time-limit", type=positive_float,
                   help="stop training after this many seconds, evaluating first (default: no limit)")
    t.add_argument("--keep-checkpoints", type=non_negative_int,
                   help=f"keep the last K evaluation checkpoints, for averaging (default: {defaults['keep_checkpoints']})")
    t.add_argument("--seed", type=int, help=f"random seed (default: {defaults['seed']})")
    t.add_argument("--device", help=f"{DEVICE_HELP} (default: {defaults['device']})")
    add_run_flags(t, defaults)
    t.set_defaults(func=train_translation_cmd)
    for task in ("lm", "mlm", "classify", "vit", "caption"):  # the other tasks' `train` subcommands, where they have one
        if importlib.util.find_spec(f"{__package__}.{task}") is not None:
            module = importlib.import_module(f"{__package__}.{task}")
            if hasattr(module, "register_train"):
                module.register_train(train_sub)
    for command in subparsers._choices_actions:      # `glassformer --help` names the tasks registered above
        if command.dest == "train":
            command.help = f"train a model ({', '.join(train_sub.choices)})"

    tr = subparsers.add_parser("translate", help="translate text with a model directory")
    tr.add_argument("model_dir")
    tr.add_argument("text", nargs="*", default=[],
                    help="sentences to translate (default: read lines from stdin; blank lines give blank lines)")
    add_inference_args(tr)
    add_decoding_args(tr)
    tr.set_defaults(func=translate_cmd)

    ev = subparsers.add_parser("evaluate", help="sacreBLEU, chrF and exact match of a model on a test set")
    ev.add_argument("model_dir")
    ev.add_argument("--src", required=True, help="source file, one sentence per line")
    ev.add_argument("--ref", required=True, help="reference translations aligned with --src")
    ev.add_argument("--hyp-out", help="also write the hypotheses to this file")
    add_inference_args(ev)
    add_decoding_args(ev)
    ev.set_defaults(func=evaluate_cmd)


def add_decoding_args(p: argparse.ArgumentParser, *, seed: bool = True) -> None:
    import inspect

    from ..generation import decode

    mbr_default = {k: v.default for k, v in inspect.signature(decode).parameters.items() if k.startswith("mbr_")}
    g = p.add_argument_group("decoding")
    g.add_argument("--beam", type=positive_int, default=None, metavar="N",
                   help="beam size (1 = greedy; default: a Hugging Face directory's num_beams, else 1)")
    g.add_argument("--alpha", type=non_negative_float, default=None,
                   help="length penalty α (GNMT); 0 = raw log-probability (default: 0.6, or a Hugging Face "
                        "directory's length_penalty with its own formula)")
    g.add_argument("--n-best", type=positive_int, default=1, metavar="N", help="print the N best hypotheses per input (translate)")
    g.add_argument("--mbr", action="store_true", help="minimum Bayes risk decoding")
    g.add_argument("--mbr-candidates", type=positive_int, default=None,
                   help=f"with --mbr: candidates to choose from (default: {mbr_default['mbr_candidates']})")
    g.add_argument("--mbr-utility", choices=["bleu", "chrf"], default=None,
                   help=f"with --mbr: the similarity to maximise (default: {mbr_default['mbr_utility']})")
    g.add_argument("--temperature", type=non_negative_float, default=None,
                   help="sampling temperature (0 = greedy; default: the model directory's setting, else 0)")
    g.add_argument("--top-k", type=positive_int,
                   help="sample among the K most likely tokens (default: the model directory's setting, else all)")
    g.add_argument("--top-p", type=probability,
                   help="nucleus sampling mass, in (0, 1] (default: the model directory's setting, else 1)")
    g.add_argument("--repetition-penalty", type=positive_float, default=None,
                   help="CTRL repetition penalty (1 = off; default: the model directory's setting, else 1)")
    if seed:
        g.add_argument("--seed", type=int, default=None, help="sampling seed (default: none, a new sample each run)")
    g.add_argument("--batch-size", type=positive_int, default=64, help="sentences decoded together")
    g.add_argument("--max-len-a", type=non_negative_float, default=1.0, help="output length limit a·|source| + b")
    g.add_argument("--max-len-b", type=non_negative_int, default=50, help="output length limit a·|source| + b")
    g.add_argument("--min-length", dest="min_new_tokens", type=non_negative_int, default=None,
                   help="no EOS before this many tokens (default: the model directory's setting, else 0)")
    g.add_argument("--no-repeat-ngram-size", type=non_negative_int, default=None,
                   help="never repeat an n-gram of this size (0 = off; default: the model directory's, else 0)")


def decoding_options(args, generation: dict | None = None) -> dict:
    """The decoding flags as ``decode`` options, with the model directory's ``generation`` settings
    for those left out (:func:`glassformer.tasks.translate_options`)."""
    from ..tasks import DECODING_OPTIONS, translate_options

    return translate_options(generation, n_best=args.n_best, mbr=args.mbr, mbr_candidates=args.mbr_candidates,
                             mbr_utility=args.mbr_utility, seed=getattr(args, "seed", None),
                             **{k: getattr(args, k) for k in DECODING_OPTIONS})


def _checked_device(args):
    """The device, once it is known to run ``--dtype`` and the decoding flags are known good: before any reading."""
    from ..devices import pick_device, pick_dtype

    device = pick_device(args.device)
    pick_dtype(args.dtype, device)
    decoding_options(args)
    return device


def _load_translator(args, device) -> tuple:
    """The model directory, refused unless it holds a translator, and the keywords of ``translate``."""
    from ..devices import pick_dtype
    from ..model_dir import load_model_dir
    from ..tasks import check_translator

    loaded = load_model_dir(args.model_dir, device, pick_dtype(args.dtype, device))
    check_translator(loaded, args.model_dir)
    return loaded, dict(batch_size=args.batch_size, max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                        decode_options=decoding_options(args, loaded.generation), compile=args.compile)


def translate_cmd(args) -> int:
    from ..tasks import translate_nbest

    device = _checked_device(args)
    lines = args.text or stdin_lines("give sentences as arguments or pipe them on stdin, one per line")
    if not args.text and not any(line.strip() for line in lines):
        raise InputError("standard input held no lines to translate" + (" (only blank ones)" if lines else ""))
    # Arguments are translated as given (an empty one is an error); blank stdin lines are skipped and
    # answered with a blank line, so that line N of the output belongs to line N of the input.
    blank = set() if args.text else {i for i, line in enumerate(lines) if not line.strip()}
    texts = [line for i, line in enumerate(lines) if i not in blank]
    loaded, kwargs = _load_translator(args, device)
    results = iter(translate_nbest(loaded.model, loaded.src_tokenizer, loaded.tokenizer, texts, **kwargs))
    for i in range(len(lines)):
        if i in blank:
            print()
            continue
        hyps = next(results)
        if args.n_best > 1:
            for rank, (text, score) in enumerate(hyps, 1):
                print(f"{rank}\t{score:.4f}\t{text}")
        else:
            print(hyps[0][0])
    if blank:
        note(f"skipped {len(blank)} blank input line(s); each is answered with a blank output line")
    return 0


def evaluate_cmd(args) -> int:
    from ..data.parallel import read_parallel
    from ..tasks import score, translate

    device = _checked_device(args)
    pairs = read_parallel(args.src, args.ref)
    loaded, kwargs = _load_translator(args, device)
    start = time.perf_counter()
    hyps = translate(loaded.model, loaded.src_tokenizer, loaded.tokenizer, [s for s, _ in pairs], **kwargs)
    result = score(hyps, [r for _, r in pairs])
    result["seconds"] = round(time.perf_counter() - start, 2)
    if args.hyp_out:
        write_text_atomically(args.hyp_out, "".join(h + "\n" for h in hyps))
    print(f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  exact match {result['exact_match']:.2f}%  "
          f"({result['sentences']} sentences, {result['seconds']:.1f}s)")
    print(json.dumps(result))
    return 0


_FLAGS = ("preset", "steps", "max_tokens", "max_sentences", "vocab_size", "keep_checkpoints", "seed", "device",
          "eval_every", "time_limit")
VALID_FRACTION = 0.02
SOURCES = ("src", "tgt", "valid_src", "valid_tgt", "valid_fraction")


def _sources(args, saved: dict) -> dict:
    """The files the pairs are read from (the flags in SOURCES): the flags, else (resuming) the run's own."""
    if saved and all(getattr(args, k) is None for k in SOURCES):
        return saved
    if not args.src:
        raise InputError("give --src FILE and --tgt FILE (aligned text files), or --src FILE.tsv/.jsonl")
    sources = {k: getattr(args, k) for k in SOURCES}
    if sources["valid_fraction"] is None:
        sources["valid_fraction"] = VALID_FRACTION
    return sources


def train_translation_cmd(args) -> int:
    from ..data.parallel import read_parallel
    from ..devices import pick_device
    from ..training.translation import TranslationSettings, train_translation

    out, resume, _, settings, saved = train_settings(args, _FLAGS, task=TranslationSettings.task,
                                                     also={"shared_vocab": False} if args.separate_vocab else {})
    settings = TranslationSettings.from_dict(settings)     # checks types, ranges, the preset and its fields
    pick_device(settings.device)
    source = _sources(args, saved.get("sources", {}))
    pairs = read_parallel(source["src"], source["tgt"])
    if source["valid_src"] or source["valid_tgt"]:
        if not (source["valid_src"] and source["valid_tgt"]):
            raise InputError("give both --valid-src and --valid-tgt, or neither")
        train, valid = pairs, read_parallel(source["valid_src"], source["valid_tgt"])
    else:
        n_valid = max(1, int(len(pairs) * source["valid_fraction"]))
        if len(pairs) - n_valid < 1:
            raise InputError(f"{len(pairs)} sentence pairs are too few to hold out a validation set")
        train, valid = pairs[n_valid:], pairs[:n_valid]
    with fresh_output_dir(out):
        run = train_translation(train, valid, settings, out, resume=resume, extend=args.extend, sources=source)
    if not run.result.main_process:                  # another process of a distributed run: rank 0 reports
        return 0
    print(f"{trained(run.result)}; best validation loss {run.result.best_loss:.4f}; model saved to {out / 'best'}")
    return 0


def quickstart(args) -> int:
    from ..devices import pick_device
    from ..training.quickstart import run_quickstart

    if args.variant == POST_TRAINING:
        return quickstart_post_training(args)
    refuse_post_training_flags(args)
    pick_device(args.device)
    options = decoding_options(args)
    out = args.out or "runs/quickstart"
    with fresh_output_dir(out):
        run_quickstart(out_dir=out, src_lang=args.src_lang, tgt_lang=args.tgt_lang, steps=args.steps,
                       time_limit=args.time_limit, n_test=args.n_test, seed=args.seed, device=args.device,
                       decode_options=options)
    return 0
