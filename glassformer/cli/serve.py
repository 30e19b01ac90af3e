"""``glassformer serve MODEL_DIR``: the model behind a JSON API and a web page (``glassformer.serve``)."""

from __future__ import annotations

import importlib.util

from ..errors import ConfigError
from .common import DEVICE_HELP, note


def register(subparsers) -> None:
    s = subparsers.add_parser("serve", help="serve a model directory over HTTP: a JSON API under /v1/ and a web page")
    s.add_argument("model_dir")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 = every interface)")
    s.add_argument("--port", type=_port, default=8000, help="TCP port to listen on")
    s.add_argument("--device", default="cpu", help=DEVICE_HELP)
    s.set_defaults(func=serve_cmd)


def _port(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is invalid; a port is 0..65535")
    return value


def serve_cmd(args) -> int:
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"serve needs {' and '.join(missing)}: pip install 'glassformer[serve]'")
    import uvicorn

    from ..devices import pick_device
    from ..serve.app import create_app

    app = create_app(args.model_dir, device=pick_device(args.device))
    note(f"serving {args.model_dir} on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
