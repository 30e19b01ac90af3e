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

**Compiled decoding.**  ``compile_decoding()`` wraps ``step`` in ``torch.compile``: on a
CUDA device with ``mode="reduce-overhead"`` (CUDA graphs: a step is one graph launch),
elsewhere with the default mode.  Shapes do not change from step to step (the cache is
preallocated, the position is a device tensor), so one graph serves every step after
the prompt; a new batch shape is one more graph, and torch's automatic dynamic shapes
bound the recompiles.  A step writes into the cache's buffers, and CUDA graphs capture
a graph that writes into its inputs only if those inputs have static addresses, so
before each compiled step the cache's long-lived tensors are marked as such
(``torch._dynamo.mark_static_address``, unguarded: a new cache — the next batch — is a
re-recording of the graph, not a recompile; torch allows
``torch._inductor.config.triton.cudagraph_unexpected_rerecord_limit`` of them per graph,
128, and then runs the compiled step without CUDA graphs).  When the compiler fails (no C++
compiler, an unsupported platform) the first compiled step raises a
:class:`~glassformer.errors.ConfigError` that says so in one line.

**Host syncs.**  ``step`` has none; ``decode_step`` only adds host arithmetic on
``cache.length``.  Whether and when to read device values back is the search's choice
(see ``glassformer.generation``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError
from ..nn import KVCache


def compile_options(device: torch.device) -> dict:
    """``torch.compile`` options for the decoding step on ``device``: CUDA graphs on a CUDA GPU."""
    return {"mode": "reduce-overhead"} if device.type == "cuda" else {}


def _long_lived(cache: KVCache) -> list[Tensor]:
    """The cache's tensors whose addresses stay put while a batch is decoded: its buffers, its
    position and the encoder side (not ``key_padding`` / ``position_offset``: beams re-select those)."""
    tensors = [cache.keys, cache.values, cache.position, cache.memory, cache.memory_mask]
    tensors += [t for kv in cache.cross if kv is not None for t in kv]
    return [t for t in tensors if t is not None]


class DecodingMixin:
    _compiled_step: Callable[[Tensor, KVCache], Tensor] | None = None

    def step(self, tokens: Tensor, cache: KVCache) -> Tensor:   # pragma: no cover - every family defines it
        raise NotImplementedError

    def decode_step(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """tokens: (batch, t), the positions after those in ``cache`` -> float32 logits of the next
        token (batch, vocab); the new positions are then counted as cached."""
        t = tokens.shape[1]
        cache.check_room(t)
        logits = self.step(tokens, cache) if self._compiled_step is None else self._compiled(tokens, cache)
        cache.advance(t)
        return logits

    def _compiled(self, tokens: Tensor, cache: KVCache) -> Tensor:
        from torch._dynamo import mark_static_address
        from torch._dynamo.exc import BackendCompilerFailed

        for tensor in _long_lived(cache):
            mark_static_address(tensor)
        try:
            return self._compiled_step(tokens, cache)
        except BackendCompilerFailed as e:
            inner = e.inner_exception
            reason = (str(inner).strip().splitlines() or [type(inner).__name__])[0]
            raise ConfigError(f"torch.compile could not compile the decoding step ({type(inner).__name__}: "
                              f"{reason}); decode without compiling (leave out --compile / compile=True)") from e

    def reorder_cache(self, cache: KVCache, rows: Tensor, sources: Tensor | None = None) -> None:
        """Keep decoder rows ``rows`` of the cache (in that order) and, for an encoder–decoder whose
        sources are shared by groups of rows, encoder rows ``sources``."""
        cache.reorder(rows)
        if sources is not None:
            cache.select_memory(sources)

    def compile_decoding(self, **options) -> None:
        """Decode through ``torch.compile(self.step, **options)``; without options, those of
        :func:`compile_options` for the model's device (CUDA graphs on a GPU).  Every step after
        the first has the same shapes, so one graph serves them all.  Raises :class:`ConfigError`
        where ``torch.compile`` is not available."""
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            raise ConfigError("torch.compile is not available with this Python, PyTorch and platform; "
                              "decode without compiling (leave out --compile / compile=True)")
        if not options:
            options = compile_options(next(self.parameters()).device)
        self._compiled_step = torch.compile(self.step, **options)

    @property
    def decoding_compiled(self) -> bool:
        """Whether ``decode_step`` runs the compiled step (see :meth:`compile_decoding`)."""
        return self._compiled_step is not None


__all__ = ["DecodingMixin", "compile_options"]
