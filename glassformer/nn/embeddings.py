"""Embeddings (§3.4): token embedding scaled by sqrt(d_model), plus positions and dropout."""

from __future__ import annotations

import math

from torch import Tensor, nn

from .positions import make_positional


class TokenEmbedding(nn.Embedding):
    """Learned token vectors, multiplied by ``scale`` (sqrt(d_model) in the paper, 1 in GPT-2)."""

    def __init__(self, vocab_size: int, d_model: int, *, scale: float = 1.0, padding_idx: int | None = None):
        super().__init__(vocab_size, d_model, padding_idx=padding_idx)
        self.scale = scale

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: (batch, seq) -> (batch, seq, d_model)"""
        x = super().forward(tokens)
        return x * self.scale if self.scale != 1.0 else x


class InputEmbedding(nn.Module):
    """x = dropout(TokenEmbedding(tokens) + PositionalEncoding(positions))   (§3.4, §3.5, §5.4).

    With ``positional="rotary"`` or ``"none"`` nothing is added here: rotary positions
    are applied inside attention (see ``positions.RotaryEmbedding``).

    BERT's options: ``segments`` > 0 adds a learned segment (token-type) embedding — which
    sentence of a pair a token belongs to — to the sum, and ``norm_eps`` normalises the sum
    with a LayerNorm before the dropout."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        max_len: int,
        *,
        positional: str = "sinusoidal",
        scale_embedding: bool = True,
        dropout: float = 0.0,
        padding_idx: int | None = None,
        segments: int = 0,
        norm_eps: float | None = None,
    ):
        super().__init__()
        scale = math.sqrt(d_model) if scale_embedding else 1.0
        self.token = TokenEmbedding(vocab_size, d_model, scale=scale, padding_idx=padding_idx)
        self.position = make_positional(positional, d_model, max_len)
        self.segment = nn.Embedding(segments, d_model) if segments else None
        self.norm = nn.LayerNorm(d_model, eps=norm_eps) if norm_eps is not None else None
        self.dropout = nn.Dropout(dropout)
        self.max_len = max_len

    def forward(self, tokens: Tensor, positions: Tensor, segments: Tensor | None = None) -> Tensor:
        """tokens: (batch, seq); positions: (seq,) or (batch, seq); segments: (batch, seq) segment ids
        (0 when not given)  ->  (batch, seq, d_model)"""
        x = self.token(tokens)
        if self.position is not None:
            x = x + self.position(positions)
        if self.segment is not None:
            x = x + (self.segment(segments) if segments is not None else self.segment.weight[0])
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


class PatchEmbedding(nn.Module):
    """An image as a sequence (ViT, Dosovitskiy et al. 2021, §3.1): cut into square patches of
    ``patch_size`` pixels, each flattened and linearly projected to ``d_model``.  The projection
    of non-overlapping patches is computed as a convolution with stride = kernel = patch size,
    which is the same linear map applied to every patch.

    Images are ``image_size`` pixels high and ``width`` wide (default: square), a grid of
    (image_size / P) × (width / P) patches."""

    def __init__(self, image_size: int, patch_size: int, channels: int, d_model: int, *, width: int | None = None):
        super().__init__()
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.width = image_size if width is None else width
        self.grid, self.grid_width = image_size // patch_size, self.width // patch_size    # patch rows, columns
        self.projection = nn.Conv2d(channels, d_model, kernel_size=patch_size, stride=patch_size)

    @property
    def n_patches(self) -> int:
        return self.grid * self.grid_width

    def forward(self, images: Tensor) -> Tensor:
        """images: (batch, channels, image_size, width) -> (batch, n_patches, d_model), patches in
        reading order (row by row)."""
        from ..errors import InputError

        if images.dim() != 4 or tuple(images.shape[1:]) != (self.channels, self.image_size, self.width):
            raise InputError(f"images of shape {list(images.shape[1:])} do not fit the model, which takes "
                             f"{self.channels} channel(s) of {self.image_size}×{self.width} pixels "
                             f"({self.grid}×{self.grid_width} patches of {self.patch_size})")
        return self.projection(images).flatten(2).transpose(1, 2)
