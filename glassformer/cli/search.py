"""``glassformer average-checkpoints``: one model from the mean of several checkpoints (§6.1).

    glassformer average-checkpoints OUT_DIR CKPT_DIR [CKPT_DIR ...]
    glassformer average-checkpoints [OUT_DIR] --last 5 RUN_DIR      (OUT_DIR defaults to RUN_DIR/averaged)

OUT_DIR must be new or empty; ``--force`` replaces an existing one, but never a training run,
the current directory or a directory that holds one of the checkpoints.

Decoding options (``--beam``, ``--alpha``, ``--n-best``, ``--mbr`` ...) belong to
``translate`` / ``evaluate``; they call :func:`glassformer.generation.decode`.
"""

from __future__ import annotations

from ..errors import ConfigError
from .common import check_output_dir


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "average-checkpoints",
        help="average the parameters of several checkpoints into one model directory",
        description="Write the element-wise mean of the parameters of model directories with the same config "
                    "(the paper averages the last 5 checkpoints of a base model, the last 20 of a big one). "
                    "Tokenizers and generation settings are copied from the last checkpoint.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?",
                   help="model directory to write, new or empty (with --last: default RUN_DIR/averaged)")
    p.add_argument("checkpoints", metavar="CKPT_DIR", nargs="*", help="model directories to average")
    p.add_argument("--last", nargs=2, metavar=("K", "RUN_DIR"),
                   help="average the K most recent RUN_DIR/checkpoints/step-* directories instead")
    p.add_argument("--force", action="store_true",
                   help="replace OUT_DIR if it exists (never a training run or a directory holding a checkpoint)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..training.averaging import average_checkpoints, last_checkpoints

    if args.last and args.checkpoints:
        raise ConfigError("give either checkpoint directories or --last K RUN_DIR, not both")
    out_dir = args.out_dir
    if args.last:
        k, run_dir = args.last
        try:
            k = int(k)
        except ValueError:
            raise ConfigError(f"--last {k!r} is invalid; K must be a positive integer") from None
        dirs = last_checkpoints(run_dir, k)
        out_dir = out_dir or Path(run_dir) / "averaged"
    elif args.checkpoints:
        dirs = args.checkpoints
    else:
        raise ConfigError("nothing to average: give OUT_DIR and model directories, or --last K RUN_DIR")
    check_output_dir(out_dir, force=args.force, reading=dirs)
    out = average_checkpoints(out_dir, dirs)
    print(f"averaged {len(dirs)} checkpoint(s) into {out}: " + ", ".join(str(d) for d in dirs))
    return 0
