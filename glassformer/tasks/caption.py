"""Caption: images described in words by an image-to-text model (``train caption``), greedily."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..data.captions import load_strip
from ..errors import ConfigError
from ..generation import SamplingOptions, generate
from ..model_dir import ModelDir
from ..models import CaptionModel
from ..tokenizers import Tokenizer


def greedy_ids(model: CaptionModel, images: Tensor, max_new_tokens: int) -> Tensor:
    """Greedy captions as token ids (batch, n ≤ max_new_tokens), ``pad_id`` after a row's EOS; the special
    tokens other than EOS are never chosen."""
    c = model.config
    options = SamplingOptions(max_new_tokens=max_new_tokens, eos_id=c.eos_id, pad_id=c.pad_id,
                              banned_ids=(c.pad_id, c.bos_id, c.unk_id))
    return generate(model, *model.start_decoding(images, max_new_tokens), options)


def caption_images(model: CaptionModel, tokenizer: Tokenizer, images: Tensor, max_new_tokens: int | None = None,
                   batch_size: int = 256) -> list[str]:
    """images (n, channels, H, W) -> their greedy captions; ``max_new_tokens`` defaults to the decoder's length."""
    n_new = max_new_tokens or model.config.max_len
    return [tokenizer.decode(row) for i in range(0, len(images), batch_size)
            for row in greedy_ids(model, images[i:i + batch_size], n_new).tolist()]


def caption_files(loaded: ModelDir, paths: list[str | Path], where, device="cpu") -> list[str]:
    """The caption of each image file (of the model's height, at most its width); a directory that holds
    no caption model with its tokenizer is refused naming ``where``."""
    config = loaded.config
    if config.family != "caption":
        raise ConfigError(f"{where} is a {config.family} model; caption needs a caption model directory "
                          "(glassformer train caption)")
    if loaded.tokenizer is None:
        raise ConfigError(f"{where} has no tokenizer.json; a caption model directory needs one")
    images = torch.stack([load_strip(p, config.channels, config.image_size, config.image_width)
                          for p in paths]).to(device)
    with torch.inference_mode():
        return caption_images(loaded.model, loaded.tokenizer, images)
