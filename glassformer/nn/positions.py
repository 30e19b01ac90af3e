"""Positional information (§3.5): sinusoidal encoding and learned embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_table(max_len: int, d_model: int, layout: str = "interleaved") -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    ``layout="interleaved"`` is the paper's (sin in even, cos in odd
    dimensions); ``"split"`` puts all sines first then all cosines (the layout
    of tensor2tensor and Marian checkpoints).  Returns (max_len, d_model).
    """
    position = torch.arange(max_len, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = position / torch.pow(10000.0, two_i / d_model)          # (max_len, ceil(d_model/2))
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    if layout == "interleaved":
        table[:, 0::2] = torch.sin(angle)
        table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    elif layout == "split":
        half = (d_model + 1) // 2
        table[:, :half] = torch.sin(angle)
        table[:, half:] = torch.cos(angle[:, : d_model - half])
    else:
        raise ValueError(f"layout must be 'interleaved' or 'split', got {layout!r}")
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table, precomputed as a (non-trained) buffer.

    The buffer is not saved in checkpoints: it is a function of the config.
    """

    def __init__(self, d_model: int, max_len: int, layout: str = "interleaved"):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, d_model, layout), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """positions: (seq,) or (batch, seq) int  ->  (…, seq, d_model)"""
        return F.embedding(positions, self.table)      # a row lookup; cheaper than fancy indexing


class LearnedPositionalEmbedding(nn.Module):
    """One trained vector per position (GPT-2, BERT; §3.5 notes it works as well)."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions: Tensor) -> Tensor:
        """positions: (seq,) or (batch, seq) int  ->  (…, seq, d_model)"""
        return F.embedding(positions, self.weight)


def make_positional(kind: str, d_model: int, max_len: int) -> nn.Module:
    """``sinusoidal`` | ``sinusoidal-split`` | ``learned``"""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(d_model, max_len, "interleaved")
    if kind == "sinusoidal-split":
        return SinusoidalPositionalEncoding(d_model, max_len, "split")
    if kind == "learned":
        return LearnedPositionalEmbedding(d_model, max_len)
    raise ValueError(f"unknown positional kind {kind!r}")

__all__ = ["sinusoidal_table", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding", "make_positional"]
