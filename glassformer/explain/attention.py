"""Capture attention weights while a model runs its normal (fused) path.

The fused kernel (``torch.nn.functional.scaled_dot_product_attention``) never
materialises the attention probabilities.  :func:`capture_attention` puts a
forward hook on each chosen :class:`~glassformer.nn.attention.MultiHeadAttention`
and, after the module has run, recomputes ``softmax(Q Kᵀ · scale + bias)`` from
the same inputs, exactly as the module forms Q and K:

* self-attention: ``qkv_proj`` split into Q, K (V is not needed), heads split,
  rotary positions applied if given;
* cross-attention: ``q_proj`` of the queries, keys from ``project_memory(memory)``
  (or the cache's cross keys, when a cache holds them).

Masks follow the library's convention (boolean, True = may attend, or a prepared
:class:`~glassformer.nn.masks.AttentionMask`); ``is_causal`` adds the look-ahead
mask.  Masked positions get exactly 0; a query row that may attend to nothing is
all zeros (as the model's own output for it).  The softmax is taken in float32
and the result is stored on the CPU as (batch, heads, q_len, k_len), one tensor
per attention module, named by its module path
(``"decoder.layers.0.self_attention"``, ``"decoder.layers.0.cross_attention"``).

Limitation: capture needs a *full* forward pass.  A self-attention call that
goes through a KV cache (a decoding step, or a prefill that writes the cache)
is refused with an :class:`~glassformer.errors.InputError`; run the model on the
whole sequence instead (``model.hidden_states(tokens)``, ``model.decode(tgt,
memory, mask)`` without ``cache``, ``model(src, tgt)``...).

Example::

    with capture_attention(model, layers=["decoder.layers.1"], heads=[0]) as cap:
        model.hidden_states(tokens)
    w = cap.weights["decoder.layers.1.self_attention"]     # (batch, 1, seq, seq)
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..nn.attention import MultiHeadAttention
from ..nn.masks import AttentionMask, causal_mask, prepare_mask
from ..nn.positions import apply_rotary

__all__ = ["AttentionCapture", "attention_modules", "capture_attention"]


@dataclass
class AttentionCapture:
    """What :func:`capture_attention` recorded: the last call of each chosen module.

    ``weights[path]``: (batch, len(heads), q_len, k_len) float32 on the CPU;
    ``kinds[path]``: ``"self"`` or ``"cross"``; ``heads``: the head indices kept
    (None = all, in order).
    """

    heads: list[int] | None = None
    weights: dict[str, Tensor] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def self_attention(self) -> dict[str, Tensor]:
        return {name: w for name, w in self.weights.items() if self.kinds[name] == "self"}

    @property
    def cross_attention(self) -> dict[str, Tensor]:
        return {name: w for name, w in self.weights.items() if self.kinds[name] == "cross"}

    def clear(self) -> None:
        self.weights.clear()
        self.kinds.clear()


def attention_modules(model: nn.Module) -> dict[str, MultiHeadAttention]:
    """Every attention module of ``model`` by its path, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MultiHeadAttention)}


def _chosen(modules: dict[str, MultiHeadAttention], layers) -> dict[str, MultiHeadAttention]:
    """``layers``: None (all); or names and/or layer indices.  A name selects the module of that path
    and every attention module under it (``"decoder.layers.0"`` = its self- and cross-attention);
    an int ``i`` selects the attention modules of every ``layers.i`` (in every stack)."""
    if layers is None:
        return dict(modules)
    if isinstance(layers, (str, int)):
        layers = [layers]
    chosen: dict[str, MultiHeadAttention] = {}
    for want in layers:
        if isinstance(want, bool) or not isinstance(want, (str, int)):
            raise InputError(f"a layer is chosen by its module path or index, not {want!r}")
        if isinstance(want, int):
            hits = [n for n in modules if f"layers.{want}" in _prefixes(n)]
        else:
            hits = [n for n in modules if n == want or n.startswith(want + ".")]
        if not hits and isinstance(want, int):
            indices = sorted({int(part[len("layers."):]) for n in modules for part in _prefixes(n)
                              if part.startswith("layers.") and part[len("layers."):].isdigit()})
            valid = f"{indices[0]}..{indices[-1]}" if indices else "none"
            raise InputError(f"layer {want} does not exist; this model's layer indices are {valid}")
        if not hits:
            raise InputError(f"no attention module matches layer {want!r}; the model has: "
                             + ", ".join(modules))
        for n in hits:
            chosen[n] = modules[n]
    return {n: modules[n] for n in modules if n in chosen}      # model order


def _prefixes(name: str) -> set[str]:
    """``a.layers.3.self_attention`` -> {'layers.3', ...}: each adjacent pair of path parts."""
    parts = name.split(".")
    return {f"{a}.{b}" for a, b in zip(parts, parts[1:])}


def _check_heads(heads, n_heads: int, name: str) -> None:
    for h in heads:
        if not 0 <= h < n_heads:
            raise InputError(f"head {h} does not exist in {name}, which has {n_heads} heads (0..{n_heads - 1})")


def _plain_mask(mask: Tensor | AttentionMask | None) -> Tensor | None:
    """Back to a boolean mask (True = may attend) from a prepared one."""
    if isinstance(mask, AttentionMask):
        return mask.allowed & ~mask.empty
    return mask


@torch.no_grad()
def recompute_weights(module: MultiHeadAttention, x: Tensor, memory: Tensor | None = None,
                      mask: Tensor | AttentionMask | None = None, *, is_causal: bool = False,
                      bias: Tensor | None = None, rotary: tuple[Tensor, Tensor] | None = None,
                      cache=None, layer: int = 0, heads: Sequence[int] | None = None) -> Tensor:
    """The attention probabilities (batch, heads, q_len, k_len), float32, of ``module`` called with
    these arguments (the arguments of ``MultiHeadAttention.forward``).  Not for KV-cache steps."""
    b, t, _ = x.shape
    d_q, d_kv = module.d_model, module.n_kv_heads * module.d_head
    if module.cross_attention:
        query = module._split_heads(module.q_proj(x))
        cached = cache.cross[layer] if cache is not None else None
        key = cached[0] if cached is not None else module.project_memory(memory)[0]
        if key.shape[0] != b:
            if b % key.shape[0]:
                raise InputError(f"a decoder batch of {b} rows cannot share an encoder batch of {key.shape[0]}")
            key = key.repeat_interleave(b // key.shape[0], dim=0)
    else:
        if cache is not None:
            raise InputError("capture_attention does not work through the KV cache (decoding steps); "
                             "capture on a full forward pass without a cache")
        query, key, _ = (module._split_heads(p) for p in module.qkv_proj(x).split([d_q, d_kv, d_kv], dim=-1))
        if rotary is not None:
            query, key = apply_rotary(query, *rotary), apply_rotary(key, *rotary)

    group = module.n_heads // module.n_kv_heads
    head_ids = list(range(module.n_heads)) if heads is None else list(heads)
    query = query[:, head_ids]
    key = key[:, [h // group for h in head_ids]]
    q_len, k_len = query.shape[-2], key.shape[-2]
    scale = module.scale if module.scale is not None else 1.0 / math.sqrt(module.d_head)

    scores = (query.float() @ key.float().transpose(-2, -1)) * scale
    if bias is not None:
        bias = bias.float()
        if bias.dim() == 4 and bias.shape[1] == module.n_heads and len(head_ids) != module.n_heads:
            bias = bias[:, head_ids]
        scores = scores + bias
    plain = _plain_mask(mask)
    if is_causal and q_len > 1:          # one query (a cached step) is the last position: it sees every key
        causal = causal_mask(q_len, k_len, device=scores.device)
        plain = causal if plain is None else plain & causal
    prepared = prepare_mask(plain)
    if prepared is not None:
        scores = scores.masked_fill(~prepared.allowed, float("-inf"))
    weights = scores.softmax(dim=-1)
    if prepared is not None:
        weights = weights.masked_fill(~prepared.allowed, 0.0).masked_fill(prepared.empty, 0.0)
    return weights


@contextmanager
def capture_attention(model: nn.Module, layers: Iterable[str | int] | str | int | None = None,
                      heads: Iterable[int] | int | None = None) -> Iterator[AttentionCapture]:
    """Record the attention weights of ``model``'s chosen attention modules while it runs.

    ``layers``: None (every attention module), or module paths (a path selects every attention
    module under it) and/or layer indices (``1`` = ``*.layers.1.*``).  ``heads``: None (all) or
    head indices; only those are computed and stored, so a long input costs one
    (batch, len(heads), seq, seq) tensor per chosen module.  Yields an
    :class:`AttentionCapture`, filled as the model runs (each call of a module replaces its
    previous weights).  The model's own computation is untouched; the hooks are removed on exit.
    Needs full forward passes: KV-cache decoding steps raise :class:`InputError`.
    """
    modules = attention_modules(model)
    if not modules:
        raise InputError(f"{type(model).__name__} has no MultiHeadAttention modules to capture")
    chosen = _chosen(modules, layers)
    head_list = None if heads is None else ([heads] if isinstance(heads, int) else list(heads))
    if head_list is not None:
        for name, m in chosen.items():
            _check_heads(head_list, m.n_heads, name)
    capture = AttentionCapture(heads=head_list)
    signature = inspect.signature(MultiHeadAttention.forward)

    def make_hook(name: str):
        def hook(module: MultiHeadAttention, args, kwargs, output):
            bound = signature.bind(module, *args, **kwargs)
            bound.apply_defaults()
            a = bound.arguments
            weights = recompute_weights(module, a["x"], a["memory"], a["mask"], is_causal=a["is_causal"],
                                        bias=a["bias"], rotary=a["rotary"], cache=a["cache"], layer=a["layer"],
                                        heads=head_list)
            capture.weights[name] = weights.cpu()
            capture.kinds[name] = "cross" if module.cross_attention else "self"
        return hook

    handles = [m.register_forward_hook(make_hook(name), with_kwargs=True) for name, m in chosen.items()]
    try:
        yield capture
    finally:
        for h in handles:
            h.remove()
