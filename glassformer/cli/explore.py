"""``glassformer plot-positions``: pictures that explain the model (issue 12)."""

from __future__ import annotations

import argparse

from .common import _int_at_least


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plot-positions",
        help="draw the sinusoidal positional encoding",
        description="Draw the sinusoidal positional encoding of §3.5 as a PNG: the (length, d_model) table "
                    "as a heatmap and a few of its dimensions as curves, and print the path written. "
                    "Needs matplotlib (pip install 'glassformer[plot]').",
    )
    p.add_argument("--d-model", type=int, default=128, metavar="N",
                   help="width of the encoding (a positive even number)")
    p.add_argument("--length", type=_int_at_least(1, "a positive number of positions"), default=100, metavar="N",
                   help="number of positions")
    p.add_argument("--out", default="positions.png", metavar="PATH", help="the PNG to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..explain.figures import positional_encoding_figure, save_figure

    fig = positional_encoding_figure(args.d_model, args.length)     # bad sizes raise before anything is written
    print(save_figure(fig, args.out))
    return 0
