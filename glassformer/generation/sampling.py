"""Greedy decoding and sampling (temperature, top-k, nucleus/top-p, and the shared penalties and bans) — one loop.

The loop runs the model one new token per step over a :class:`KVCache`, so
the cost of a step does not grow with what was generated, beyond attention
over the cache.  With ``use_cache=False`` it re-runs the whole prefix each
step: the slow reference the tests compare against.

**Same seed, same text — whatever the batch.**  Sampling is inverse transform sampling: each row
takes the first token whose cumulative probability reaches a uniform number u in [0, 1) times the
total, one u per row and token.  With a seed, a row's numbers are its own stream (see
:func:`stream_uniforms`), numbered by the row's place in the input (``streams``), so what a row
writes depends on the seed, its prompt and its stream number, never on the rows decoded with it.
One number per row and token, not one per vocabulary entry as an exponential race or ``torch.multinomial``
draws: the streams are drawn before the loop, with no loop over rows inside it, and a CPU step draws
``batch`` numbers, not ``batch × vocab``.

**No host sync per token.**  Everything a step decides stays on the device: the
scores, the chosen token (the uniform numbers go to the device once, when the loop starts; no
``torch.multinomial``, whose argument check reads back to the host), the bans
(token ids turned into a device mask once per call, not copied from a Python list
every step) and the mask of finished rows.  On a GPU the host can therefore queue
step after step without waiting for one to end.  The loop reads a device value back
only every ``check_every`` tokens, to stop once every row has finished: by default
every :data:`CHECK_EVERY` tokens on an accelerator, and after every token on the CPU,
where reading a value back waits for nothing and stopping early saves whole steps.
:func:`generate` reads back once more at the end, to cut the padding steps after the
last end-of-sequence, so its tokens are exactly those of a loop that checked after
every token.  A consumer of :func:`generate_stream` that looks at each
token as it comes (printing it, stopping at a string) syncs for itself: its choice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from ..nn import KVCache
from .processors import (
    NEG_INF,
    apply_bans,
    apply_temperature,
    ban_repeated_ngrams,
    check_number,
    check_rules,
    end_ids,
    keep_top_k,
    keep_top_p,
    penalise_repetition,
    token_history,
)

TEMPERATURE_RANGE = (0.01, 100.0)
"""The sampling temperatures accepted (0 aside, which means greedy): below, sampling is greedy decoding in all but
name; above, it is uniform over the allowed tokens; and an extreme one (1e-40, 1e308) turns float32 logits into
infinities and the step into NaN."""
MAX_SEED = 2 ** 64 - 1

CHECK_EVERY = 16
"""Tokens between the loop's checks whether every row has finished, on an accelerator (each check is
one host sync; on the CPU, where it costs nothing, the loop checks after every token)."""


def default_check_every(device: torch.device) -> int:
    """How often the loop looks whether every row has finished, by default: :data:`CHECK_EVERY` tokens on
    an accelerator (each look waits for the device), every token on the CPU (a look costs nothing there)."""
    return 1 if torch.device(device).type == "cpu" else CHECK_EVERY


@dataclass
class SamplingOptions:
    """How to choose each next token.  ``temperature=0`` means greedy (argmax).

    ``banned_ids``: tokens that may never be generated (padding, the start token,
    ``<unk>``: the text-level helpers pass the tokenizer's).  ``repetition_penalty``,
    ``no_repeat_ngram_size``, ``min_new_tokens`` and ``eos_id`` are shared with beam
    search (see :mod:`.processors`); ``eos_ids``: further tokens that end a row as ``eos_id`` does
    (a checkpoint may state several).  ``seed``: an integer from 0 to 2**64 - 1, or None for torch's global
    generator (see :func:`stream_uniforms`)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0
    eos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    pad_id: int = 0
    banned_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        self.banned_ids = tuple(self.banned_ids)
        check_rules(self)
        if self.temperature != 0:
            check_number(self, "temperature", *TEMPERATURE_RANGE, rule="0 (greedy) or between {low:g} and {high:g}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ConfigError(f"top_k={self.top_k} is invalid; it must be a positive integer")
        if self.top_p is not None:
            check_number(self, "top_p", 0.0, 1.0, low_open=True, rule="in (0, 1]")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not 0 <= self.seed <= MAX_SEED):
            raise ConfigError(f"seed={self.seed!r} is invalid; it must be an integer from 0 to 2**64 - 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def adjust_scores(logits: Tensor, history: Tensor, step: int, options: SamplingOptions,
                  banned: Tensor | None = None) -> Tensor:
    """Next-token logits (batch, vocab) -> the scores to choose from, in Hugging Face's order:
    repetition penalty, bans (forbidden tokens, repeated n-grams, EOS before the minimum
    length), then — when sampling — temperature, top-k, top-p.

    ``banned``: optional (vocab,) bool device mask of the forbidden tokens at this step
    (:func:`ban_mask`), which the loop builds once; without it the token ids of ``options``
    are applied as given (the bans of :func:`~.processors.apply_bans`, the same result)."""
    scores = penalise_repetition(logits, history, options.repetition_penalty)
    if banned is None:
        scores = apply_bans(scores, history, step, options)
    else:
        scores = ban_repeated_ngrams(scores.masked_fill(banned, NEG_INF), history, options.no_repeat_ngram_size)
    if options.greedy:
        return scores
    scores = apply_temperature(scores, options.temperature)
    scores = keep_top_k(scores, options.top_k)
    return keep_top_p(scores, options.top_p)


def ban_mask(options: SamplingOptions, vocab: int, device: torch.device, *, with_eos: bool) -> Tensor:
    """(vocab,) bool on ``device``: ``options.banned_ids``, and with ``with_eos`` the end-of-sequence
    token too (forbidden before ``min_new_tokens``).  Ids beyond the vocabulary are ignored."""
    ids = set(options.banned_ids) | (set(end_ids(options)) if with_eos else set())
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[[i for i in sorted(ids) if i < vocab]] = True
    return mask.to(device)


def stream_uniforms(seed: int | None, streams: Sequence[int], steps: int, device: torch.device) -> Tensor:
    """(len(streams), steps) float32 numbers uniform in [0, 1) on ``device``: row b's column t draws its t-th token.

    With a seed, row b's numbers are the stream ``streams[b]`` of that seed: Python's Mersenne Twister
    (:class:`random.Random`) seeded with the text ``f"{seed}:{streams[b]}"`` (distinct texts, distinct
    generators), so they depend on the seed and the stream number alone, never on the other rows.  Drawn here
    on the host, once per call (about 50 µs a row for 200 tokens), they are the same on every device.  Without a seed
    they come from torch's global generator (``torch.manual_seed`` repeats them; the batch then matters)."""
    if seed is None:
        return torch.rand(len(streams), steps, device=device)
    generators = [random.Random(f"{seed}:{s}") for s in streams]
    draws = [[rng.getrandbits(24) * 2.0 ** -24 for _ in range(steps)] for rng in generators]   # exact in float32
    return torch.tensor(draws, dtype=torch.float32).to(device)


def choose(scores: Tensor, options: SamplingOptions, uniform: Tensor | None) -> Tensor:
    """(batch, vocab) adjusted scores -> (batch,) next tokens, on the scores' device.

    Sampling is inverse transform sampling: row b takes the first token whose cumulative probability
    reaches ``uniform[b]`` (in [0, 1)) times the row's total — token i with probability p_i, one number
    per row, no host sync.  A token of probability 0 (banned, or cut by top-k / top-p) is never taken:
    its cumulative sum is set below any target, and the target is at most the largest sum of a possible
    token (the largest, not the last: a GPU's parallel prefix sum may round a later one lower).  On the CPU
    the same token is found by binary search (:func:`first_reaching_in_order`)."""
    if options.greedy:
        return scores.argmax(dim=-1)
    probs = scores.softmax(dim=-1)
    cumulative = probs.cumsum(dim=-1)
    if cumulative.device.type == "cpu":
        return first_reaching_in_order(cumulative, uniform)
    cumulative.masked_fill_(probs == 0, -1.0)
    target = uniform[:, None] * cumulative.amax(dim=-1, keepdim=True)
    return (cumulative >= target).to(torch.uint8).argmax(dim=-1)        # argmax: the first token that reaches it


def first_reaching_in_order(cumulative: Tensor, uniform: Tensor) -> Tensor:
    """(batch, vocab) cumulative probabilities summed in order, so never decreasing (the CPU's prefix sum),
    (batch,) uniform numbers in [0, 1) -> (batch,) the first token whose sum reaches ``uniform`` times the
    row's total: :func:`choose`'s token, by binary search instead of four passes over the vocabulary.

    The same token: the total is the last sum (a token of probability 0 adds exactly 0, so the last sum is
    the largest sum of a possible token), and the first token to reach a target above 0 has a probability
    above 0 (one of probability 0 repeats the sum before it, which would have reached the target first);
    a target of 0 (``uniform`` 0) is raised to the smallest number above 0 (a subnormal one), which the sum of
    the first possible token reaches, however small its probability, as it reaches 0 in :func:`choose`."""
    target = uniform[:, None] * cumulative[:, -1:]                     # (compared in float32 as in choose)
    cumulative = cumulative.to(target.dtype)                           # (bf16 -> float32 is exact)
    zero = torch.zeros((), dtype=target.dtype)
    target = target.clamp_min_(torch.nextafter(zero, zero + 1))         # (the smallest number above 0, subnormal)
    return torch.searchsorted(cumulative, target).squeeze(1).clamp_max_(cumulative.shape[-1] - 1)   # (NaN: last)


@torch.inference_mode()   # no autograd bookkeeping: less work per step
def generate_stream(
    model,
    cache: KVCache,
    first_tokens: Tensor,
    options: SamplingOptions,
    *,
    use_cache: bool = True,
    check_every: int | None = None,
    streams: Sequence[int] | None = None,
) -> Iterator[Tensor]:
    """Yield the next token of every row, (batch,) on the device, step by step.

    ``first_tokens`` (batch, t): what to feed first (the prompt, or the decoder
    start token).  Rows that produced ``eos_id`` yield ``pad_id`` afterwards.  The
    loop ends after ``max_new_tokens`` or at the first of its checks, every
    ``check_every`` tokens (default: :func:`default_check_every`), that finds every row
    finished — so up to ``check_every - 1`` steps of padding may follow the last row's
    EOS (``check_every=1``: none, at one host sync per token).

    ``streams``: when sampling with a seed, the random stream of each row (:func:`stream_uniforms`;
    default 0, 1, ..., batch - 1).  Give each row its place in the whole input (prompt 40 of a file decoded
    32 at a time is stream 40) and a row samples the same text however the input is batched.
    """
    if check_every is None:
        check_every = default_check_every(first_tokens.device)
    if not isinstance(check_every, int) or check_every < 1:
        raise ConfigError(f"check_every={check_every!r} is invalid; it must be a positive integer")
    batch, t0 = first_tokens.shape
    streams = range(batch) if streams is None else list(streams)
    if len(streams) != batch:
        raise ConfigError(f"streams has {len(streams)} numbers for {batch} rows; give one per row")
    uniforms = None if options.greedy else stream_uniforms(options.seed, streams, options.max_new_tokens,
                                                            first_tokens.device)
    history = token_history(first_tokens, cache.key_padding, options.max_new_tokens)
    finished = torch.zeros(batch, dtype=torch.bool, device=first_tokens.device)
    ends = end_ids(options)
    ends_on_device = torch.tensor(ends, dtype=torch.long, device=first_tokens.device)
    bans: dict[bool, Tensor] = {}            # the forbidden tokens as device masks, built at the first step
    prefix = first_tokens
    feed = first_tokens.clone()     # an inference tensor like every later feed: one compiled graph serves all
    for step in range(options.max_new_tokens):
        if use_cache:
            logits = model.decode_step(feed, cache)
        else:
            logits = model.decode_step(prefix, cache.cleared())
        eos_banned = bool(ends) and step < options.min_new_tokens
        if eos_banned not in bans:
            bans[eos_banned] = ban_mask(options, logits.shape[-1], logits.device, with_eos=eos_banned)
        scores = adjust_scores(logits, history[:, : t0 + step], step, options, bans[eos_banned])
        token = choose(scores, options, None if uniforms is None else uniforms[:, step])
        if ends:
            token = token.masked_fill(finished, options.pad_id)
            finished = finished | torch.isin(token, ends_on_device)
        history[:, t0 + step] = token
        yield token
        if ends and (step + 1) % check_every == 0 and bool(finished.all()):
            return                  # the one host sync of the loop, every `check_every` tokens
        feed = token[:, None]
        if not use_cache:
            prefix = torch.cat([prefix, feed], dim=1)


@torch.inference_mode()
def generate(model, cache: KVCache, first_tokens: Tensor, options: SamplingOptions, *, use_cache: bool = True,
             check_every: int | None = None, streams: Sequence[int] | None = None,
             max_lengths: Tensor | None = None) -> Tensor:
    """All new tokens at once: (batch, n_new), ``pad_id`` after a row's EOS; ``n_new`` ends with the
    step at which the last row finished (or at ``max_new_tokens``), whatever ``check_every`` is.
    ``streams``: each row's random stream (see :func:`generate_stream`); ``max_lengths`` (batch,): each
    row's limit, ``pad_id`` after it (generation is causal: cutting at the limit = stopping there)."""
    steps = list(generate_stream(model, cache, first_tokens, options, use_cache=use_cache, check_every=check_every,
                                 streams=streams))
    tokens = cut_after_last_eos(torch.stack(steps, dim=1), end_ids(options))
    if max_lengths is None:
        return tokens
    past = torch.arange(tokens.shape[1], device=tokens.device)[None] >= max_lengths.to(tokens.device)[:, None]
    return tokens.masked_fill(past, options.pad_id)


def cut_after_last_eos(tokens: Tensor, eos_id: int | Sequence[int] | None) -> Tensor:
    """(batch, n) generated tokens -> the first n' columns, n' = the column of the last row's first
    end token (``eos_id``: one id or several) + 1, or n if some row never ended (the padding steps a
    late check leaves are cut)."""
    ends = [eos_id] if isinstance(eos_id, int) else list(eos_id or [])
    if not ends:
        return tokens
    ended = torch.isin(tokens, torch.tensor(ends, dtype=tokens.dtype, device=tokens.device))
    n = tokens.shape[1]
    first = torch.where(ended.any(dim=1), ended.to(torch.uint8).argmax(dim=1), n)   # argmax: the first True
    return tokens[:, : min(int(first.max()) + 1, n)]
