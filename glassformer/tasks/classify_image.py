"""Classify images with a Vision Transformer (``train vit``, or a Hugging Face ``ViTForImageClassification``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.images import load_image
from ..errors import ConfigError
from ..model_dir import ModelDir
from ..models.vit import top_classes


def classify_images(loaded: ModelDir, paths: list[str | Path], top_k: int = 1, where="the model directory",
                    device="cpu") -> list[list[dict]]:
    """The ``top_k`` classes (label, probability) of each image file (square, of the model's size); a
    directory that holds no ViT is refused naming ``where``."""
    config = loaded.config
    if config.family != "vit":
        raise ConfigError(f"{where} is a {config.family} model; classify-image needs a ViT model directory")
    images = torch.stack([load_image(p, config.channels, config.image_size) for p in paths]).to(device)
    with torch.inference_mode():
        logits = loaded.model(images)
    return top_classes(logits, config.class_names, top_k)
