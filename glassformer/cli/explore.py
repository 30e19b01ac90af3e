"""``glassformer plot-positions`` and ``explain``: pictures that explain the model (issue 12)."""

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
    p.add_argument("--out", default="positions.png", metavar="PATH",
                   help="the figure to write: a PNG, or .svg, .pdf ... (any format matplotlib writes)")
    p.set_defaults(func=run)
    register_explain(subparsers)


def run(args: argparse.Namespace) -> int:
    from ..explain.figures import figure_format, positional_encoding_figure, save_figure

    figure_format(args.out)                  # an --out matplotlib cannot write is refused before any drawing
    fig = positional_encoding_figure(args.d_model, args.length)     # bad sizes raise before anything is written
    print(save_figure(fig, args.out))
    return 0


# -- explain ---------------------------------------------------------------------------------------
def register_explain(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="one HTML page of the tokens, prediction and attention of a model on one text",
        description="Run a GPT (the text is the prompt), a translator (the text is the source), a BERT encoder, "
                    "a ViT or a caption model (the text is an image file) once on TEXT, capture its attention, and "
                    "write one self-contained HTML page (no network needed): the tokens, the prediction, an "
                    "attention grid per layer and head with a selector, a head view, for models with "
                    "cross-attention (translators, caption models) the cross-attention alignment, for caption "
                    "models each caption token's attention over the image's patch grid, and for GPTs the logit "
                    "lens and the input saliency of the predicted token (gradient × input and integrated "
                    "gradients).  With --neurons LAYER (GPT, BERT, ViT, a translator's encoder) also that layer's most active "
                    "feed-forward neurons.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR",
                   help="a model directory (gpt, transformer, recurrent, bert, vit or caption)")
    p.add_argument("text", metavar="TEXT",
                   help="the prompt / source sentence / text to encode / image path (ViT, caption)")
    p.add_argument("--target", help="translators and caption models: the translation / caption to explain "
                                    "(default: the model's greedy one)")
    p.add_argument("--out", default="explain.html", metavar="PATH", help="the HTML page to write")
    p.add_argument("--png", metavar="DIR", help="also write one PNG per attention module (all heads) into DIR; for caption models "
                                             "also each cross-attention's patch-grid maps, for GPTs the logit lens "
                                             "and the input saliency, with --neurons the tokens × neurons heatmap")
    p.add_argument("--layers", type=int, nargs="+", metavar="N", help="only these layer indices (default: all)")
    p.add_argument("--heads", type=int, nargs="+", metavar="N", help="only these head indices (default: all)")
    p.add_argument("--max-new-tokens", type=_int_at_least(0, "0 or more"), default=8, metavar="N",
                   help="GPT: length of the greedy continuation shown")
    p.add_argument("--saliency-steps", type=_int_at_least(1, "a positive number of steps"), default=32, metavar="N",
                   help="GPT: points on the path of integrated gradients (default: 32; more is closer to exact)")
    p.add_argument("--neurons", type=int, metavar="LAYER",
                   help="GPT, BERT, ViT, translators (the encoder): show the 8 most active feed-forward neurons of this layer (from 0) "
                        "and the tokens that excite them; with --png also a tokens × neurons heatmap")
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from ..errors import CheckpointError, InputError
    from ..explain.collectors import COLLECTORS
    from ..explain.report import explain, write_html, write_pngs
    from ..model_dir import load_model_dir, read_config

    try:                                    # a Hugging Face directory has no glassformer family: load decides
        config = read_config(args.model_dir)
    except CheckpointError:
        config = None
    if config is not None and config.family in COLLECTORS:    # the input checked before the weights load
        COLLECTORS[config.family].check_input(config, args.text)
    for what, values in (("layer", args.layers), ("head", args.heads)):
        for v in values or ():
            if v < 0:
                raise InputError(f"{what} {v} does not exist; {what} indices start at 0")
    report = explain(load_model_dir(args.model_dir), args.text, args.target, layers=args.layers, heads=args.heads,
                     max_new_tokens=args.max_new_tokens, saliency_steps=args.saliency_steps, neurons=args.neurons)
    if args.png:
        write_pngs(report, args.png)
    print(write_html(report, args.out))
    return 0
