"""Images for the ViT: scikit-learn's bundled digits (offline), or a folder of images per class.

    digits:   1,797 grey images of 8×8 pixels (values 0..16 -> 0..1), ten classes; split by a
              seed, stratified per class: 20% held out for the test, and of the rest 10% for
              validation
    folder:   FOLDER/<class name>/<image files>, read with Pillow; every image must decode and
              have the model's size (or all the same size, which then becomes the model's)

Batches are ``ImageBatch(images (batch, channels, H, W) float, labels (batch,), n_tokens = batch)``;
``ImageStream`` walks seeded epochs of shuffled examples with a resumable position (like
``data.streams.EpochStream``), optionally shifting each training image by up to ``shift`` pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, InputError
from ..files import why_unreadable
from .batching import Batch
from .streams import EpochBatches

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class ImageSet:
    images: Tensor             # (n, channels, H, W) float in [0, 1]
    labels: Tensor             # (n,) class ids
    classes: list[str]         # class names, index = id


@dataclass
class ImageSplits:
    train: ImageSet
    valid: ImageSet
    test: ImageSet


@dataclass
class ImageBatch(Batch):
    images: Tensor
    labels: Tensor
    n_tokens: int              # examples (the loss is per image)


def split(data: ImageSet, seed: int, test: float = 0.2, valid: float = 0.1) -> ImageSplits:
    """Stratified: each class is shuffled (seeded) and cut into test, validation and training parts."""
    g = torch.Generator().manual_seed(seed)
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for c in range(len(data.classes)):
        idx = torch.nonzero(data.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        n_test = round(len(idx) * test)
        n_valid = round((len(idx) - n_test) * valid)
        parts["test"] += idx[:n_test]
        parts["valid"] += idx[n_test:n_test + n_valid]
        parts["train"] += idx[n_test + n_valid:]
    take = {k: torch.tensor(sorted(v), dtype=torch.long) for k, v in parts.items()}
    return ImageSplits(*(ImageSet(data.images[take[k]], data.labels[take[k]], data.classes)
                         for k in ("train", "valid", "test")))


def load_digits() -> ImageSet:
    """scikit-learn's 8×8 digits (bundled with the package: no download)."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ConfigError("the digits dataset comes with scikit-learn: pip install 'glassformer[vision]'") from None
    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    return ImageSet(images, torch.tensor(digits.target, dtype=torch.long), [str(i) for i in range(10)])


def load_image(path: str | Path | bytes | BinaryIO, channels: int, size: int | None = None, *,
               max_width: int | None = None) -> Tensor:
    """One image as (channels, H, W) floats in [0, 1] (grey for 1 channel, RGB for 3): ``path`` is a
    file's path, or the encoded image itself (bytes or a binary file object, e.g. an upload, named
    "the image" in messages).  It must be square, and ``size`` pixels wide if given.  With
    ``max_width`` (a strip of images side by side) it must be ``size`` pixels high and at most
    ``max_width`` wide, and is padded on the right with blank."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ConfigError("reading images needs Pillow: pip install 'glassformer[vision]'") from None
    if isinstance(path, (bytes, bytearray)):
        source, path = io.BytesIO(path), "the image"
    elif hasattr(path, "read"):
        source, path = path, "the image"
    else:
        source = path = Path(path)
        if why := why_unreadable(path):
            raise InputError(f"{path} {why}")
    try:
        with Image.open(source) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())   # (H, W) or (H, W, 3)
            width, height = image.size
    except (UnidentifiedImageError, OSError) as e:
        why = str(e).splitlines()[0] if isinstance(source, Path) else "not an image file Pillow reads: PNG, JPEG, ..."
        raise InputError(f"{path} cannot be decoded as an image ({why})") from None
    if max_width is not None:
        if height != size or width > max_width:
            raise InputError(f"{path} is {width}×{height} pixels (width × height) but the model takes images "
                             f"{size} pixels high and at most {max_width} wide")
    elif width != height:
        raise InputError(f"{path} is {width}×{height}; the ViT takes square images")
    elif size is not None and width != size:
        raise InputError(f"{path} is {width}×{height} but the model takes {size}×{size} images; resize it")
    image = pixels.reshape(height, width, channels).permute(2, 0, 1) / 255.0
    return torch.nn.functional.pad(image, (0, max_width - width)) if max_width is not None else image


def load_image_folder(folder: str | Path, image_size: int | None = None, channels: int = 3) -> ImageSet:
    """FOLDER/<class>/<image>: every image decoded with Pillow, all of one size (``image_size`` if given)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give --dataset digits or a folder with one sub-folder of "
                         "images per class")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"{folder} holds {len(classes)} class folder(s); a classifier needs at least 2 "
                         "(FOLDER/<class name>/<images>)")
    images, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"class folder {folder / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in files:
            images.append(load_image(path, channels, image_size or (images[0].shape[-1] if images else None)))
            labels.append(c)
    return ImageSet(torch.stack(images), torch.tensor(labels), classes)


class ImageStream(EpochBatches):
    """Micro-batches of ``batch_size`` training images, epoch after epoch, each epoch's order from
    (seed, epoch); ``shift``: move each image by up to that many pixels (zero-filled), a cheap
    augmentation; rank/world share the global sequence like ``data.streams``."""

    def __init__(self, data: ImageSet, batch_size: int, seed: int, *, shift: int = 0, rank: int = 0, world: int = 1):
        super().__init__(rank=rank, world=world)
        self.data, self.batch_size, self.seed, self.shift = data, batch_size, seed, shift
        self.generator = torch.Generator().manual_seed(seed + 1)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.data.labels), generator=g).tolist()
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def collate(self, indices: list[int]) -> ImageBatch:
        idx = torch.tensor(indices)
        images = self.data.images[idx]
        if self.shift:
            images = shift_images(images, self.shift, self.generator)
        return ImageBatch(images, self.data.labels[idx], len(idx))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])


def shift_images(images: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Each image moved by a random (dy, dx) in [-shift, shift]², the uncovered border zero."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def batches_of(data: ImageSet, batch_size: int) -> list[ImageBatch]:
    """The whole set in order, for evaluation."""
    return [ImageBatch(data.images[i:i + batch_size], data.labels[i:i + batch_size],
                       len(data.labels[i:i + batch_size])) for i in range(0, len(data.labels), batch_size)]


__all__ = ["ImageSet", "ImageSplits", "ImageBatch", "ImageStream", "split", "load_digits", "load_image", "load_image_folder",
           "shift_images", "batches_of"]
