"""The decoding interface every model offers to ``glassformer.generation``.

A model implements two things:

* ``start_decoding(...) -> (cache, first_tokens)``: allocate its :class:`~glassformer.nn.KVCache`
  (and, for an encoder–decoder, encode the source once);
* ``step(tokens, cache) -> logits``: one decoding step with static shapes — it writes the
  new positions' keys/values at ``cache.position`` and returns float32 logits of the
  next token (batch, vocab) — and nothing else, so that it can be compiled or captured.

This mixin adds what is the same for every family: ``decode_step`` (a step plus the
host-side bookkeeping), ``reorder_cache`` (beams selected, sentences dropped) and
``compile_decoding`` (``torch.compile`` of the step).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..nn import KVCache


class DecodingMixin:
    _compiled_step: Callable[[Tensor, KVCache], Tensor] | None = None

    def step(self, tokens: Tensor, cache: KVCache) -> Tensor:   # pragma: no cover - every family defines it
        raise NotImplementedError

    def decode_step(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """tokens: (batch, t), the positions after those in ``cache`` -> float32 logits of the next
        token (batch, vocab); the new positions are then counted as cached."""
        t = tokens.shape[1]
        cache.check_room(t)
        logits = (self._compiled_step or self.step)(tokens, cache)
        cache.advance(t)
        return logits

    def reorder_cache(self, cache: KVCache, rows: Tensor, sources: Tensor | None = None) -> None:
        """Keep decoder rows ``rows`` of the cache (in that order) and, for an encoder–decoder whose
        sources are shared by groups of rows, encoder rows ``sources``."""
        cache.reorder(rows)
        if sources is not None:
            cache.select_memory(sources)

    def compile_decoding(self, **options) -> None:
        """Decode through ``torch.compile(self.step, **options)`` (e.g. ``mode="reduce-overhead"``
        for CUDA graphs on a GPU).  Every step after the first has the same shapes, so one
        graph serves them all."""
        self._compiled_step = torch.compile(self.step, **options)


__all__ = ["DecodingMixin"]
