"""Entry point of the ``glassformer`` command.

Each command group lives in its own module with a ``register(subparsers)``
function that adds its sub-commands and sets ``func`` on them.  Errors the
library raises become one line on stderr and exit status 2 (1 for anything
unexpected); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import GlassformerError

# Modules under glassformer.cli that add commands, in help order.
COMMAND_MODULES = ["translation", "lm", "params", "search"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="glassformer", description="The Transformer family, readable and verified.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("glassformer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the CLI's one place that turns errors into a line
        if args.debug:
            raise
        known = isinstance(e, GlassformerError)
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        prefix = "error" if known else f"unexpected error ({type(e).__name__})"
        print(f"glassformer: {prefix}: {message}" + ("" if known else " (rerun with --debug for the traceback)"),
              file=sys.stderr)
        return 2 if known else 1


if __name__ == "__main__":
    sys.exit(main())
