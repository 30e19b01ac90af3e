"""LoRA on the command line: the ``--lora`` flags of the post-training commands, and
``glassformer merge-lora ADAPTER_DIR --out DIR``, which folds an adapter into its base and writes a
plain model directory."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..nn.lora import ALL_LINEAR, LoRAConfig
from .common import check_output_dir, fraction, positive_float, positive_int

_DEFAULT = LoRAConfig()


def add_lora_flags(parser: argparse.ArgumentParser) -> None:
    """--lora, --lora-r, --lora-alpha, --lora-dropout, --lora-targets, --rslora."""
    g = parser.add_argument_group("LoRA (low-rank adapters; the base weights stay frozen)")
    g.add_argument("--lora", action="store_true",
                   help="train low-rank adapters instead of every weight; the run saves adapter directories "
                        "(peft's layout) that name the base model")
    g.add_argument("--lora-r", type=positive_int, metavar="R", help=f"the adapters' rank (default: {_DEFAULT.r})")
    g.add_argument("--lora-alpha", type=positive_float, metavar="ALPHA",
                   help=f"scale the update by ALPHA/R (default: {_DEFAULT.alpha:g}, i.e. 2 at rank 8; peft's is 8)")
    g.add_argument("--lora-dropout", type=fraction, metavar="P",
                   help=f"dropout on the adapters' input (default: {_DEFAULT.dropout:g})")
    g.add_argument("--lora-targets", metavar="NAMES",
                   help=f"comma list of the layers to adapt: q, k, v, out_proj, linear1, linear2 (gate, up when "
                        f"gated), a glob over full names, or {ALL_LINEAR} (default: {','.join(_DEFAULT.targets)})")
    g.add_argument("--rslora", action="store_true", help="scale by ALPHA/sqrt(R) instead (rank-stabilised LoRA)")


def lora_setting(args: argparse.Namespace) -> dict | None:
    """The LoRAConfig fields the flags ask for (validated; for a run's settings JSON), None without
    ``--lora``.  A LoRA flag without ``--lora`` is refused rather than ignored."""
    fields = {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
              "targets": args.lora_targets, "rslora": args.rslora or None}
    given = {name: value for name, value in fields.items() if value is not None}
    if not args.lora:
        if given:
            flag = {"r": "--lora-r", "alpha": "--lora-alpha", "dropout": "--lora-dropout",
                    "targets": "--lora-targets", "rslora": "--rslora"}[next(iter(given))]
            raise ConfigError(f"{flag} sets up LoRA, which is off; add --lora")
        return None
    return LoRAConfig(**given).to_dict()


def lora_from_flags(args: argparse.Namespace) -> dict:
    """``{"lora": fields}`` (:func:`lora_setting`) when ``--lora`` is given, else ``{}``: the settings the
    LoRA flags add to a post-training run's."""
    setting = lora_setting(args)
    return {} if setting is None else {"lora": setting}


def register(subparsers) -> None:
    m = subparsers.add_parser("merge-lora", help="fold a LoRA adapter into its base model: a plain model directory")
    m.add_argument("adapter", metavar="ADAPTER_DIR", help="an adapter directory (adapter_config.json + "
                                                          "adapter_model.safetensors naming its base model)")
    m.add_argument("--out", required=True, metavar="DIR",
                   help="the model directory to write: a new or empty one (--force replaces an existing one)")
    m.add_argument("--force", action="store_true",
                   help="replace DIR if it exists (never a training run, the current directory, the adapter or "
                        "its base)")
    m.set_defaults(func=merge_lora_cmd)


def merge_lora_cmd(args) -> int:
    from ..interop.peft import ADAPTER_CONFIG, adapter_base, is_adapter_dir, load_adapter
    from ..model_dir import save_model_dir
    from ..nn.lora import merge_lora, trainable_parameters

    if not is_adapter_dir(args.adapter):
        raise ConfigError(f"{args.adapter} is not an adapter directory (it has no {ADAPTER_CONFIG})")
    base = adapter_base(args.adapter)
    check_output_dir(args.out, force=args.force, reading=[args.adapter, base])
    loaded = load_adapter(args.adapter)
    merged = merge_lora(loaded.model)
    save_model_dir(args.out, merged, loaded.tokenizer, generation=loaded.generation)
    print(f"wrote {args.out}: the base {base} with the adapter {args.adapter} merged "
          f"({trainable_parameters(merged)[1]:,} parameters, glassformer layout)")
    return 0
