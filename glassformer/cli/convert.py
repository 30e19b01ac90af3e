"""``glassformer convert``: model directories between glassformer's layout and Hugging Face's."""

from __future__ import annotations

from ..errors import ConfigError
from .common import check_output_dir


def register(subparsers) -> None:
    c = subparsers.add_parser("convert", help="convert a model directory from or to the Hugging Face layout")
    c.add_argument("source", help="the model directory to read")
    c.add_argument("out", help="the directory to write: a new or empty one (--force replaces an existing one)")
    c.add_argument("--force", action="store_true",
                   help="replace OUT if it exists (never a training run, the current directory or SOURCE)")
    way = c.add_mutually_exclusive_group(required=True)
    way.add_argument("--from", dest="from_", choices=["hf"], help="SOURCE is a Hugging Face directory; write ours")
    way.add_argument("--to", choices=["hf"], help="SOURCE is a glassformer directory; write Hugging Face's")
    c.set_defaults(func=convert_cmd)


def convert_cmd(args) -> int:
    from pathlib import Path

    from ..interop import hugging_face_type, save_hf_directory
    from ..model_dir import load_model_dir, save_model_dir

    source = Path(args.source)
    is_hf = hugging_face_type(source) is not None
    if args.from_ == "hf" and not is_hf and (source / "config.json").is_file():
        raise ConfigError(f"{source} is a glassformer model directory; use --to hf to write a Hugging Face one")
    if args.to == "hf" and is_hf:
        raise ConfigError(f"{source} is already a Hugging Face directory; use --from hf to read it")
    check_output_dir(args.out, force=args.force, reading=[source])
    loaded = load_model_dir(source)
    if args.from_ == "hf":
        save_model_dir(args.out, loaded.model, loaded.tokenizer, generation=loaded.generation)
    else:
        save_hf_directory(loaded.model, args.out, loaded.tokenizer, generation=loaded.generation)
    print(f"wrote {args.out} ({loaded.config.family}, {'glassformer' if args.from_ else 'Hugging Face'} layout)")
    return 0
