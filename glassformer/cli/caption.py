"""Commands of the image-to-text task: ``train caption`` and ``caption``."""

from __future__ import annotations

import json
from pathlib import Path

from .common import (COSINE_FLAGS, DEVICE_HELP, add_cosine_schedule_flags, add_run_flags, fresh_output_dir,
                     fraction, non_negative_int, positive_int, preset_help, setting_defaults, train_settings)


def register(subparsers) -> None:
    c = subparsers.add_parser("caption", help="describe images in words with a caption model directory")
    c.add_argument("model_dir")
    c.add_argument("images", nargs="+", help="image files (PNG, ...) of the model's height and at most its width "
                                             "(narrower ones are padded on the right with blank)")
    c.add_argument("--device", default="auto", help=DEVICE_HELP)
    c.set_defaults(func=caption_cmd)


def register_train(train_subparsers) -> None:
    from ..training.caption import CaptionSettings

    d = setting_defaults(CaptionSettings)
    t = train_subparsers.add_parser("caption", help="train an image-to-text model (ViT encoder, Transformer decoder)")
    t.add_argument("--dataset", help="'digits': strips of scikit-learn's 8×8 digits captioned with their names "
                                     "(offline); with --resume, the run's own by default")
    t.add_argument("--preset", help=preset_help("caption", d["preset"]))
    t.add_argument("--config", help="JSON file of training settings; its 'model' object overrides preset fields")
    t.add_argument("--min-digits", type=positive_int, help=f"fewest digits per strip (default: {d['min_digits']})")
    t.add_argument("--max-digits", type=positive_int, help=f"most digits per strip (default: {d['max_digits']})")
    t.add_argument("--batch-size", type=positive_int, help=f"strips per batch (default: {d['batch_size']})")
    t.add_argument("--label-smoothing", type=fraction, help=f"label smoothing (default: {d['label_smoothing']})")
    t.add_argument("--shift", type=non_negative_int, help=f"augmentation: shift strips by up to N pixels "
                                                          f"(default: {d['shift']})")
    t.add_argument("--out", default="runs/caption", help="run directory (model in OUT/best, test exact match in "
                                                         "OUT/results.json)")
    t.add_argument("--seed", type=int, help=f"random seed, also of the split and the strips (default: {d['seed']})")
    add_cosine_schedule_flags(t, d)
    add_run_flags(t, d)
    t.set_defaults(func=train_caption_cmd)


_FLAGS = ("preset", "min_digits", "max_digits", "batch_size", "label_smoothing", "shift", "seed", *COSINE_FLAGS)


def train_caption_cmd(args) -> int:
    from ..devices import pick_device
    from ..training.caption import CaptionSettings, train_caption

    out, resume, dataset, settings, _ = train_settings(
        args, _FLAGS, task=CaptionSettings.task, data_flag="dataset", data_key="dataset",
        missing="give --dataset digits")
    settings = CaptionSettings.from_dict(settings)
    pick_device(settings.device)
    with fresh_output_dir(out):
        run = train_caption(dataset, settings, out, resume=resume, extend=args.extend)
    if not run.result.main_process:
        return 0
    stop = f"; {run.result.stop_note}" if run.result.stop_note else ""
    print(f"trained {run.result.steps} steps in {run.result.seconds:.0f}s{stop}; test exact match "
          f"{100 * run.test_exact_match:.2f}% (token accuracy {100 * run.test_token_accuracy:.2f}%) on strips of "
          f"held-out images; model saved to {out / 'best'}")
    return 0


def caption_cmd(args) -> int:
    from ..devices import pick_device
    from ..model_dir import load_model_dir
    from ..tasks import caption_files

    device = pick_device(args.device)
    captions = caption_files(load_model_dir(args.model_dir, device=device), args.images, args.model_dir, device)
    for path, text in zip(args.images, captions):
        print(json.dumps({"image": str(Path(path)), "caption": text}))
    return 0
