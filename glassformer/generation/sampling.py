"""Greedy decoding and sampling (temperature, top-k, nucleus/top-p, repetition penalty) — one loop.

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


@dataclass
class SamplingOptions:
    """How to choose each next token.  ``temperature=0`` means greedy (argmax)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0
    eos_id: int | None = None
    pad_id: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens!r} is invalid; it must be a positive integer")
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature} is invalid; it must be > 0 (or 0 for greedy decoding)")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k} is invalid; it must be a positive integer")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p={self.top_p} is invalid; it must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty={self.repetition_penalty} is invalid; it must be > 0 (1 = off)")
        if self.min_new_tokens < 0:
            raise ConfigError(f"min_new_tokens={self.min_new_tokens} is invalid; it must be >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def adjust_scores(scores: Tensor, seen: Tensor | None, step: int, options: SamplingOptions) -> Tensor:
    """Apply the options to next-token log-probabilities (batch, vocab); returns new scores."""
    if options.repetition_penalty != 1.0 and seen is not None:
        # CTRL (Keskar et al. 2019): make tokens already present less likely.
        penalised = torch.where(scores > 0, scores / options.repetition_penalty, scores * options.repetition_penalty)
        scores = torch.where(seen, penalised, scores)
    if options.eos_id is not None and step < options.min_new_tokens:
        scores = scores.clone()
        scores[:, options.eos_id] = float("-inf")
    if options.greedy:
        return scores
    scores = scores / options.temperature
    if options.top_k is not None and options.top_k < scores.shape[-1]:
        kth = scores.topk(options.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if options.top_p is not None and options.top_p < 1.0:
        # Nucleus sampling (Holtzman et al. 2020): the smallest set whose probability reaches top_p.
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs          # probability mass ranked above each token
        drop_sorted = before >= options.top_p           # the top token always has before = 0
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


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
    batch = first_tokens.shape[0]
    penalise = options.repetition_penalty != 1.0
    seen = None                 # (batch, vocab): tokens already in each row, for the repetition penalty
    finished = torch.zeros(batch, dtype=torch.bool, device=first_tokens.device)
    prefix = first_tokens
    feed = first_tokens
    for step in range(options.max_new_tokens):
        if use_cache:
            scores = torch.log_softmax(model.decode_step(feed, cache), dim=-1)
        else:
            scores = torch.log_softmax(model.decode_step(prefix, cache.cleared()), dim=-1)
        if penalise and seen is None:       # the vocabulary size is known from the first scores
            seen = torch.zeros_like(scores, dtype=torch.bool)
            seen.scatter_(1, first_tokens, first_tokens != options.pad_id)
        scores = adjust_scores(scores, seen, step, options)
        token = choose(scores, options, generator)
        if options.eos_id is not None:
            token = token.masked_fill(finished, options.pad_id)
            finished = finished | (token == options.eos_id)
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
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
