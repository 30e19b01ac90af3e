"""Attention masks — one convention everywhere: boolean, ``True`` = may attend.

Masks broadcast against attention scores of shape ``(batch, heads, q_len, k_len)``;
the helpers here return ``(batch, 1, 1, k_len)`` for padding and
``(1, 1, q_len, k_len)`` for the causal (look-ahead) mask of §3.2.3.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def padding_mask(tokens: Tensor, pad_id: int) -> Tensor:
    """Keys that are real tokens.

    tokens: (batch, k_len) token ids  ->  (batch, 1, 1, k_len) bool
    """
    return (tokens != pad_id)[:, None, None, :]


def causal_mask(q_len: int, k_len: int | None = None, device=None) -> Tensor:
    """Query ``i`` may attend to key ``j`` only if ``j <= i + (k_len - q_len)``.

    With a KV cache the queries are the last ``q_len`` of ``k_len`` positions,
    hence the offset.  Returns (1, 1, q_len, k_len) bool.
    """
    k_len = q_len if k_len is None else k_len
    offset = k_len - q_len
    q = torch.arange(q_len, device=device)[:, None]
    k = torch.arange(k_len, device=device)[None, :]
    return (k <= q + offset)[None, None]


def combine(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of the masks that are given (broadcasting); None if none are."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


class AttentionMask(NamedTuple):
    """A boolean mask made ready for attention, once per forward pass or decoding step.

    ``allowed``: broadcastable to (batch, heads, q_len, k_len), True = may attend, where a
    query row that may attend to nothing has been opened up (softmax over only -inf would
    be NaN); ``empty``: (…, q_len, 1), True for those rows, whose output attention sets to
    zero.  Every layer that uses the same mask shares this work.
    """

    allowed: Tensor
    empty: Tensor


def prepare_mask(mask: Tensor | AttentionMask | None) -> AttentionMask | None:
    """Turn a boolean mask into an :class:`AttentionMask` (no host sync: the rows are always checked)."""
    if mask is None or isinstance(mask, AttentionMask):
        return mask
    empty = ~mask.any(dim=-1, keepdim=True)
    return AttentionMask(mask | empty, empty)
