"""Commands of the masked-language-model task: ``train mlm`` and ``fill-mask``.

``fill-mask`` reads a model directory with a masked-LM head: one trained by ``train mlm``,
or a Hugging Face ``BertForMaskedLM`` directory (loaded through ``glassformer.interop``).
"""

from __future__ import annotations

import json
import sys

from .common import (CORPUS_CHOICES, CORPUS_HELP, COSINE_FLAGS, DEVICE_HELP, add_cosine_schedule_flags,
                     add_preset_flags, add_run_flags, positive_float, positive_int, run_training, setting_defaults,
                     trained, warnings_as_lines)


def register(subparsers) -> None:
    f = subparsers.add_parser("fill-mask", help="the most likely words for each [MASK] of a text (a BERT with a "
                                                "masked-LM head)")
    f.add_argument("model_dir", help="a model directory from 'train mlm', or a Hugging Face BertForMaskedLM directory")
    f.add_argument("text", help='text with one or more [MASK], e.g. "The capital of France is [MASK]."')
    f.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="candidates shown per [MASK]")
    f.add_argument("--truncate", action="store_true",
                   help="cut a text longer than the model's positions (at the end) instead of refusing it")
    f.add_argument("--json", action="store_true", help="print one JSON object (candidates and probabilities)")
    f.add_argument("--device", default="auto", help=DEVICE_HELP)
    f.set_defaults(func=fill_mask_cmd)


def register_train(train_subparsers) -> None:
    from ..training.mlm import MLMSettings

    d = setting_defaults(MLMSettings)
    t = train_subparsers.add_parser("mlm", help="pre-train a BERT by masked-language modelling on text")
    t.add_argument("--data", help=CORPUS_HELP)
    add_preset_flags(t, "bert", d["preset"])
    t.add_argument("--vocab-size", type=positive_int, help=f"WordPiece vocabulary size (default: {d['vocab_size']})")
    t.add_argument("--cased", action="store_true", default=None,
                   help="keep case and accents (default: lower-case them, as uncased BERT does)")
    t.add_argument("--block-size", type=positive_int,
                   help="tokens per window, [CLS] and [SEP] included (default: 128 or the model's positions if fewer)")
    t.add_argument("--batch-size", type=positive_int, help=f"windows per micro-batch (default: {d['batch_size']})")
    t.add_argument("--mask-prob", type=positive_float,
                   help=f"share of the tokens selected for prediction, in (0, 1) (default: {d['mask_prob']:g})")
    t.add_argument("--whole-word", action="store_true", default=None,
                   help="mask whole words (a piece and its ## continuations) together")
    t.add_argument("--eval-batches", type=positive_int,
                   help=f"validation batches per evaluation (default: {d['eval_batches']})")
    t.add_argument("--out", default="runs/mlm", help="run directory (model in OUT/best and OUT/last)")
    t.add_argument("--seed", type=int, help=f"random seed (default: {d['seed']})")
    add_cosine_schedule_flags(t, d)
    add_run_flags(t, d)
    t.set_defaults(func=train_mlm_cmd)


_FLAGS = ("vocab_size", "preset", "block_size", "batch_size", "mask_prob", "whole_word", "eval_batches", "seed",
          *COSINE_FLAGS)


def train_mlm_cmd(args) -> int:
    from ..training.mlm import MLMSettings, train_mlm

    out, run = run_training(args, _FLAGS, MLMSettings, train_mlm, data_flag="data", data_key="source",
                            missing=f"give --data: {CORPUS_CHOICES}",
                            also={} if args.cased is None else {"lowercase": not args.cased})
    if not run.result.main_process:                  # another process of a distributed run: rank 0 reports
        return 0
    if not run.result.history:
        stop = f"; {run.result.stop_note}" if run.result.stop_note else ""
        print(f"nothing to train: the run in {out} has done its {run.result.steps} steps{stop}")
        return 0
    best = min(run.result.history, key=lambda m: m["loss"])
    print(f"{trained(run.result)}; best validation loss {best['loss']:.4f} (masked-token accuracy "
          f"{best['accuracy']:.1%}); model saved to {out / 'best'}")
    return 0


# -- fill-mask -----------------------------------------------------------------------------------
def fill_mask_cmd(args) -> int:
    from ..devices import pick_device
    from ..model_dir import load_model_dir
    from ..tasks import check_masked_lm, fill_mask

    device = pick_device(args.device)
    loaded = load_model_dir(args.model_dir, device)
    check_masked_lm(loaded, args.model_dir)
    with warnings_as_lines("note"):
        result = fill_mask(loaded.model, loaded.tokenizer, args.text, args.top_k, truncate=args.truncate,
                           device=device)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    several = len(result["masks"]) > 1
    for n, mask in enumerate(result["masks"], 1):
        if several:
            print(f"[MASK] {n} of {len(result['masks'])}:")
        for c in mask["candidates"]:
            print(f"{'  ' if several else ''}{c['token']} {c['probability']:.3f}")
    if several:
        print(f"filled: {result['filled']}")
    sys.stdout.flush()
    return 0


__all__ = ["register", "register_train"]
