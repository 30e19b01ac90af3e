"""Greedy decoding and sampling (temperature, top-k, nucleus/top-p, and the shared penalties and bans) — one loop.

The loop runs the model one new token per step over a :class:`KVCache`, so
the cost of a step does not grow with what was generated, beyond attention
over the cache.  With ``use_cache=False`` it re-runs the whole prefix each
step: the slow reference the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from ..errors import ConfigError
from ..nn import KVCache
from .processors import (
    apply_bans,
    apply_temperature,
    check_rules,
    keep_top_k,
    keep_top_p,
    penalise_repetition,
    token_history,
)


@dataclass
class SamplingOptions:
    """How to choose each next token.  ``temperature=0`` means greedy (argmax).

    ``banned_ids``: tokens that may never be generated (padding, the start token,
    ``<unk>``: the text-level helpers pass the tokenizer's).  ``repetition_penalty``,
    ``no_repeat_ngram_size``, ``min_new_tokens`` and ``eos_id`` are shared with beam
    search (see :mod:`.processors`)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0
    eos_id: int | None = None
    pad_id: int = 0
    banned_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        self.banned_ids = tuple(self.banned_ids)
        check_rules(self)
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature} is invalid; it must be > 0 (or 0 for greedy decoding)")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ConfigError(f"top_k={self.top_k} is invalid; it must be a positive integer")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p={self.top_p} is invalid; it must be in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def adjust_scores(logits: Tensor, history: Tensor, step: int, options: SamplingOptions) -> Tensor:
    """Next-token logits (batch, vocab) -> the scores to choose from, in Hugging Face's order:
    repetition penalty, bans (forbidden tokens, repeated n-grams, EOS before the minimum
    length), then — when sampling — temperature, top-k, top-p."""
    scores = penalise_repetition(logits, history, options.repetition_penalty)
    scores = apply_bans(scores, history, step, options)
    if options.greedy:
        return scores
    scores = apply_temperature(scores, options.temperature)
    scores = keep_top_k(scores, options.top_k)
    return keep_top_p(scores, options.top_p)


def choose(scores: Tensor, options: SamplingOptions, generator: torch.Generator | None) -> Tensor:
    """(batch, vocab) adjusted scores -> (batch,) next tokens, on the scores' device."""
    if options.greedy:
        return scores.argmax(dim=-1)
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(-1)


@torch.inference_mode()   # no autograd bookkeeping: less work per step
def generate_stream(
    model,
    cache: KVCache,
    first_tokens: Tensor,
    options: SamplingOptions,
    *,
    use_cache: bool = True,
) -> Iterator[Tensor]:
    """Yield the next token of every row, (batch,), step by step.

    ``first_tokens`` (batch, t): what to feed first (the prompt, or the decoder
    start token).  Rows that produced ``eos_id`` yield ``pad_id`` afterwards;
    the loop stops when every row has finished or after ``max_new_tokens``.
    """
    generator = None
    if options.seed is not None and not options.greedy:
        generator = torch.Generator(device=first_tokens.device).manual_seed(options.seed)
    batch, t0 = first_tokens.shape
    history = token_history(first_tokens, cache.key_padding, options.max_new_tokens)
    finished = torch.zeros(batch, dtype=torch.bool, device=first_tokens.device)
    prefix = first_tokens
    feed = first_tokens.clone()     # an inference tensor like every later feed: one compiled graph serves all
    for step in range(options.max_new_tokens):
        if use_cache:
            logits = model.decode_step(feed, cache)
        else:
            logits = model.decode_step(prefix, cache.cleared())
        scores = adjust_scores(logits, history[:, : t0 + step], step, options)
        token = choose(scores, options, generator)
        if options.eos_id is not None:
            token = token.masked_fill(finished, options.pad_id)
            finished = finished | (token == options.eos_id)
        history[:, t0 + step] = token
        yield token
        if options.eos_id is not None and bool(finished.all()):
            return
        feed = token[:, None]
        if not use_cache:
            prefix = torch.cat([prefix, feed], dim=1)
@torch.inference_mode()
def generate(model, cache: KVCache, first_tokens: Tensor, options: SamplingOptions, *, use_cache: bool = True) -> Tensor:
    """All new tokens at once: (batch, n_new), ``pad_id`` after a row's EOS."""
    steps = list(generate_stream(model, cache, first_tokens, options, use_cache=use_cache))
    return torch.stack(steps, dim=1)
