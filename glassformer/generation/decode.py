"""One entry point for every decoding strategy: greedy, sampling, beam search, MBR.

The command line (``glassformer translate --beam 4 --alpha 0.6 --n-best 2 --mbr ...``)
and library users call :func:`decode` with a fresh cache from
``model.start_decoding``; it picks the strategy from its arguments:

* ``mbr=True``: Minimum Bayes Risk over ``mbr_candidates`` samples (or a beam's
  n-best list, ``mbr_source="beam"``), ranked by expected ``mbr_utility``;
* ``beam > 1``: beam search with length penalty ``alpha``;
* otherwise: the greedy / sampling loop of :mod:`.sampling` (``sampling`` says which).

``sampling`` is the one source of the shared settings: ``max_new_tokens``,
``min_new_tokens``, ``eos_id``, ``pad_id``, ``banned_ids``, ``repetition_penalty``,
``no_repeat_ngram_size`` (and, for sampling, temperature, top-k/p, seed).  Sampling
settings given with beam search are refused: the search is deterministic and
would ignore them.  ``max_lengths`` (batch,) optionally limits each output
separately, e.g. ``length_limits(src, pad_id, a=1, b=50)`` for the paper's
"input length + 50"; ``start_decoding`` must then be given ``int(max_lengths.max())``.
``streams`` (one number per input) names each input's random stream when sampling with a seed
(its place in the whole input, so that batching does not change what it gets; see :mod:`.sampling`).

The strategies keep their decisions on the device (see :mod:`.sampling` and
:mod:`.beam` for where each reads back); :func:`decode` itself reads the tokens back
once, at the end.  :func:`ensure_compiled` compiles a model's decoding step once
(``model.compile_decoding()``) for the callers that offer ``compile=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from ..nn import KVCache
from .beam import BeamOptions, beam_search
from .mbr import check_utility, mbr_decode
from .processors import output_ids
from .sampling import SamplingOptions, generate


@dataclass
class Decoded:
    """Per input, up to ``n_best`` outputs, best first.

    tokens: token ids without EOS or padding; texts: ``detokenize(tokens)`` (None
    without a ``detokenize``); scores: beam search — log P(Y) / lp(|Y|); MBR —
    expected utility (0..100); greedy / sampling — None.
    """

    tokens: list[list[list[int]]]
    texts: list[list[str]] | None
    scores: list[list[float]] | None
    strategy: str


def ensure_compiled(model) -> None:
    """Make ``model`` decode through its compiled step (``model.compile_decoding()``, CUDA graphs on a
    GPU), unless it already does.  A compiler that fails raises :class:`ConfigError` at the first step."""
    if not model.decoding_compiled:
        model.compile_decoding()


def length_limits(src: Tensor, pad_id: int, a: float = 1.0, b: int = 50, cap: int | None = None) -> Tensor:
    """Per-sentence output limits ``a * source_length + b`` (batch,), at least 1, at most ``cap``."""
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not (math.isfinite(a) and a >= 0):
        raise ConfigError(f"max_len_a={a!r} is invalid; the output length limit a·|source| + b needs a finite a >= 0")
    lengths = (src != pad_id).sum(dim=1).to(torch.float32)
    limits = torch.floor(a * lengths + b).to(torch.long).clamp_min(1)
    return limits.clamp_max(cap) if cap is not None else limits


@torch.no_grad()
def decode(
    model,
    cache: KVCache,
    first_tokens: Tensor,
    sampling: SamplingOptions,
    *,
    beam: int = 1,
    alpha: float = 0.6,
    n_best: int = 1,
    length_penalty_kind: str = "gnmt",
    stopping: str = "exact",
    no_repeat_ngram_size: int | None = None,
    max_lengths: Tensor | None = None,
    mbr: bool = False,
    mbr_candidates: int = 16,
    mbr_utility: str = "bleu",
    mbr_source: str = "sample",
    detokenize: Callable[[list[int]], str] | None = None,
    streams: Sequence[int] | None = None,
) -> Decoded:
    """Decode a batch from a fresh ``cache`` / ``first_tokens`` (``model.start_decoding``)."""
    # Validate every option before any work, whatever the strategy.
    if no_repeat_ngram_size is not None:
        sampling = replace(sampling, no_repeat_ngram_size=no_repeat_ngram_size)
    searching = (beam > 1 and not mbr) or (mbr and mbr_source == "beam")
    if searching and (not sampling.greedy or sampling.top_k is not None or sampling.top_p is not None):
        raise ConfigError("temperature, top_k and top_p choose how to sample; beam search is deterministic and "
                          "would ignore them: use beam=1 to sample, or leave them unset")
    beam_options = BeamOptions(
        beam=max(beam, mbr_candidates) if mbr and mbr_source == "beam" else beam, alpha=alpha,
        n_best=1 if mbr else n_best, length_penalty_kind=length_penalty_kind, stopping=stopping,
        max_new_tokens=sampling.max_new_tokens, min_new_tokens=sampling.min_new_tokens,
        no_repeat_ngram_size=sampling.no_repeat_ngram_size, repetition_penalty=sampling.repetition_penalty,
        eos_id=sampling.eos_id, eos_ids=sampling.eos_ids, pad_id=sampling.pad_id, banned_ids=sampling.banned_ids,
    )
    if mbr:
        check_utility(mbr_utility)
        if not isinstance(mbr_candidates, int) or mbr_candidates < 1:
            raise ConfigError(f"mbr_candidates={mbr_candidates!r} is invalid; it must be a positive integer")
        if n_best > mbr_candidates:
            raise ConfigError(f"n_best={n_best} is invalid with mbr_candidates={mbr_candidates}; MBR ranks "
                              "only its candidates, so n_best must be at most mbr_candidates")
        choices = mbr_decode(model, cache, first_tokens, n=mbr_candidates, utility=mbr_utility, source=mbr_source,
                             sampling=sampling, beam_options=beam_options, max_lengths=max_lengths,
                             detokenize=detokenize, streams=streams)
        return Decoded([c.tokens[:n_best] for c in choices],
                       [c.texts[:n_best] for c in choices] if detokenize else None,
                       [c.expected_utility[:n_best] for c in choices], "mbr")

    if beam > 1:
        out = beam_search(model, cache, first_tokens, beam_options, max_lengths=max_lengths)
        hyps, scores = out.hypotheses(sampling)
        texts = [[detokenize(h) for h in row] for row in hyps] if detokenize else None
        return Decoded(hyps, texts, scores, "beam")

    new = generate(model, cache, first_tokens, sampling, streams=streams, max_lengths=max_lengths)   # (batch, t)
    hyps = [[output_ids(row, sampling)] for row in new.tolist()]
    texts = [[detokenize(h) for h in row] for row in hyps] if detokenize else None
    return Decoded(hyps, texts, None, "greedy" if sampling.greedy else "sample")


__all__ = ["Decoded", "decode", "ensure_compiled", "length_limits"]
