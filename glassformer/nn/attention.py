"""Attention (§3.2): scaled dot-product attention, multi-head attention, the KV cache.

One attention core with two paths that give one result:

* the **explicit** path — ``softmax(Q Kᵀ · scale + bias) V`` written out — which can
  return the attention weights for inspection;
* the **fused** path — ``torch.nn.functional.scaled_dot_product_attention`` —
  for speed (flash / memory-efficient kernels on GPU).

Masks are boolean, ``True`` = may attend (see ``masks.py``).  A query row that
may attend to nothing returns zeros, never NaN, on both paths.  Options the later
families need live here too: an additive float ``bias`` on the scores (T5's
relative position bias), a ``scale`` other than 1/√d_k (T5 uses 1), fewer key/value
heads than query heads (grouped-query attention), and rotary positions applied to
queries and keys.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, InputError
from .masks import AttentionMask, causal_mask, combine, prepare_mask
from .positions import apply_rotary


class AttentionOutput(NamedTuple):
    output: Tensor                 # (batch, q_len, d_model) or (batch, heads, q_len, d_head)
    weights: Tensor | None         # (batch, heads, q_len, k_len) when requested


def masked_softmax(scores: Tensor, mask: AttentionMask | None) -> Tensor:
    """Attention weights from scores (..., q_len, k_len): the softmax over the keys a query may attend
    to (``mask.allowed``), exactly 0 at the others, and a row of zeros where it may attend to none
    (``mask.empty``) — never NaN.  Shared by dot-product and additive attention."""
    if mask is not None:
        scores = scores.masked_fill(~mask.allowed, float("-inf"))
    weights = scores.softmax(dim=-1)
    if mask is not None:
        weights = weights.masked_fill(mask.empty, 0.0)
    return weights


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | AttentionMask | None = None,
    *,
    bias: Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> AttentionOutput:
    """Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(d_k) + bias) V   (§3.2.1, equation 1).

    query: (batch, heads, q_len, d_k); key: (batch, kv_heads, k_len, d_k);
    value: (batch, kv_heads, k_len, d_v), where ``heads`` is a multiple of
    ``kv_heads`` (grouped-query attention: each key/value head serves
    heads / kv_heads query heads).  mask: bool, broadcastable to
    (batch, heads, q_len, k_len), True = may attend (or an :class:`AttentionMask`
    prepared once for several layers).  bias: float, broadcastable to the
    scores, added before the softmax.  scale: multiplies Q Kᵀ (default 1/sqrt(d_k)).
    ``is_causal`` adds the look-ahead mask (queries are the last q_len of the
    k_len positions).  Returns (batch, heads, q_len, d_v) and, if
    ``need_weights``, the weights (batch, heads, q_len, k_len).
    """
    q_len, k_len = query.shape[-2], key.shape[-2]
    if query.shape[1] % key.shape[1]:
        raise ConfigError(f"{query.shape[1]} query heads cannot share {key.shape[1]} key/value heads; "
                          "the number of key/value heads must divide the number of query heads")
    group = query.shape[1] // key.shape[1]
    if is_causal:
        # The fused kernel's own causal flag aligns to the top-left corner, which
        # is wrong when q_len != k_len; build the mask then.  One query (a cached
        # decoding step) is the last position and sees every key.
        if q_len == 1:
            is_causal = False
        elif mask is not None or bias is not None or q_len != k_len or need_weights:
            if isinstance(mask, AttentionMask):
                raise ValueError("a prepared AttentionMask must already include the causal mask "
                                 "(combine the masks before prepare_mask)")
            mask = combine(mask, causal_mask(q_len, k_len, device=query.device))
            is_causal = False
    mask = prepare_mask(mask)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale

    if need_weights:
        if group > 1:
            key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
        scores = (query @ key.transpose(-2, -1)) * scale
        if bias is not None:
            scores = scores + bias
        weights = masked_softmax(scores, mask)
        kept = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        output = kept @ value
    else:
        weights = None
        attn_mask = None if mask is None else mask.allowed
        if bias is not None:
            attn_mask = bias if attn_mask is None else bias.masked_fill(~attn_mask, float("-inf"))
        output = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
            enable_gqa=group > 1,
        )
    if mask is not None:
        output = output.masked_fill(mask.empty, 0.0)
    return AttentionOutput(output, weights)


class KVCache:
    """The decoding state: keys and values of past positions, preallocated, and what else a decoder carries.

    Self-attention keys and values of every layer live in two buffers allocated once,
    ``keys`` / ``values`` of shape (layers, batch, kv_heads, max_len, d_head).  A
    decoding step writes its keys/values at ``position`` — a device tensor, so the
    step has no Python number in it — with ``index_copy_``, and attention reads the
    whole fixed-size buffer under :meth:`step_mask`, which hides the positions not
    written yet.  A step therefore has static shapes and static buffer addresses,
    which is what ``torch.compile(mode="reduce-overhead")`` / CUDA graphs need.
    ``length`` is the same count on the host, for bookkeeping outside the step
    (bounds checks, how much to copy when beams are reordered).

    Encoder–decoders also keep ``memory`` (batch_m, src_len, d_model), its
    ``memory_mask`` (batch_m, 1, 1, src_len) and ``cross[l]``, layer l's
    cross-attention keys/values of the memory, computed once per source.  Their
    batch may be smaller than the decoder's (beams of one sentence share them).
    Left-padded decoder-only batches keep ``key_padding`` (batch, max_len), False at
    pads, and ``position_offset`` (batch,), the pads per row, subtracted from
    position ids.

    Models own how a cache is filled and reordered (``model.start_decoding``,
    ``model.reorder_cache``); the searches in ``glassformer.generation`` only pass it on.
    """

    def __init__(self, n_layers: int, batch: int, kv_heads: int, d_head: int, max_len: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        self.max_len = max_len
        self.keys = torch.zeros(n_layers, batch, kv_heads, max_len, d_head, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.length = 0
        self.cross: list[tuple[Tensor, Tensor] | None] = [None] * n_layers
        self.key_padding: Tensor | None = None
        self.position_offset: Tensor | None = None
        self.memory: Tensor | None = None
        self.memory_mask: Tensor | None = None

    @property
    def batch(self) -> int:
        return self.keys.shape[1]

    def write(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Write (batch, kv_heads, t, d_head) at ``position``; return layer ``layer``'s whole
        buffers (batch, kv_heads, max_len, d_head), to be read under :meth:`step_mask`."""
        index = self.position + torch.arange(key.shape[2], device=key.device)
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(2, index, key.to(keys.dtype))
        values.index_copy_(2, index, value.to(values.dtype))
        return keys, values

    def step_mask(self, t: int) -> Tensor:
        """Which cached positions the next ``t`` queries may attend to: key j is visible to query i
        if it was written (j ≤ position + i: causal) and is not padding.  (batch or 1, 1, t, max_len)."""
        keys = torch.arange(self.max_len, device=self.position.device)
        queries = self.position + torch.arange(t, device=self.position.device)
        mask = (keys[None, :] <= queries[:, None])[None, None]
        if self.key_padding is not None:
            mask = mask & self.key_padding[:, None, None, :]
        return mask

    def check_room(self, t: int) -> None:
        if self.length + t > self.max_len:
            raise InputError(f"the KV cache holds {self.max_len} positions; {self.length + t} were needed")

    def advance(self, t: int) -> None:
        """Count ``t`` more positions as written (after a step has run through every layer)."""
        self.position.add_(t)
        self.length += t

    def reorder(self, rows: Tensor) -> None:
        """Keep decoder rows ``rows`` (in that order): beams selected, sentences dropped, or rows
        fanned out.  Only the written part of the buffers is copied; with an unchanged batch
        size the copy goes into the same buffers (their addresses stay)."""
        n = self.length
        if rows.shape[0] == self.batch:
            self.keys[:, :, :, :n] = self.keys[:, rows, :, :n]
            self.values[:, :, :, :n] = self.values[:, rows, :, :n]
        else:
            for name in ("keys", "values"):
                old = getattr(self, name)
                new = old.new_zeros(old.shape[0], rows.shape[0], *old.shape[2:])
                new[:, :, :, :n] = old[:, rows, :, :n]
                setattr(self, name, new)
        for name in ("key_padding", "position_offset"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.index_select(0, rows))

    def select_memory(self, sources: Tensor) -> None:
        """Keep encoder rows ``sources``: the memory, its mask and every layer's cross keys/values."""
        if self.memory is not None:
            self.memory = self.memory.index_select(0, sources)
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, sources)
        self.cross = [None if kv is None else (kv[0].index_select(0, sources), kv[1].index_select(0, sources))
                      for kv in self.cross]

    def long_lived(self) -> list[Tensor]:
        """The tensors whose addresses stay put while a batch is decoded (a compiled step marks them
        static): the buffers, the position and the encoder side (not ``key_padding`` /
        ``position_offset``: beams re-select those)."""
        tensors = [self.keys, self.values, self.position, self.memory, self.memory_mask]
        tensors += [t for kv in self.cross if kv is not None for t in kv]
        return [t for t in tensors if t is not None]

    def cleared(self) -> "KVCache":
        """A cache of the same shape with the same encoder side and padding but nothing written:
        decoding with it re-runs the whole prefix (the uncached reference)."""
        n_layers, batch, kv_heads, max_len, d_head = self.keys.shape
        fresh = KVCache(n_layers, batch, kv_heads, d_head, max_len, dtype=self.keys.dtype, device=self.keys.device)
        fresh.key_padding, fresh.position_offset = self.key_padding, self.position_offset
        fresh.memory, fresh.memory_mask, fresh.cross = self.memory, self.memory_mask, list(self.cross)
        return fresh


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)  (§3.2.2).

    ``cross_attention=False``: self-attention, one fused projection to Q, K and V
    (laid out [Q; K; V] along its output).  ``cross_attention=True``: queries from
    the decoder, keys and values from the encoder output ("memory"), projected by
    ``q_proj`` and a fused ``kv_proj`` ([K; V]).

    Each of the h query heads has d_k = d_v = d_model / h.  ``n_kv_heads`` (default
    h) key/value heads are shared by groups of h / n_kv_heads query heads
    (grouped-query attention, Ainslie et al. 2023; 1 = multi-query attention).
    ``scale``: the factor on Q Kᵀ (default 1/sqrt(d_k)).

    Looking inside: with ``keep_weights = True`` every call takes the explicit path and keeps its
    attention weights (batch, heads, q_len, k_len) in ``kept_weights``, whatever its caller asked
    for (``glassformer.explain.capture_attention`` sets it on the modules it watches); otherwise the
    fused path runs unless ``need_weights`` or ``use_fused=False`` asks for the explicit one.
    """

    keep_weights: bool = False
    kept_weights: Tensor | None = None

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        n_kv_heads: int | None = None,
        cross_attention: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        scale: float | None = None,
    ):
        super().__init__()
        if d_model % n_heads != 0:
            raise ConfigError(
                f"d_model={d_model} is not divisible by n_heads={n_heads}; "
                f"choose n_heads that divides d_model (e.g. {_divisors_hint(d_model)})"
            )
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_kv_heads < 1 or n_heads % n_kv_heads != 0:
            raise ConfigError(f"n_kv_heads={n_kv_heads} does not divide n_heads={n_heads}; each key/value head "
                              "must serve the same number of query heads (e.g. n_kv_heads = 1 or n_heads)")
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.d_head = d_model // n_heads
        self.cross_attention, self.dropout, self.scale = cross_attention, dropout, scale
        d_kv = n_kv_heads * self.d_head
        if cross_attention:
            self.q_proj = nn.Linear(d_model, d_model, bias=bias)
            self.kv_proj = nn.Linear(d_model, 2 * d_kv, bias=bias)
        else:
            self.qkv_proj = nn.Linear(d_model, d_model + 2 * d_kv, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split_heads(self, x: Tensor) -> Tensor:
        """(batch, seq, heads · d_head) -> (batch, heads, seq, d_head)"""
        b, t, _ = x.shape
        return x.view(b, t, -1, self.d_head).transpose(1, 2)

    def project_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of the encoder output: (batch_m, src_len, d_model) ->
        two (batch_m, kv_heads, src_len, d_head).  Computed once per source when decoding."""
        key, value = self.kv_proj(memory).chunk(2, dim=-1)
        return self._split_heads(key), self._split_heads(value)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | AttentionMask | None = None,
        *,
        is_causal: bool = False,
        bias: Tensor | None = None,
        rotary: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
        use_fused: bool = True,
    ) -> AttentionOutput:
        """x: (batch, q_len, d_model); memory: (batch_m, k_len, d_model) for cross-attention.

        ``rotary``: (cos, sin) of the queries' positions (self-attention), applied to
        queries and keys before the keys are cached.  With a ``cache``, self-attention
        writes this step's keys/values and attends over the whole cache buffer (the
        ``mask`` must then cover it: ``cache.step_mask``); cross-attention uses the
        cache's keys/values of the memory.  If the memory batch is smaller than the
        query batch (``batch = batch_m * group``, as with beams), the queries of one
        group attend to their shared memory without copying it.

        Returns (batch, q_len, d_model) and optionally weights (batch, heads, q_len, k_len).
        """
        b, t, _ = x.shape
        d_q, d_kv = self.d_model, self.n_kv_heads * self.d_head
        group = 1
        if self.cross_attention:
            query = self._split_heads(self.q_proj(x))
            cached = cache.cross[layer] if cache is not None else None
            key, value = cached if cached is not None else self.project_memory(memory)
            if cache is not None and cached is None:
                cache.cross[layer] = (key, value)
            batch_m = key.shape[0]
            if b % batch_m:
                raise InputError(f"a decoder batch of {b} rows cannot share an encoder batch of {batch_m}: "
                                 "it must be a whole multiple of it (beams of each sentence)")
            group = b // batch_m
            if group > 1:  # (batch_m*group, h, t, d) -> (batch_m, h, group*t, d)
                query = query.view(batch_m, group, self.n_heads, t, self.d_head)
                query = query.permute(0, 2, 1, 3, 4).reshape(batch_m, self.n_heads, group * t, self.d_head)
        else:
            query, key, value = (self._split_heads(p) for p in self.qkv_proj(x).split([d_q, d_kv, d_kv], dim=-1))
            if rotary is not None:
                query, key = apply_rotary(query, *rotary), apply_rotary(key, *rotary)
            if cache is not None:
                key, value = cache.write(layer, key, value)

        dropout_p = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(
            query, key, value, mask, bias=bias, scale=self.scale, is_causal=is_causal, dropout_p=dropout_p,
            need_weights=need_weights or not use_fused or self.keep_weights,
        )
        if group > 1:
            batch_m = key.shape[0]
            out = out.view(batch_m, self.n_heads, group, t, self.d_head).permute(0, 2, 1, 3, 4)
            out = out.reshape(b, self.n_heads, t, self.d_head)
            if weights is not None:
                weights = weights.view(batch_m, self.n_heads, group, t, -1).permute(0, 2, 1, 3, 4)
                weights = weights.reshape(b, self.n_heads, t, -1)
        out = out.transpose(1, 2).reshape(b, t, self.d_model)
        if self.keep_weights:
            self.kept_weights = weights
        return AttentionOutput(self.out_proj(out), weights if need_weights else None)


def _divisors_hint(d_model: int) -> str:
    divisors = [h for h in (1, 2, 4, 8, 12, 16, 32) if d_model % h == 0]
    return ", ".join(str(h) for h in divisors) or "1"
