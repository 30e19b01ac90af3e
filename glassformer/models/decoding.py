"""The decoder every family shares, and the decoding interface it offers to ``glassformer.generation``.

The encoder–decoder, the captioner and the GPT decode the same way: embed the decoder's tokens at
their positions, run the decoder stack (cross-attending to a memory where there is one), project
to the vocabulary.  :class:`DecodingMixin` holds that once — :meth:`~DecodingMixin.decoder_states`
(positions, masks and the KV cache), :meth:`~DecodingMixin.logits` (the output projection) and
``step`` — and a family states only what differs:

* ``decoder`` (an ``nn.TransformerStack``) and ``decoder_embedding`` (the ``nn.InputEmbedding`` of
  its tokens); ``rotary`` / ``decoder_bias`` (rotary positions, T5's relative bias, or None) and
  ``decoder_output_scale`` (T5's d_model^-0.5 before the projection, or None);
* ``output_weight`` (vocab, d_model) and ``output_bias`` (vocab,) or None: the projection;
* ``start_decoding(...) -> (cache, first_tokens)``: a fresh :class:`~glassformer.nn.KVCache` from
  :meth:`~DecodingMixin.new_cache` (an encoder–decoder encodes the source once, and
  :meth:`~DecodingMixin.start_from_memory` projects it for every layer).

``step(tokens, cache) -> logits`` is one decoding step with static shapes — it writes the new
positions' keys/values at ``cache.position`` and returns float32 logits of the next token
(batch, vocab) — and nothing else, so that it can be compiled or captured.  Around it, what the
searches use: ``decode_step`` (a step plus the host-side bookkeeping), ``reorder_cache`` (beams
selected, sentences dropped) and ``compile_decoding`` (``torch.compile`` of the step).

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
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..nn import KVCache, StackOutput
from ..nn.masks import prepare_mask


def compile_options(device: torch.device) -> dict:
    """``torch.compile`` options for the decoding step on ``device``: CUDA graphs on a CUDA GPU."""
    return {"mode": "reduce-overhead"} if device.type == "cuda" else {}


class DecodingMixin:
    _compiled_step: Callable[[Tensor, KVCache], Tensor] | None = None
    decoder_output_scale: float | None = None
    output_bias: Tensor | None = None

    # -- the decoder -------------------------------------------------------------------
    def decoder_states(self, tokens: Tensor, *, memory: Tensor | None = None, memory_mask: Tensor | None = None,
                       cache: KVCache | None = None, need_weights: bool = False, use_fused: bool = True) -> StackOutput:
        """tokens: (batch, t) decoder inputs; memory: (batch_m, src_len, d_model) for a decoder that
        cross-attends, with its memory_mask (batch_m, 1, 1, src_len) -> the stack's output: hidden
        (batch, t, d_model) and, if ``need_weights``, the attention weights per layer.

        Without a cache: positions 0..t-1 under the causal mask.  With a ``cache``, ``tokens`` holds
        only the new positions (counted from each row's first real token where rows are left-padded):
        their keys/values are written at ``cache.position`` and attention reads the whole cache under
        its step mask; the cache is not advanced here (``decode_step`` does it)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        mask, is_causal = None, True
        if cache is not None:
            positions = cache.position + positions
            if cache.position_offset is not None:
                positions = (positions[None, :] - cache.position_offset[:, None]).clamp_min(0)
            mask, is_causal = prepare_mask(cache.step_mask(tokens.shape[1])), False
        x = self.decoder_embedding(tokens, positions)
        rotary = self.rotary(positions) if self.rotary is not None else None
        bias = None
        if self.decoder_bias is not None:           # relative positions: of the queries to every key
            keys = positions if cache is None else torch.arange(cache.max_len, device=tokens.device)
            bias = self.decoder_bias(positions, keys)
        out = self.decoder(x, mask, is_causal=is_causal, bias=bias, rotary=rotary, memory=memory,
                           memory_mask=memory_mask, cache=cache, need_weights=need_weights, use_fused=use_fused)
        if self.decoder_output_scale is not None:
            out = out._replace(hidden=out.hidden * self.decoder_output_scale)
        return out

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., d_model) -> logits (..., vocab): the pre-softmax projection (§3.4)."""
        return F.linear(hidden, self.output_weight, self.output_bias)

    # -- the decoding interface --------------------------------------------------------
    def new_cache(self, batch: int, max_len: int, *, dtype: torch.dtype, device: torch.device) -> KVCache:
        """An empty cache of ``max_len`` positions for every decoder layer's keys and values."""
        attention = self.decoder.layers[0].self_attention
        return KVCache(len(self.decoder.layers), batch, attention.n_kv_heads, attention.d_head, max_len, dtype=dtype,
                       device=device)

    def start_from_memory(self, memory: Tensor, memory_mask: Tensor | None, max_new_tokens: int,
                          start_id: int) -> tuple[KVCache, Tensor]:
        """An encoder–decoder's start: a cache for ``max_new_tokens`` steps that holds the memory
        (batch, src_len, d_model), its mask and every decoder layer's cross-attention keys and
        values of it (projected once), and the first decoder input, ``start_id`` (batch, 1)."""
        cache = self.new_cache(memory.shape[0], max_new_tokens + 1, dtype=memory.dtype, device=memory.device)
        cache.memory, cache.memory_mask = memory, memory_mask
        cache.cross = [layer.cross_attention.project_memory(memory) for layer in self.decoder.layers]
        return cache, torch.full((memory.shape[0], 1), start_id, dtype=torch.long, device=memory.device)

    def step(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """tokens: (batch, t), the positions after those in ``cache`` -> float32 logits of the next
        token (batch, vocab).  Static shapes: the keys/values go to ``cache.position`` and attention
        reads the whole cache under its step mask.  Only the last position is projected to the
        vocabulary.  (``decode_step`` runs this and advances the cache.)"""
        hidden = self.decoder_states(tokens, memory=cache.memory, memory_mask=cache.memory_mask, cache=cache).hidden
        return self.logits(hidden[:, -1]).float()

    @property
    def max_positions(self) -> int:
        return self.config.max_len

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

        for tensor in cache.long_lived():
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
