"""Beam search over the decoding interface, batched over sentences and beams at once.

The paper (§6.1) decodes with a beam of 4 and a length penalty α = 0.6 (Wu et
al. 2016, "GNMT"), with outputs up to the input length + 50.  This module is that
search, for any model with ``decode_step(tokens, cache) -> logits`` (the
encoder–decoder :class:`~glassformer.models.Transformer` and the decoder-only
GPT alike).

One step, for ``batch`` sentences × ``beam`` hypotheses (rows sentence-major,
row = sentence * beam + b):

1. ``decode_step`` gives next-token logits for every live hypothesis; the repetition penalty
   applies to them, then the log-softmax, then the bans (``processors.py``).
2. Each sentence ranks its ``beam × vocab`` continuations by summed log-probability
   and keeps the best ``2 × beam`` (so at least ``beam`` survive even if all of
   the first ``beam`` end with EOS).
3. Candidates that end (EOS, or the sentence's length limit) and rank in the
   first ``beam`` are *finished*: scored ``log P(Y) / lp(|Y|)`` and merged into
   the sentence's ``beam`` best finished hypotheses, kept aside.
4. The best ``beam`` candidates that did not end continue: the KV cache is
   reordered (``model.reorder_cache``) to the rows they came from.
5. A sentence is done when it holds ``beam`` finished hypotheses and no live
   one can still beat the worst of them (see ``stopping``), or at its length limit.
   Done sentences leave the batch (their decoder rows and encoder output are
   dropped from the cache), so the remaining steps cost only what is still live —
   unless the batch is kept static (below).

Only the decoder side is batched ``batch × beam``: the encoder output (and its
cross-attention keys/values) is computed once per sentence and shared by its
beams, never copied.  The first step runs on the ``batch`` rows alone (all beams
of a sentence start identical: for a decoder-only model the prompt is read once
per sentence) and its reorder fans each sentence out to its beams.

**What |Y| counts**: the generated tokens, including the final EOS, excluding the
decoder start token or the prompt.  A hypothesis cut at its length limit without
EOS has |Y| = that limit.  This is also what Hugging Face's ``generate`` divides by.

**Length penalties** (``length_penalty_kind``):

* ``"gnmt"`` (default; the paper's): ``lp(Y) = ((5 + |Y|) / 6) ** α`` (Wu et al. 2016, eq. 14);
* ``"hf"``: ``lp(Y) = |Y| ** α`` — what Hugging Face calls ``length_penalty``;
  offered to compare with ``transformers``' beam search, not because it is better.

α = 0 ranks by raw log-probability under both.  The search is deterministic:
no randomness, so the same inputs give the same outputs on the same machine.

**Static shapes for a compiled step** (``static_batch``, on by default when
``model.decoding_compiled``): done sentences stay in the batch instead of leaving
it; their rows are still computed and their results ignored (nothing more is merged
into their finished hypotheses).  The decoder batch is then ``batch × beam`` at every
step after the first, so a compiled step needs exactly two graphs (the first step's
``batch`` rows, then ``batch × beam``) and never recompiles as sentences finish, and
the cache's buffers keep their addresses (a reorder of the same size copies in
place), which CUDA graphs need.  Without it, each distinct number of live sentences
would be one more compile.  The outputs are the same either way.

**Host syncs**: a few per step (has a candidate finished, is every sentence done,
did one just finish), to decide what to merge, what to drop and when to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import ConfigError
from ..nn import KVCache
from .processors import apply_bans, check_number, check_rules, end_ids, output_ids, penalise_repetition, token_history

LENGTH_PENALTIES = ("gnmt", "hf")
MAX_ALPHA = 10.0
"""The largest length-penalty exponent accepted: ((5 + |Y|) / 6) ** α stays finite in float32 up to it for every
length a model reads (α = 20 overflows at a few hundred tokens), and the paper's is 0.6."""
STOPPING_RULES = ("exact", "heuristic", "first")


@dataclass
class BeamOptions:
    """How to search.

    ``beam``: hypotheses kept per sentence.  ``alpha``: length-penalty exponent
    (0 = raw log-probability).  ``n_best``: hypotheses returned per sentence
    (≤ ``beam``).  ``max_new_tokens`` / ``min_new_tokens``: bounds on |Y|
    (``min_new_tokens`` forbids EOS until that many tokens were generated).
    ``no_repeat_ngram_size``: forbid any n-gram from occurring twice in a
    hypothesis (its prompt / start token included; 0 = off).

    ``stopping`` decides when a sentence with ``beam`` finished hypotheses is done:

    * ``"exact"``: when no live hypothesis can beat the worst finished one however
      it continues — its log-probability can only fall and its length penalty is
      at most that of the length limit (Hugging Face: ``early_stopping="never"``);
    * ``"heuristic"``: the same bound at the current length (Hugging Face's default
      ``early_stopping=False``; may stop before a better hypothesis is found);
    * ``"first"``: as soon as ``beam`` hypotheses finished (fairseq; Hugging Face
      ``early_stopping=True``).

    With ``beam=1`` a sentence is done at its first finished hypothesis, whatever
    ``stopping`` says: beam search of width 1 is greedy decoding, exactly.
    """

    beam: int = 4
    alpha: float = 0.6
    length_penalty_kind: str = "gnmt"
    n_best: int = 1
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    eos_id: int | None = 2
    eos_ids: tuple[int, ...] = ()        # further tokens that end a hypothesis as eos_id does
    pad_id: int = 0
    banned_ids: tuple[int, ...] = ()
    stopping: str = "exact"

    def __post_init__(self) -> None:
        self.banned_ids = tuple(self.banned_ids)
        check_rules(self)
        for name in ("beam", "n_best"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} is invalid; it must be an integer >= 1")
        if self.n_best > self.beam:
            raise ConfigError(f"n_best={self.n_best} is invalid with beam={self.beam}; the search keeps only "
                              f"beam hypotheses, so n_best must be between 1 and {self.beam}")
        check_number(self, "alpha", 0.0, MAX_ALPHA, rule="between {low:g} and {high:g} (the length-penalty exponent: "
                     "0 = rank by raw log-probability, the paper uses 0.6)")
        if self.length_penalty_kind not in LENGTH_PENALTIES:
            raise ConfigError(f"length_penalty_kind={self.length_penalty_kind!r} is invalid; choose one of "
                              f"{list(LENGTH_PENALTIES)}")
        if self.stopping not in STOPPING_RULES:
            raise ConfigError(f"stopping={self.stopping!r} is invalid; choose one of {list(STOPPING_RULES)}")

    def check_vocab(self, vocab_size: int) -> None:
        """Raise :class:`ConfigError` if the beam is wider than the vocabulary."""
        if self.beam > vocab_size:
            raise ConfigError(f"beam={self.beam} is invalid for a vocabulary of {vocab_size} tokens; "
                              f"the beam must be between 1 and {vocab_size}")


def length_penalty(lengths: Tensor, alpha: float, kind: str = "gnmt") -> Tensor:
    """lp(|Y|): ``((5 + |Y|) / 6) ** α`` (GNMT) or ``|Y| ** α`` (Hugging Face); float tensor like ``lengths``."""
    lengths = lengths.to(torch.float32)
    if kind == "gnmt":
        return ((5.0 + lengths) / 6.0) ** alpha
    if kind == "hf":
        return lengths ** alpha
    raise ConfigError(f"length_penalty_kind={kind!r} is invalid; choose one of {list(LENGTH_PENALTIES)}")


class BeamOutput(NamedTuple):
    """Up to ``n_best`` hypotheses per sentence, best first.

    tokens: (batch, n_best, t) generated tokens, EOS included, then ``pad_id``;
    lengths: (batch, n_best) |Y| (0 marks a missing hypothesis);
    scores: (batch, n_best) log P(Y) / lp(|Y|), what the search ranked by;
    log_probs: (batch, n_best) log P(Y), the summed token log-probabilities.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    log_probs: Tensor

    def hypotheses(self, options) -> tuple[list[list[list[int]]], list[list[float]]]:
        """Per sentence, the token ids of its hypotheses (up to the end token of ``options``, without
        padding) and their scores, best first; missing hypotheses left out."""
        tokens, lengths, scores = self.tokens.tolist(), self.lengths.tolist(), self.scores.tolist()
        kept = [[k for k, n in enumerate(row) if n > 0] for row in lengths]
        return ([[output_ids(tokens[b][k][: lengths[b][k]], options) for k in ks] for b, ks in enumerate(kept)],
                [[scores[b][k] for k in ks] for b, ks in enumerate(kept)])


@torch.inference_mode()     # no autograd bookkeeping at all: a few percent per step on CPU
def beam_search(
    model,
    cache: KVCache,
    first_tokens: Tensor,
    options: BeamOptions,
    *,
    max_lengths: Tensor | None = None,
    static_batch: bool | None = None,
) -> BeamOutput:
    """Beam search from a fresh ``cache`` (as ``model.start_decoding`` returns it).

    first_tokens: (batch, t0) what to feed first — the decoder start token
    (encoder–decoder) or the left-padded prompts (decoder-only).  The cache must
    hold ``options.max_new_tokens`` new positions (pass the same number to
    ``start_decoding``).  max_lengths: optional (batch,) per-sentence limit on |Y|
    (e.g. source length + 50), capped at ``options.max_new_tokens``.  static_batch:
    keep done sentences in the batch (default: when ``model.decoding_compiled``; see above).
    """
    if static_batch is None:
        static_batch = bool(getattr(model, "decoding_compiled", False))
    device = first_tokens.device
    batch, t0 = first_tokens.shape
    beam = options.beam
    eos = torch.tensor(end_ids(options), dtype=torch.long, device=device)
    inf = float("-inf")
    limits = torch.full((batch,), options.max_new_tokens, dtype=torch.long, device=device)
    if max_lengths is not None:
        limits = torch.minimum(limits, max_lengths.to(device=device, dtype=torch.long).clamp_min(1))
    horizon = int(limits.max())
    lp = length_penalty(torch.arange(horizon + 1, device=device), options.alpha, options.length_penalty_kind)
    lp_at_limit = lp[limits]                                            # (batch,)

    # Every row's tokens so far: the prompt (-1 for left padding), then what it generated.
    history = token_history(first_tokens, cache.key_padding, horizon)

    # The finished hypotheses kept aside, `beam` per sentence, best first.  These (like
    # everything below) cover the sentences still in the batch; a finished sentence
    # is written to the `out_*` tensors and dropped, so later steps skip it.
    fin_scores = torch.full((batch, beam), inf, device=device)
    fin_log_probs = torch.full((batch, beam), inf, device=device)
    fin_lengths = torch.zeros((batch, beam), dtype=torch.long, device=device)
    fin_tokens = torch.full((batch, beam, horizon), options.pad_id, dtype=torch.long, device=device)
    out_scores, out_log_probs = fin_scores.clone(), fin_log_probs.clone()
    out_lengths, out_tokens = fin_lengths.clone(), fin_tokens.clone()
    active = torch.arange(batch, device=device)        # which input each sentence in the batch is
    retired = torch.zeros(batch, dtype=torch.bool, device=device)   # done, kept in a static batch

    def retire(which: Tensor) -> None:
        rows = active[which]
        out_scores[rows], out_log_probs[rows] = fin_scores[which], fin_log_probs[which]
        out_lengths[rows], out_tokens[rows] = fin_lengths[which], fin_tokens[which]

    running = torch.zeros(batch, 1, device=device)      # summed log-probs of live hypotheses (batch, width)
    sentence = torch.arange(batch, device=device)[:, None]
    feed = first_tokens.clone()     # an inference tensor like every later feed: no recompile of a compiled step
    for t in range(horizon):                            # t tokens generated so far
        width = running.shape[1]                        # 1 at the first step, then `beam`
        logits = model.decode_step(feed, cache)        # (batch * width, vocab)
        vocab = logits.shape[-1]
        if t == 0:
            options.check_vocab(vocab)
        so_far = history[:, : t0 + t]
        log_probs = torch.log_softmax(penalise_repetition(logits, so_far, options.repetition_penalty), dim=-1)
        log_probs = apply_bans(log_probs, so_far, t, options)

        # 2. the best 2*beam continuations of each sentence, over all its beams
        total = (running[:, :, None] + log_probs.view(batch, width, vocab)).view(batch, width * vocab)
        top_scores, top_index = total.topk(min(2 * beam, width * vocab), dim=-1)   # (batch, k), best first
        origin = top_index // vocab                     # which beam each candidate extends
        token = top_index % vocab
        ends = torch.isin(token, eos)
        at_limit = (t + 1 >= limits)[:, None]           # (batch, 1)

        # 3. finished candidates (ranked in the first `beam`) join the kept-aside ones
        finishing = (ends | at_limit) & (top_scores > inf) & ~retired[:, None]
        finishing[:, beam:] = False
        if bool(finishing.any()):
            parent = (sentence * width + origin).view(-1)
            cand_tokens = torch.full((batch, top_index.shape[1], horizon), options.pad_id, dtype=torch.long,
                                     device=device)
            if t > 0:
                cand_tokens[:, :, :t] = history[parent, t0: t0 + t].view(batch, -1, t)
            cand_tokens[:, :, t] = token
            cand_scores = torch.where(finishing, top_scores / lp[t + 1], inf)
            merged = torch.cat([fin_scores, cand_scores], dim=1)
            fin_scores, keep = merged.topk(beam, dim=-1)
            fin_log_probs = torch.cat([fin_log_probs, top_scores], dim=1).gather(1, keep)
            fin_lengths = torch.cat([fin_lengths, torch.full_like(token, t + 1)], dim=1).gather(1, keep)
            fin_tokens = torch.cat([fin_tokens, cand_tokens], dim=1)
            fin_tokens = fin_tokens.gather(1, keep[:, :, None].expand(-1, -1, horizon))

        # 5. which sentences are done?  (decided before spending a step on their live hypotheses)
        full = fin_scores[:, -1] > inf
        if beam == 1 or options.stopping == "first":
            done = full
        else:
            best_live = top_scores.masked_fill(ends, inf).max(dim=-1).values
            bound = best_live / (lp_at_limit if options.stopping == "exact" else lp[t + 1])
            done = full & ~(bound > fin_scores[:, -1])
        done = done | at_limit[:, 0] | retired
        if bool(done.all()):
            break

        # 4. the best `beam` candidates that did not end continue; the cache follows them
        alive_scores, pick = top_scores.masked_fill(ends, inf).topk(beam, dim=-1)   # (batch, beam)
        parents = sentence * width + origin.gather(1, pick)                         # rows they extend
        next_token = token.gather(1, pick)
        kept = None
        if static_batch:                # done sentences stay: their rows run on, ignored
            newly = done & ~retired
            if bool(newly.any()):
                retire(newly)
                retired = retired | newly
        elif bool(done.any()):          # drop finished sentences: later steps cost less
            retire(done)
            kept = (~done).nonzero().squeeze(1)
            alive_scores, parents, next_token = alive_scores[kept], parents[kept], next_token[kept]
            fin_scores, fin_log_probs = fin_scores[kept], fin_log_probs[kept]
            fin_lengths, fin_tokens = fin_lengths[kept], fin_tokens[kept]
            limits, lp_at_limit, active, retired = limits[kept], lp_at_limit[kept], active[kept], retired[kept]
            batch = kept.shape[0]
            sentence = torch.arange(batch, device=device)[:, None]
        rows = parents.view(-1)                                                      # (batch * beam,)
        model.reorder_cache(cache, rows, kept)         # the model knows what its cache holds
        history = history[rows]
        history[:, t0 + t] = next_token.view(-1)
        running = alive_scores
        feed = next_token.view(-1, 1)

    retire(~retired)
    n_best = options.n_best
    used = max(int(out_lengths[:, :n_best].max()), 1)
    return BeamOutput(out_tokens[:, :n_best, :used], out_lengths[:, :n_best], out_scores[:, :n_best],
                      out_log_probs[:, :n_best])


__all__ = ["BeamOptions", "BeamOutput", "beam_search", "length_penalty", "LENGTH_PENALTIES", "STOPPING_RULES"]
