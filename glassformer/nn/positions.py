"""Positional information (§3.5), applied in one of two places.

At the input, added to the token embeddings: the paper's fixed sinusoidal
encoding or a learned vector per position (GPT-2, BERT).  Inside attention:
rotary position embeddings (RoFormer, Su et al. 2021; GPT-NeoX, Llama), which
rotate each query and key by an angle proportional to its position, so that
their dot product depends only on the distance between them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError


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
        self.d_model, self.max_len, self.layout = d_model, max_len, layout
        self.reset_buffers()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the table, e.g. for a model built on the meta device and loaded from weights."""
        self.register_buffer("table", sinusoidal_table(self.max_len, self.d_model, self.layout).to(device),
                             persistent=False)

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


class RotaryEmbedding(nn.Module):
    """Rotary position embedding: the angles of every position, as (cos, sin) tables.

    Dimension pairs are (i, i + d/2) — the "half-split" layout of GPT-NeoX and
    Hugging Face's Llama — and pair i turns at frequency θ^(-2i/d) per position:
    a query or key x at position p becomes  x·cos(pθ_i) + rotate_half(x)·sin(pθ_i).
    The tables are buffers computed from the config (not saved in checkpoints).
    """

    def __init__(self, d_head: int, max_len: int, theta: float = 10000.0, scaling: dict | None = None):
        super().__init__()
        if d_head % 2:
            raise ConfigError(f"rotary positions need an even head dimension, got d_head={d_head}")
        self.d_head, self.max_len, self.theta, self.scaling = d_head, max_len, theta, scaling
        self.reset_buffers()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the tables, e.g. for a model built on the meta device and loaded from weights."""
        d = self.d_head
        inv_freq = 1.0 / self.theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)        # (d_head/2,)
        if self.scaling:
            inv_freq = llama3_frequencies(inv_freq, **self.scaling)
        angles = torch.arange(self.max_len, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (max_len, d_head/2)
        angles = torch.cat([angles, angles], dim=-1)                                           # (max_len, d_head)
        self.register_buffer("cos", angles.cos().float().to(device), persistent=False)
        self.register_buffer("sin", angles.sin().float().to(device), persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions: (seq,) or (batch, seq) -> (cos, sin), each (1 or batch, 1, seq, d_head):
        they broadcast over the heads of a (batch, heads, seq, d_head) query or key."""
        cos, sin = F.embedding(positions, self.cos), F.embedding(positions, self.sin)
        if positions.dim() == 1:
            return cos[None, None], sin[None, None]
        return cos[:, None], sin[:, None]


LLAMA3_SCALING_FIELDS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_len")


def llama3_frequencies(inv_freq: Tensor, factor: float, low_freq_factor: float, high_freq_factor: float,
                       original_max_len: int) -> Tensor:
    """Llama 3.1's frequency scaling for a longer context than pretraining's ``original_max_len``:
    pairs whose wavelength 2π/ω is shorter than original_max_len / high_freq_factor keep their
    frequency; those longer than original_max_len / low_freq_factor turn ``factor`` times slower;
    in between, the two are blended linearly in original_max_len / wavelength."""
    wavelength = 2 * math.pi / inv_freq
    slow = inv_freq / factor
    blend = (original_max_len / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    mixed = (1 - blend) * slow + blend * inv_freq
    out = torch.where(wavelength > original_max_len / low_freq_factor, slow, mixed)
    return torch.where(wavelength < original_max_len / high_freq_factor, inv_freq, out)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension: a quarter turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate a query or key (batch, heads, seq, d_head) to its positions' angles."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


INPUT_POSITIONS = ("sinusoidal", "sinusoidal-split", "learned")
POSITIONS = INPUT_POSITIONS + ("rotary", "relative", "none")


def make_positional(kind: str, d_model: int, max_len: int) -> nn.Module | None:
    """The input-side encoding: ``sinusoidal`` | ``sinusoidal-split`` | ``learned``; None for
    ``rotary`` (applied inside attention instead) and ``none``."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(d_model, max_len, "interleaved")
    if kind == "sinusoidal-split":
        return SinusoidalPositionalEncoding(d_model, max_len, "split")
    if kind == "learned":
        return LearnedPositionalEmbedding(d_model, max_len)
    if kind in ("rotary", "relative", "none"):
        return None
    raise ConfigError(f"positional={kind!r} is unknown; choose one of {list(POSITIONS)}")


__all__ = ["sinusoidal_table", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding", "RotaryEmbedding",
           "rotate_half", "apply_rotary", "make_positional", "POSITIONS", "INPUT_POSITIONS"]


class RelativePositionBias(nn.Module):
    """T5's relative position bias (Raffel et al. 2020, §2.1): a learned scalar per head, added to
    the attention logit of query i and key j, chosen by the bucket of the offset j - i.

    Small offsets get a bucket each; larger ones share buckets whose width grows
    logarithmically up to ``max_distance``, beyond which all offsets share the last bucket.
    Bidirectional (the encoder): half the buckets for keys before the query, half for keys after.
    Causal (the decoder): only keys at or before the query are told apart.  One module serves
    every layer of a stack (T5 keeps it in the first layer and shares it)."""

    def __init__(self, n_heads: int, buckets: int = 32, max_distance: int = 128, *, bidirectional: bool):
        super().__init__()
        self.buckets, self.max_distance, self.bidirectional = buckets, max_distance, bidirectional
        self.embedding = nn.Embedding(buckets, n_heads)

    def bucket(self, offset: Tensor) -> Tensor:
        """offset = key position - query position (any shape, integer) -> bucket ids."""
        buckets, base = self.buckets, torch.zeros_like(offset)
        if self.bidirectional:
            buckets //= 2
            base = (offset > 0).long() * buckets
            distance = offset.abs()
        else:
            distance = (-offset).clamp_min(0)
        exact = buckets // 2
        # distances from `exact` to `max_distance` share the other buckets on a logarithmic scale
        log_ratio = torch.log(distance.float().clamp_min(1) / exact) / math.log(self.max_distance / exact)
        far = (exact + (log_ratio * (buckets - exact)).long()).clamp_max(buckets - 1)
        return base + torch.where(distance < exact, distance, far)

    def forward(self, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        """(q,) and (k,) positions -> the bias (1, heads, q, k) to add to the attention logits."""
        offset = key_positions[None, :] - query_positions[:, None]
        return self.embedding(self.bucket(offset)).permute(2, 0, 1)[None]
