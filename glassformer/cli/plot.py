"""``glassformer plot RUN_DIR``: the loss and learning-rate curves of a training run, as PNGs."""

from __future__ import annotations

import argparse

from .common import note


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plot",
        help="plot a training run's loss and learning rate",
        description="Draw RUN_DIR/log.jsonl as loss.png (training loss, validation loss as markers) and "
                    "lr.png (learning rate), and print the paths written. Works while the run goes on. "
                    "Needs matplotlib (pip install 'glassformer[plot]').",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a training run (it holds log.jsonl)")
    p.add_argument("--out", metavar="DIR", help="write the PNGs here instead of into RUN_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.plots import plot_run

    paths = plot_run(args.run_dir, args.out)
    if not any(p.name == "lr.png" for p in paths):
        note("the log has no learning rates (train records with lr), so there is no lr.png")
    for path in paths:
        print(path)
    return 0
