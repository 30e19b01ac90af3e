"""Commands of the image task: ``train vit`` and ``classify-image``."""

from __future__ import annotations

import json
from pathlib import Path

from .common import (COSINE_FLAGS, DEVICE_HELP, add_cosine_schedule_flags, add_preset_flags, add_run_flags,
                     non_negative_int, positive_int, run_training, setting_defaults, trained)


def register(subparsers) -> None:
    c = subparsers.add_parser("classify-image", help="the class of each image with a ViT model directory")
    c.add_argument("model_dir")
    c.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...), square, of the model's size")
    c.add_argument("--top-k", type=positive_int, default=1, metavar="K", help="classes shown per image (default: 1)")
    c.add_argument("--device", default="auto", help=DEVICE_HELP)
    c.set_defaults(func=classify_image_cmd)


def register_train(train_subparsers) -> None:
    from ..training.vit import ViTSettings

    d = setting_defaults(ViTSettings)
    t = train_subparsers.add_parser("vit", help="train a Vision Transformer image classifier")
    t.add_argument("--dataset", help="'digits' (scikit-learn's 8×8 digits, offline) or a folder with one "
                                     "sub-folder of images per class; with --resume, the run's own by default")
    add_preset_flags(t, "vit", d["preset"])
    t.add_argument("--batch-size", type=positive_int, help=f"images per batch (default: {d['batch_size']})")
    t.add_argument("--shift", type=non_negative_int, help=f"augmentation: shift images by up to N pixels "
                                                          f"(default: {d['shift']})")
    t.add_argument("--out", default="runs/vit", help="run directory (model in OUT/best, test accuracy in "
                                                     "OUT/results.json)")
    t.add_argument("--seed", type=int, help=f"random seed, also of the split (default: {d['seed']})")
    add_cosine_schedule_flags(t, d)
    add_run_flags(t, d)
    t.set_defaults(func=train_vit_cmd)


_FLAGS = ("preset", "batch_size", "shift", "seed", *COSINE_FLAGS)


def train_vit_cmd(args) -> int:
    from ..training.vit import ViTSettings, train_vit

    out, run = run_training(
        args, _FLAGS, ViTSettings, train_vit, data_flag="dataset", data_key="dataset",
        missing="give --dataset digits, or --dataset FOLDER with one sub-folder of images per class")
    if run.result.main_process:                      # not another process of a distributed run: rank 0 reports
        print(f"{trained(run.result)}; test accuracy {100 * run.test_accuracy:.2f}% on the held-out images; model "
              f"saved to {out / 'best'}")
    return 0


def classify_image_cmd(args) -> int:
    from ..devices import pick_device
    from ..model_dir import load_model_dir
    from ..tasks import classify_images

    device = pick_device(args.device)
    loaded = load_model_dir(args.model_dir, device=device)
    for path, classes in zip(args.images, classify_images(loaded, args.images, args.top_k, args.model_dir, device)):
        print(json.dumps({"image": str(Path(path)), "classes": [
            {"label": c["label"], "probability": round(c["probability"], 4)} for c in classes]}))
    return 0
