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
    are applied inside attention (see ``positions.RotaryEmbedding``)."""

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
    ):
        super().__init__()
        scale = math.sqrt(d_model) if scale_embedding else 1.0
        self.token = TokenEmbedding(vocab_size, d_model, scale=scale, padding_idx=padding_idx)
        self.position = make_positional(positional, d_model, max_len)
        self.dropout = nn.Dropout(dropout)
        self.max_len = max_len

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """tokens: (batch, seq); positions: (seq,) or (batch, seq)  ->  (batch, seq, d_model)"""
        x = self.token(tokens)
        if self.position is not None:
            x = x + self.position(positions)
        return self.dropout(x)
