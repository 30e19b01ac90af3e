"""``glassformer params PRESET|MODEL_DIR``: where a model's parameters are, as a table."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "params",
        help="count a model's parameters per component",
        description="Print a model's parameters per component, layer and kind (tied matrices counted once). "
                    "The model is built on the 'meta' device: nothing is allocated or initialised.",
    )
    p.add_argument("model", metavar="PRESET|MODEL_DIR", help="a preset name (e.g. vaswani-base) or a model directory")
    p.add_argument("--vocab", type=int, metavar="N", help="vocabulary size (source and target alike)")
    p.add_argument("--src-vocab", type=int, metavar="N", help="source vocabulary size (encoder-decoders)")
    p.add_argument("--tgt-vocab", type=int, metavar="N", help="target vocabulary size (encoder-decoders)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..explain.params import arithmetic, format_param_table, load_config, param_table, with_vocab

    config = with_vocab(load_config(args.model), args.vocab, args.src_vocab, args.tgt_vocab)
    title = f"{args.model} ({config.family})"
    tying = getattr(config, "tie_embeddings", None)
    if tying is not None:
        title += f", tie_embeddings={tying}"
    print(format_param_table(param_table(config), title=title))
    sums = arithmetic(config)
    if sums:
        print("\narithmetic\n" + "\n".join(f"  {line}" for line in sums))
    return 0
