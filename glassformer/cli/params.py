"""``glassformer params PRESET|MODEL_DIR``: where a model's parameters are, as a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError


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


def _looks_like_path(name: str) -> bool:
    return Path(name).is_dir() or "/" in name or name.startswith(".") or name.endswith(".json")


def load_config(name: str):
    """A preset by name, or the config of a model directory."""
    if _looks_like_path(name):
        from ..model_dir import read_config

        path = Path(name)
        return read_config(path.parent if path.name == "config.json" else path)
    from ..models import preset

    return preset(name)


def with_vocab(config, vocab: int | None, src_vocab: int | None, tgt_vocab: int | None):
    """Apply the vocabulary options to whichever vocabulary fields the config has."""
    fields = set(config.to_dict())
    changes: dict[str, int] = {}
    if vocab is not None:
        names = [f for f in ("vocab_size", "src_vocab_size", "tgt_vocab_size") if f in fields]
        if not names:
            raise ConfigError(f"--vocab does not apply: a {config.family} config has no vocabulary size field")
        changes.update(dict.fromkeys(names, vocab))
    for option, field_name, value in (("--src-vocab", "src_vocab_size", src_vocab),
                                      ("--tgt-vocab", "tgt_vocab_size", tgt_vocab)):
        if value is not None:
            if field_name not in fields:
                raise ConfigError(f"{option} does not apply: a {config.family} config has one vocabulary; use --vocab")
            changes[field_name] = value
    src, tgt = changes.get("src_vocab_size"), changes.get("tgt_vocab_size")
    if src is not None and tgt is not None and src != tgt and getattr(config, "tie_embeddings", None) == "all":
        # Separate vocabularies cannot share one embedding matrix; count the next-closest tying.
        changes["tie_embeddings"] = "decoder"
    return config.replace(**changes) if changes else config


def run(args: argparse.Namespace) -> int:
    from ..explain.params import arithmetic, format_param_table, param_table

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
