"""Commands of the language-model task: ``train lm`` and ``generate``.

``generate --dtype/--compile`` only pass on to the library: the weights' dtype to
``load_model_dir`` (parsed by ``devices.pick_dtype``), ``compile`` to ``tasks.generate``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError
from ..files import why_unreadable
from .common import (CORPUS_CHOICES, CORPUS_HELP, COSINE_FLAGS, add_cosine_schedule_flags, add_inference_args,
                     add_preset_flags, add_run_flags, non_negative_float, non_negative_int, positive_float,
                     positive_int, probability, run_training, setting_defaults, trained)


def register(subparsers) -> None:
    g = subparsers.add_parser("generate", help="continue text with a GPT model directory (streams tokens)")
    g.add_argument("model_dir")
    g.add_argument("prompt", nargs="*", default=[], help="prompt text; several prompts are generated as one batch")
    g.add_argument("--prompts-file", help="a UTF-8 file of prompts, one per line (batch mode, JSON lines out)")
    g.add_argument("--max-new-tokens", type=positive_int, default=None, metavar="N",
                   help="tokens to generate per prompt (default: 200, at most half the model's context)")
    g.add_argument("--temperature", type=non_negative_float, default=None,
                   help="sampling temperature; 0 = greedy (default: the model directory's setting, else 1)")
    g.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                   help="sample among the K most likely tokens (default: the model directory's setting, else all)")
    g.add_argument("--top-p", type=probability, default=None,
                   help="nucleus sampling mass, in (0, 1] (default: the model directory's setting, else 1)")
    g.add_argument("--repetition-penalty", type=positive_float, default=None,
                   help="CTRL repetition penalty (1 = off; default: the model directory's setting, else 1)")
    g.add_argument("--no-repeat-ngram-size", type=non_negative_int, default=None, metavar="N",
                   help="never repeat an N-gram, prompt included (0 = off; default: the model directory's, else 0)")
    g.add_argument("--min-new-tokens", type=non_negative_int, default=None, metavar="N",
                   help="no end-of-text before N new tokens (default: the model directory's setting, else 0)")
    g.add_argument("--seed", type=non_negative_int, default=0,
                   help="sampling seed: the same seed gives each prompt the same text, whatever --batch-size "
                        "(default: 0)")
    g.add_argument("--stop", default=None, help="stop a row when its generated text contains STRING (cut before it)")
    g.add_argument("--truncate-left", action="store_true",
                   help="drop the start of prompts that do not fit in the context instead of refusing them")
    g.add_argument("--batch-size", type=positive_int, default=32, help="prompts decoded together in batch mode")
    g.add_argument("--beam", type=positive_int, default=None, metavar="N",
                   help="beam search with this many beams (1 = sample/greedy; default: a Hugging Face directory's "
                        "num_beams, else 1)")
    g.add_argument("--alpha", type=non_negative_float, default=None,
                   help="beam length penalty α (GNMT); 0 = raw log-probability (default: 0.6, or a Hugging Face "
                        "directory's length_penalty with its own formula)")
    g.add_argument("--n-best", type=positive_int, default=1, metavar="N",
                   help="with --beam: print the N best continuations")
    add_inference_args(g)
    g.set_defaults(func=generate_cmd)


def register_train(train_subparsers) -> None:
    from ..training.lm import LMSettings

    d = setting_defaults(LMSettings)
    t = train_subparsers.add_parser("lm", help="train a GPT language model on text")
    t.add_argument("--data", help=CORPUS_HELP)
    t.add_argument("--tokenizer", choices=["char", "bpe"], default=None,
                   help=f"characters or byte-level BPE (default: {d['tokenizer']})")
    t.add_argument("--vocab-size", type=positive_int, help=f"BPE vocabulary size (default: {d['vocab_size']})")
    add_preset_flags(t, "gpt", d["preset"])
    t.add_argument("--block-size", type=positive_int,
                   help="tokens per training window, at most the model's positions (default: the model's context)")
    t.add_argument("--batch-size", type=positive_int, help=f"windows per micro-batch (default: {d['batch_size']})")
    t.add_argument("--out", default="runs/lm", help="run directory (model in OUT/best and OUT/last)")
    t.add_argument("--seed", type=int, help=f"random seed (default: {d['seed']})")
    add_cosine_schedule_flags(t, d)
    add_run_flags(t, d)
    t.set_defaults(func=train_lm_cmd)


_FLAGS = ("tokenizer", "vocab_size", "preset", "block_size", "batch_size", "seed", *COSINE_FLAGS)


def train_lm_cmd(args) -> int:
    from ..training.lm import LMSettings, train_lm

    out, run = run_training(args, _FLAGS, LMSettings, train_lm, data_flag="data", data_key="source",
                            missing=f"give --data: {CORPUS_CHOICES}")
    if run.result.main_process:                      # not another process of a distributed run: rank 0 reports
        best = min(run.result.history, key=lambda m: m["loss"])
        print(f"{trained(run.result)}; best validation loss {best['loss']:.4f} (perplexity {best['ppl']:.2f}); "
              f"model saved to {out / 'best'}")
    return 0


# -- generate ----------------------------------------------------------------------------
def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        if why := why_unreadable(args.prompts_file):
            raise InputError(f"prompts file {args.prompts_file} {why}")
        try:
            prompts += Path(args.prompts_file).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise InputError(f"prompts file {args.prompts_file} is not UTF-8 text") from None
        if not prompts:
            raise InputError(f"prompts file {args.prompts_file} holds no prompts")
    if not prompts:
        raise InputError('give a prompt ("" to start from nothing) or --prompts-file FILE')
    return prompts


def generate_cmd(args) -> int:
    from ..devices import pick_device, pick_dtype
    from ..model_dir import load_model_dir
    from ..tasks import (DECODING_OPTIONS, beam_complete, check_generator, complete_batch, generation_plan,
                         stream_completion)

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    if args.stop == "":
        raise InputError("--stop needs a non-empty string")
    prompts = _read_prompts(args)
    loaded = load_model_dir(args.model_dir, device, dtype)
    check_generator(loaded, args.model_dir)
    plan = generation_plan(loaded, prompts, max_new_tokens=args.max_new_tokens, truncate_left=args.truncate_left,
                           n_best=args.n_best, seed=args.seed, **{k: getattr(args, k) for k in DECODING_OPTIONS})
    model, tokenizer, ids = loaded.model, loaded.tokenizer, plan.ids
    _warn_unknown_characters(tokenizer, prompts)
    batch_mode = len(prompts) > 1 or bool(args.prompts_file)

    if plan.search is None and not batch_mode:  # one prompt: print each piece of text as it is produced
        pieces = stream_completion(model, tokenizer, ids[0], plan.options, args.stop, compile=args.compile)
        first = next(pieces, "")                 # the first step (and a compile) may fail: then nothing is printed
        sys.stdout.write(prompts[0] + first)
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    for start in range(0, len(prompts), args.batch_size):
        chunk = list(range(start, min(start + args.batch_size, len(prompts))))
        if plan.search is None:                  # prompt i samples from stream i, whatever --batch-size is
            texts = complete_batch(model, tokenizer, [ids[i] for i in chunk], plan.options, args.stop,
                                   compile=args.compile, streams=chunk)
            for i, text in zip(chunk, texts):
                print(json.dumps({"prompt": prompts[i], "completion": text}, ensure_ascii=False), flush=True)
            continue
        # beam search, not streamed: the best beam is known only at the end
        results = beam_complete(model, tokenizer, [ids[i] for i in chunk], plan.options, **plan.search,
                                n_best=args.n_best, stop=args.stop, compile=args.compile)
        for i, hyps in zip(chunk, results):
            if batch_mode or args.n_best > 1:
                print(json.dumps({"prompt": prompts[i], "completions": [t for t, _ in hyps],
                                  "scores": [round(x, 4) for _, x in hyps]}, ensure_ascii=False), flush=True)
            else:
                print(prompts[i] + hyps[0][0])
    return 0


def _warn_unknown_characters(tokenizer, prompts: list[str]) -> None:
    """One line on stderr naming the prompt characters the model cannot see (they would vanish silently)."""
    per_prompt = [tokenizer.unknown_characters(p) for p in prompts]
    unknown = list(dict.fromkeys(ch for chars in per_prompt for ch in chars))
    if unknown:
        where = f" (in {sum(map(bool, per_prompt))} of {len(prompts)} prompts)" if len(prompts) > 1 else ""
        print(f"glassformer: warning: characters not in the model's vocabulary are dropped from the prompt{where}: "
              + " ".join(repr(ch) for ch in unknown), file=sys.stderr)


__all__ = ["register", "register_train"]
