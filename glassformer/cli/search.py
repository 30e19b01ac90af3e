"""``glassformer average-checkpoints``: one model from the mean of several checkpoints (§6.1).

    glassformer average-checkpoints OUT_DIR CKPT_DIR [CKPT_DIR ...]
    glassformer average-checkpoints OUT_DIR --last 5 RUN_DIR

Decoding options (``--beam``, ``--alpha``, ``--n-best``, ``--mbr`` ...) belong to
``translate`` / ``evaluate``; they call :func:`glassformer.generation.decode`.
"""

from __future__ import annotations

from ..errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "average-checkpoints",
        help="average the parameters of several checkpoints into one model directory",
        description="Write the element-wise mean of the parameters of model directories with the same config "
                    "(the paper averages the last 5 checkpoints of a base model, the last 20 of a big one). "
                    "Tokenizers and generation settings are copied from the last checkpoint.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="model directory to write (replaced atomically)")
    p.add_argument("checkpoints", metavar="CKPT_DIR", nargs="*", help="model directories to average")
    p.add_argument("--last", nargs=2, metavar=("K", "RUN_DIR"),
                   help="average the K most recent RUN_DIR/checkpoints/step-* directories instead")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.averaging import average_checkpoints, last_checkpoints

    if args.last and args.checkpoints:
        raise ConfigError("give either checkpoint directories or --last K RUN_DIR, not both")
    if args.last:
        k, run_dir = args.last
        try:
            k = int(k)
        except ValueError:
            raise ConfigError(f"--last {k!r} is invalid; K must be a positive integer") from None
        dirs = last_checkpoints(run_dir, k)
    elif args.checkpoints:
        dirs = args.checkpoints
    else:
        raise ConfigError("nothing to average: give model directories or --last K RUN_DIR")
    out = average_checkpoints(args.out_dir, dirs)
    print(f"averaged {len(dirs)} checkpoint(s) into {out}: " + ", ".join(str(d) for d in dirs))
    return 0
