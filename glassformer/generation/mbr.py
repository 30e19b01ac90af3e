"""Minimum Bayes Risk decoding (Kumar & Byrne 2004; Eikema & Aziz 2020).

Instead of the single most probable output, pick the candidate that agrees most
with what the model would say:

    y* = argmax_{h in H}  E_{y ~ P(·|x)} [ u(h, y) ]

estimated with the candidates themselves as pseudo-references: the expected
utility of ``h`` is the mean of ``u(h, y_j)`` over the other candidates ``y_j``
(each candidate is left out of its own estimate once; duplicates still count,
which is how a sample repeated often gains weight).  The utility is sentence
BLEU or chrF from ``sacrebleu``; candidates come from ancestral sampling (an
unbiased estimate of the expectation) or from a beam's n-best list.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from ..nn import KVCache
from .beam import BeamOptions, beam_search
from .processors import output_ids
from .sampling import SamplingOptions, generate

UTILITIES = ("bleu", "chrf")
CANDIDATE_SOURCES = ("sample", "beam")


def _metric(utility: str):
    """A sacrebleu metric whose ``sentence_score(hyp, [ref]).score`` is the utility (0..100)."""
    from sacrebleu.metrics import BLEU, CHRF

    check_utility(utility)
    return BLEU(effective_order=True) if utility == "bleu" else CHRF()    # BLEU: sentence-level, the usual smoothing


def check_utility(utility: str) -> None:
    if utility not in UTILITIES:
        raise ConfigError(f"mbr utility {utility!r} is unknown; choose one of {list(UTILITIES)}")


@dataclass
class MBRChoice:
    """Candidates of one input ranked by expected utility, best first."""

    texts: list[str]
    expected_utility: list[float]
    tokens: list[list[int]]

    @property
    def best(self) -> str:
        return self.texts[0]


def mbr_rank(candidates: Sequence[str], utility: str = "bleu") -> tuple[list[int], list[float]]:
    """Rank the distinct ``candidates`` by expected utility against all candidates.

    Returns (indices of the first occurrence of each distinct candidate, best first;
    their expected utilities).
    """
    metric = _metric(utility)
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    for i, text in enumerate(candidates):
        first.setdefault(text, i)
        counts[text] = counts.get(text, 0) + 1
    distinct = list(first)
    n = len(candidates)
    if n == 0:
        return [], []
    if n == 1:
        return [0], [100.0]
    expected = []
    for hyp in distinct:
        total = 0.0
        for ref in distinct:
            copies = counts[ref] - (1 if ref == hyp else 0)    # leave the hypothesis out of its own estimate
            if copies:
                total += copies * metric.sentence_score(hyp, [ref]).score
        expected.append(total / (n - 1))
    order = sorted(range(len(distinct)), key=lambda k: (-expected[k], first[distinct[k]]))
    return [first[distinct[k]] for k in order], [expected[k] for k in order]


def mbr_candidates(
    model,
    cache: KVCache,
    first_tokens: Tensor,
    *,
    n: int,
    source: str = "sample",
    sampling: SamplingOptions | None = None,
    beam_options: BeamOptions | None = None,
    max_lengths: Tensor | None = None,
    streams: Sequence[int] | None = None,
) -> list[list[list[int]]]:
    """``n`` candidate token lists per input (EOS and padding removed).

    ``source="sample"``: one batched sampling run over ``batch × n`` rows (the
    cache is fanned out with ``model.reorder_cache``, the encoder output stays shared),
    with ``sampling``'s temperature / top-k / top-p and seed (temperature 0 is
    replaced by 1: identical greedy candidates would make MBR pointless).  Candidate k of the input
    whose stream is s (``streams``, default 0, 1, ...) samples from stream s·n + k, so an input's
    candidates do not depend on the inputs decoded with it.
    ``source="beam"``: the n-best list of a beam of width ``n``.
    """
    if source not in CANDIDATE_SOURCES:
        raise ConfigError(f"mbr candidate source {source!r} is unknown; choose one of {list(CANDIDATE_SOURCES)}")
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"mbr_candidates={n!r} is invalid; it must be a positive integer")
    batch = first_tokens.shape[0]
    if source == "beam":
        opts = replace(beam_options or BeamOptions(), beam=n, n_best=n)
        return beam_search(model, cache, first_tokens, opts, max_lengths=max_lengths).hypotheses(opts)[0]
    sampling = sampling or SamplingOptions()
    if sampling.greedy:
        sampling = replace(sampling, temperature=1.0)
    rows = torch.arange(batch, device=first_tokens.device).repeat_interleave(n)
    model.reorder_cache(cache, rows)
    inputs = range(batch) if streams is None else streams
    tokens = generate(model, cache, first_tokens[rows], sampling, streams=[s * n + k for s in inputs for k in range(n)],
                      max_lengths=None if max_lengths is None else max_lengths.repeat_interleave(n))   # (batch * n, t)
    rows_list = tokens.tolist()
    return [[output_ids(rows_list[b * n + k], sampling) for k in range(n)]
            for b in range(batch)]


def mbr_decode(
    model,
    cache: KVCache,
    first_tokens: Tensor,
    *,
    n: int = 16,
    utility: str = "bleu",
    source: str = "sample",
    sampling: SamplingOptions | None = None,
    beam_options: BeamOptions | None = None,
    max_lengths: Tensor | None = None,
    detokenize: Callable[[list[int]], str] | None = None,
    streams: Sequence[int] | None = None,
) -> list[MBRChoice]:
    """MBR over ``n`` candidates per input; ``detokenize`` turns token ids into the text the
    utility compares (default: the ids joined by spaces); ``streams``: see :func:`mbr_candidates`."""
    check_utility(utility)
    candidates = mbr_candidates(model, cache, first_tokens, n=n, source=source, sampling=sampling,
                                beam_options=beam_options, max_lengths=max_lengths, streams=streams)
    detokenize = detokenize or (lambda ids: " ".join(map(str, ids)))
    choices = []
    for cands in candidates:
        texts = [detokenize(c) for c in cands]
        order, expected = mbr_rank(texts, utility)
        choices.append(MBRChoice([texts[i] for i in order], expected, [cands[i] for i in order]))
    return choices


__all__ = ["MBRChoice", "mbr_rank", "mbr_candidates", "mbr_decode", "UTILITIES", "CANDIDATE_SOURCES"]
