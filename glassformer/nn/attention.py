"""Attention (§3.2): scaled dot-product attention, multi-head attention, the KV cache.

One attention core with two paths that give one result:

* the **explicit** path — ``softmax(Q Kᵀ / sqrt(d_k)) V`` written out — which can
  return the attention weights for inspection;
* the **fused** path — ``torch.nn.functional.scaled_dot_product_attention`` —
  for speed (flash / memory-efficient kernels on GPU).

Masks are boolean, ``True`` = may attend (see ``masks.py``).  A query row that
may attend to nothing returns zeros, never NaN, on both paths.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .masks import causal_mask, combine


class AttentionOutput(NamedTuple):
    output: Tensor                 # (batch, q_len, d_model) or (batch, heads, q_len, d_head)
    weights: Tensor | None         # (batch, heads, q_len, k_len) when requested


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> AttentionOutput:
    """Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(d_k)) V   (§3.2.1, equation 1).

    query: (batch, heads, q_len, d_k); key: (batch, heads, k_len, d_k);
    value: (batch, heads, k_len, d_v); mask: bool, broadcastable to
    (batch, heads, q_len, k_len), True = may attend.  ``is_causal`` adds the
    look-ahead mask (queries are the last q_len of the k_len positions).
    Returns (batch, heads, q_len, d_v) and, if ``need_weights``, the weights.
    """
    q_len, k_len = query.shape[-2], key.shape[-2]
    if is_causal:
        # The fused kernel's own causal flag aligns to the top-left corner, which
        # is wrong with a KV cache; build the mask when q_len != k_len.  One query
        # (a cached decoding step) is the last position and sees every key.
        if q_len == 1:
            is_causal = False
        elif mask is not None or q_len != k_len or need_weights:
            mask = combine(mask, causal_mask(q_len, k_len, device=query.device))
            is_causal = False

    # A row with nothing to attend to would be softmax over all -inf = NaN.  Let
    # such rows attend everywhere (finite values, finite gradients), then zero them.
    # (No host sync: this is done whether or not such rows exist.)
    empty_rows = None
    if mask is not None:
        empty_rows = ~mask.any(dim=-1, keepdim=True)
        mask = mask | empty_rows

    if need_weights:
        scores = (query @ key.transpose(-2, -1)) / math.sqrt(query.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        if empty_rows is not None:
            weights = weights.masked_fill(empty_rows, 0.0)
        kept = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        output = kept @ value
    else:
        weights = None
        output = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
        )
    if empty_rows is not None:
        output = output.masked_fill(empty_rows, 0.0)
    return AttentionOutput(output, weights)


class KVCache:
    """Keys and values of past positions, preallocated to ``max_len`` per layer.

    Self-attention keys/values of layer ``l`` live in ``keys[l]``/``values[l]``,
    each (batch, heads, max_len, d_head); a decoding step writes at
    ``length`` and the model calls :meth:`advance` once the step has run
    through every layer.  Cross-attention keys/values of the encoder output are
    computed once per source and kept in ``cross[l]`` — they never change while
    decoding, and their batch may be smaller than the decoder's (beams of one
    sentence share them; see :class:`MultiHeadAttention`).

    The cache is the whole state a decoder carries between steps, so it also
    holds, where they apply: ``key_padding`` (batch, max_len), True where a
    cached position is a real token (False for the left padding of batched
    prompts; ``None`` = all real); ``position_offset`` (batch,), the number of
    left pads per row, subtracted from position ids; ``memory``
    (batch_m, src_len, d_model) and ``memory_mask`` (batch_m, 1, 1, src_len),
    the encoder output an encoder–decoder attends to.
    """

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.length = 0
        self.keys: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}
        self.cross: dict[int, tuple[Tensor, Tensor]] = {}
        self.key_padding: Tensor | None = None
        self.position_offset: Tensor | None = None
        self.memory: Tensor | None = None
        self.memory_mask: Tensor | None = None

    def update(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Write (batch, heads, t, d_head) at the current position; return all so far."""
        t = key.shape[2]
        end = self.length + t
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were needed")
        if layer not in self.keys:
            b, h, _, d = key.shape
            self.keys[layer] = key.new_zeros(b, h, self.max_len, d)
            self.values[layer] = value.new_zeros(b, h, self.max_len, value.shape[-1])
        self.keys[layer][:, :, self.length:end] = key
        self.values[layer][:, :, self.length:end] = value
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def cleared(self) -> "KVCache":
        """A cache with the same encoder memory and padding but nothing cached:
        decoding with it re-runs the whole prefix (the uncached reference)."""
        fresh = KVCache(self.max_len)
        fresh.key_padding, fresh.position_offset = self.key_padding, self.position_offset
        fresh.memory, fresh.memory_mask = self.memory, self.memory_mask
        return fresh

    def advance(self, t: int) -> None:
        self.length += t

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` of the decoder batch (beam search selecting beams)."""
        for store in (self.keys, self.values):
            for layer, tensor in store.items():
                store[layer] = tensor.index_select(0, index)
        for name in ("key_padding", "position_offset"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.index_select(0, index))


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)  (§3.2.2).

    ``cross_attention=False``: self-attention, one fused projection to Q, K and V.
    ``cross_attention=True``: queries from the decoder, keys and values from the
    encoder output ("memory"), projected by ``q_proj`` and a fused ``kv_proj``.

    Each of the h heads has d_k = d_v = d_model / h.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        cross_attention: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        if d_model % n_heads != 0:
            raise ConfigError(
                f"d_model={d_model} is not divisible by n_heads={n_heads}; "
                f"choose n_heads that divides d_model (e.g. {_divisors_hint(d_model)})"
            )
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.cross_attention = cross_attention
        self.dropout = dropout
        if cross_attention:
            self.q_proj = nn.Linear(d_model, d_model, bias=bias)
            self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=bias)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split_heads(self, x: Tensor) -> Tensor:
        """(batch, seq, d_model) -> (batch, heads, seq, d_head)"""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
        use_fused: bool = True,
    ) -> AttentionOutput:
        """x: (batch, q_len, d_model); memory: (batch_m, k_len, d_model) for cross-attention.

        With a ``cache``, self-attention appends this step's keys/values and
        attends over everything cached; cross-attention projects ``memory``
        once and reuses it.  If the memory batch is smaller than the query
        batch (``batch = batch_m * group``, as with beams), the queries of one
        group attend to their shared memory without copying it.

        Returns (batch, q_len, d_model) and optionally weights (batch, heads, q_len, k_len).
        """
        b, t, _ = x.shape
        if self.cross_attention:
            query = self._split_heads(self.q_proj(x))
            if cache is not None and layer in cache.cross:
                key, value = cache.cross[layer]
            else:
                key, value = (self._split_heads(p) for p in self.kv_proj(memory).chunk(2, dim=-1))
                if cache is not None:
                    cache.cross[layer] = (key, value)
            group = b // key.shape[0]
            if group > 1:  # (batch_m*group, h, t, d) -> (batch_m, h, group*t, d)
                query = query.view(key.shape[0], group, self.n_heads, t, self.d_head)
                query = query.permute(0, 2, 1, 3, 4).reshape(key.shape[0], self.n_heads, group * t, self.d_head)
        else:
            query, key, value = (self._split_heads(p) for p in self.qkv_proj(x).chunk(3, dim=-1))
            if cache is not None:
                key, value = cache.update(layer, key, value)

        dropout_p = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(
            query, key, value, mask, is_causal=is_causal, dropout_p=dropout_p,
            need_weights=need_weights or not use_fused,
        )
        if self.cross_attention and group > 1:
            out = out.view(key.shape[0], self.n_heads, group, t, self.d_head).permute(0, 2, 1, 3, 4)
            out = out.reshape(b, self.n_heads, t, self.d_head)
            if weights is not None:
                weights = weights.view(key.shape[0], self.n_heads, group, t, -1).permute(0, 2, 1, 3, 4)
                weights = weights.reshape(b, self.n_heads, t, -1)
        out = out.transpose(1, 2).reshape(b, t, self.d_model)
        return AttentionOutput(self.out_proj(out), weights if need_weights else None)


def _divisors_hint(d_model: int) -> str:
    divisors = [h for h in (1, 2, 4, 8, 12, 16, 32) if d_model % h == 0]
    return ", ".join(str(h) for h in divisors) or "1"
