"""Entry point of the ``glassformer`` command.

Each command group lives in its own module with a ``register(subparsers)``
function that adds its sub-commands and sets ``func`` on them.  Errors the
library raises become one line on stderr and exit status 2 (1 for anything
unexpected); ``--debug`` shows the traceback instead.

Options and free text may come in any order (``translate MODEL --beam 4 "text"``,
``translate MODEL "text" --beam 4``, ``translate MODEL --beam 4 -- "-text"``): the
command is found first, then its own parser reads the rest with
``parse_intermixed_args``, which argparse does not offer across sub-commands.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import signal
import sys
import threading

from ..errors import GlassformerError

# Modules under glassformer.cli that add commands, in help order.
COMMAND_MODULES = [
    "translation", "lm", "params", "search", "plot", "embed", "mlm", "classify", "posttrain",
    "vit", "caption", "convert", "lora", "probe", "explore", "compare", "serve",
]


def version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version as installed_version

        return installed_version("glassformer")
    except PackageNotFoundError:                   # running from a source tree that is not installed
        from .. import __version__

        return __version__


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if not action.option_strings or "default" in text or unset or isinstance(action, argparse._VersionAction):
            return action.help
        return f"{text} (default: %(default)s)".strip()


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2, like every other error
        self.exit(2, f"glassformer: error: {message} (see '{self.prog} --help')\n")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _leaves(parser: argparse.ArgumentParser):
    """The parsers that run a command (``translate``, ``train lm`` ...), not those that only choose one."""
    children = _subcommands(parser)
    if not children:
        yield parser
    for child in children.values():
        yield from _leaves(child)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="glassformer", description="The Transformer family, readable and verified.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--version", action="version", version=f"glassformer {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"{__package__}.{name}") is not None:
            importlib.import_module(f"{__package__}.{name}").register(subparsers)
    for leaf in _leaves(parser):                 # --debug also after the command
        leaf.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the full traceback on errors")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Find the command (``translate``, ``train lm`` ...), then let its parser read the rest intermixed."""
    found, _ = parser.parse_known_args(argv)
    path = [found.command] if found.command else []
    sub = parser
    position = 0
    for name in path + [getattr(found, "task", None)]:
        children = _subcommands(sub)
        if name is None or name not in children:
            break
        position = argv.index(name, position) + 1
        sub = children[name]
    if _subcommands(sub):                        # no command, or `train` without a task
        return argparse.Namespace(debug=found.debug, help_of=sub)
    base = argparse.Namespace(debug=found.debug, command=found.command)
    if hasattr(found, "task"):
        base.task = found.task
    return sub.parse_intermixed_args(argv[position:], namespace=base)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "func", None):
        args.help_of.print_help()
        return 2
    try:
        with _sigterm_interrupts():
            return args.func(args) or 0
    except KeyboardInterrupt as e:         # Ctrl-C, or training's TrainingInterrupted (which says what it saved)
        print(f"glassformer: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the CLI's one place that turns errors into a line
        if args.debug:
            raise
        known = isinstance(e, GlassformerError)
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, OSError) and e.filename:   # a file the system refused: name it, it is the user's to fix
            known, message = True, f"{e.filename}: {e.strerror or message}"
        prefix = "error" if known else f"unexpected error ({type(e).__name__})"
        print(f"glassformer: {prefix}: {message}" + ("" if known else " (rerun with --debug for the traceback)"),
              file=sys.stderr)
        return 2 if known else 1


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside training: the command stops as Ctrl-C stops it, exit status 143."""

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def _sigterm_interrupts():
    """While a command runs, SIGTERM raises :class:`_Terminated` (a KeyboardInterrupt) instead of ending
    the process on the spot, so what the command was writing is cleaned up (a run directory that saved
    no model is removed) and it leaves with one line.  Training installs its own handler while it
    trains (finish the step, save, stop) and puts this one back after."""
    if threading.current_thread() is not threading.main_thread():   # only the main thread may set handlers
        yield
        return

    def terminate(signum, frame):
        raise _Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    """The ``glassformer`` command (and ``python -m glassformer``): :func:`main`, then exit with its
    code.  One process of a torchrun job leaves at once after flushing (``os._exit``): by then its
    files are written and its process group is closed, and letting the interpreter tear down
    torch.distributed's threads can abort a run that finished ("terminate called without an active
    exception" from a gloo rank, seen once in CI), which torchrun then reports as a failure."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
