"""Capture attention weights while a model runs.

The fused kernel (``torch.nn.functional.scaled_dot_product_attention``) never
materialises the attention probabilities.  :func:`capture_attention` asks each
chosen :class:`~glassformer.nn.attention.MultiHeadAttention` for them: it sets the
module's ``keep_weights``, so that the module takes its own explicit path
(``softmax(Q Kᵀ · scale + bias)`` under its masks, then the values) and keeps the
probabilities, and a forward hook stores them.  The modules that are not chosen
run fused as always.  Nothing here rebuilds queries, keys, positions or masks: the
weights are the ones the module used.

Masked positions get exactly 0; a query row that may attend to nothing is all
zeros (as the model's own output for it).  The result is stored on the CPU in
float32 as (batch, heads, q_len, k_len), one tensor per attention module, named by
its module path (``"decoder.layers.0.self_attention"``,
``"decoder.layers.0.cross_attention"``).

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

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from torch import Tensor, nn

from ..errors import InputError
from ..nn.attention import MultiHeadAttention
from ..nn.recurrent import EncoderAttention

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


ATTENTION_MODULES = (MultiHeadAttention, EncoderAttention)
"""What keeps its weights when asked (``keep_weights`` / ``kept_weights``, ``n_heads``, ``cross_attention``):
the Transformer's multi-head attention and a recurrent decoder's attention over the encoder (one head)."""


def attention_modules(model: nn.Module) -> dict[str, MultiHeadAttention | EncoderAttention]:
    """Every attention module of ``model`` by its path, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, ATTENTION_MODULES)}


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


@contextmanager
def capture_attention(model: nn.Module, layers: Iterable[str | int] | str | int | None = None,
                      heads: Iterable[int] | int | None = None) -> Iterator[AttentionCapture]:
    """Record the attention weights of ``model``'s chosen attention modules while it runs.

    ``layers``: None (every attention module), or module paths (a path selects every attention
    module under it) and/or layer indices (``1`` = ``*.layers.1.*``).  ``heads``: None (all) or
    head indices; only those are stored, so a long input keeps one (batch, len(heads), seq, seq)
    tensor per chosen module (each computes all its heads while it runs).  Yields an
    :class:`AttentionCapture`, filled as the model runs (each call of a module replaces its
    previous weights).  The chosen modules run their explicit path (the same result as the fused
    one, to rounding); on exit they run fused again and the hooks are removed.
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

    def refuse_cache(module: MultiHeadAttention, args, kwargs):
        if kwargs.get("cache") is not None and not module.cross_attention:
            raise InputError("capture_attention does not work through the KV cache (decoding steps); "
                             "capture on a full forward pass without a cache")

    def make_hook(name: str):
        def hook(module: MultiHeadAttention, args, output):
            weights = module.kept_weights.detach()
            module.kept_weights = None
            capture.weights[name] = (weights if head_list is None else weights[:, head_list]).float().cpu()
            capture.kinds[name] = "cross" if module.cross_attention else "self"
        return hook

    handles = []
    for name, m in chosen.items():
        m.keep_weights = True
        handles.append(m.register_forward_pre_hook(refuse_cache, with_kwargs=True))
        handles.append(m.register_forward_hook(make_hook(name)))
    try:
        yield capture
    finally:
        for h in handles:
            h.remove()
        for m in chosen.values():
            m.keep_weights, m.kept_weights = False, None
