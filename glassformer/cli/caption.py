"""Commands of the image-to-text task: ``train caption`` and ``caption``."""

from __future__ import annotations

import json
from pathlib import Path

from .common import (COSINE_FLAGS, DEVICE_HELP, add_cosine_schedule_flags, add_preset_flags, add_run_flags, fraction,
                     non_negative_int, positive_int, run_training, setting_defaults, trained)


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
    add_preset_flags(t, "caption", d["preset"])
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
    from ..training.caption import CaptionSettings, train_caption

    out, run = run_training(args, _FLAGS, CaptionSettings, train_caption, data_flag="dataset", data_key="dataset",
                            missing="give --dataset digits")
    if run.result.main_process:                      # not another process of a distributed run: rank 0 reports
        print(f"{trained(run.result)}; test exact match {100 * run.test_exact_match:.2f}% (token accuracy "
              f"{100 * run.test_token_accuracy:.2f}%) on strips of held-out images; model saved to {out / 'best'}")
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
