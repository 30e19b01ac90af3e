"""What every decoding method does to a step's scores before choosing: penalties, bans, warps.

Each function takes scores (rows, vocab) and returns new ones; ``history`` (rows, L)
holds each row's tokens so far — the prompt or decoder start token, then what it
generated — with -1 where there is no token (left padding, or not generated yet).
The names and definitions are Hugging Face's logits processors of the same names,
and the tests check them against those on the same inputs.

* :func:`penalise_repetition` — CTRL (Keskar et al. 2019): a token already in the
  row has its **logit** divided by the penalty if positive, multiplied if negative.
  Defined on logits, so it is applied before the softmax (on log-probabilities,
  which are never positive, the division would never happen);
* :func:`forbid_tokens` — tokens that may never be chosen (padding, the start token,
  ``<unk>``): -inf;
* :func:`ban_repeated_ngrams` — no n-gram may occur twice in a row's history;
* :func:`forbid_eos_before` — no end-of-sequence before ``min_new_tokens`` tokens;
* sampling only: :func:`apply_temperature`, :func:`keep_top_k`, :func:`keep_top_p`.

Sampling applies them in Hugging Face's order to the logits; beam search applies
the repetition penalty to the logits, takes the log-softmax, then the bans (as -inf
log-probabilities, like Hugging Face's beam search, so the scores of what remains
are not renormalised).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError

NEG_INF = float("-inf")


REPETITION_PENALTY_RANGE = (0.01, 100.0)
"""The repetition penalties accepted (1 = off): beyond them a repeated token is as good as banned or certain, and
an extreme penalty (1e308, 1e-308) turns float32 logits into infinities or NaN."""


def check_number(options, name: str, low: float, high: float, *, rule: str, low_open: bool = False) -> None:
    """``options.<name>`` is a real number (not a bool) from ``low`` (excluded with ``low_open``) to ``high``;
    NaN and the infinities never are.  Else a ConfigError naming the field, its value and ``rule`` (formatted
    with ``low`` and ``high``)."""
    value = getattr(options, name)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and (low < value if low_open else low <= value) and value <= high):     # False for NaN
        raise ConfigError(f"{name}={value!r} is invalid; it must be " + rule.format(low=low, high=high))


def check_rules(options) -> None:
    """Validate the fields every decoding method shares (``SamplingOptions`` and ``BeamOptions`` alike):
    max_new_tokens, min_new_tokens, repetition_penalty, no_repeat_ngram_size, banned_ids."""
    def integer(name: str, low: int) -> None:
        value = getattr(options, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name}={value!r} is invalid; it must be an integer >= {low}")

    integer("max_new_tokens", 1)
    integer("min_new_tokens", 0)
    integer("no_repeat_ngram_size", 0)
    if options.min_new_tokens > options.max_new_tokens:
        raise ConfigError(f"min_new_tokens={options.min_new_tokens} is larger than max_new_tokens="
                          f"{options.max_new_tokens}; no output could satisfy both")
    check_number(options, "repetition_penalty", *REPETITION_PENALTY_RANGE,
                 rule="between {low:g} and {high:g} (1 = off, > 1 discourages repeating tokens)")
    if any(not isinstance(i, int) or i < 0 for i in options.banned_ids):
        raise ConfigError(f"banned_ids={options.banned_ids!r} is invalid; give token ids (integers >= 0)")
    options.eos_ids = tuple(options.eos_ids)
    if any(not isinstance(i, int) or i < 0 for i in options.eos_ids):
        raise ConfigError(f"eos_ids={options.eos_ids!r} is invalid; give token ids (integers >= 0)")
    if any(i in options.banned_ids for i in end_ids(options)):
        raise ConfigError(f"eos_id={options.eos_id} (or eos_ids={options.eos_ids}) is also in banned_ids; an output "
                          "could never end")


def end_ids(options) -> tuple[int, ...]:
    """Every token that ends an output: ``eos_id`` and the further ``eos_ids`` (a checkpoint may list
    several end-of-text tokens, as Llama 3's generation config does)."""
    return tuple(dict.fromkeys(([options.eos_id] if options.eos_id is not None else []) + list(options.eos_ids)))


def output_ids(row: Sequence[int], options) -> list[int]:
    """Token ids up to (not including) the first end token of ``options``, without padding."""
    ends = set(end_ids(options))
    out = []
    for tok in row:
        if tok in ends:
            break
        if tok != options.pad_id:
            out.append(tok)
    return out


def token_history(first_tokens: Tensor, key_padding: Tensor | None, max_new_tokens: int) -> Tensor:
    """(rows, t0 + max_new_tokens) token ids: ``first_tokens`` (padding → -1), then -1 to be filled."""
    rows, t0 = first_tokens.shape
    history = torch.full((rows, t0 + max_new_tokens), -1, dtype=torch.long, device=first_tokens.device)
    history[:, :t0] = first_tokens
    if key_padding is not None:
        history[:, :t0].masked_fill_(~key_padding[:, :t0], -1)
    return history


def _seen(history: Tensor, vocab: int) -> Tensor:
    """(rows, vocab) bool: which tokens occur in each row's history."""
    index = torch.where(history >= 0, history, vocab)                 # -1 → the extra column `vocab`
    seen = torch.zeros(history.shape[0], vocab + 1, dtype=torch.bool, device=history.device)
    return seen.scatter_(1, index, True)[:, :vocab]


def penalise_repetition(logits: Tensor, history: Tensor, penalty: float) -> Tensor:
    """CTRL's repetition penalty on logits (rows, vocab): a token in the row's history gets
    logit / penalty if the logit is > 0, logit · penalty otherwise (penalty > 1 discourages)."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(_seen(history, logits.shape[-1]), penalised, logits)


def forbid_tokens(scores: Tensor, token_ids: Sequence[int]) -> Tensor:
    """Scores (rows, vocab) with ``token_ids`` set to -inf: they can never be chosen."""
    ids = [i for i in token_ids if i < scores.shape[-1]]
    if not ids:
        return scores
    scores = scores.clone()
    scores[:, ids] = NEG_INF
    return scores


def ban_repeated_ngrams(scores: Tensor, history: Tensor, n: int) -> Tensor:
    """Set to -inf every token that would complete an n-gram already in ``history`` (rows, L)."""
    rows, length = history.shape
    if n <= 0 or length < n:
        return scores
    windows = history.unfold(1, n, 1)                                   # (rows, L-n+1, n)
    suffix = history[:, length - n + 1:]                                # (rows, n-1): the n-gram being written
    match = (windows[:, :, : n - 1] == suffix[:, None, :]).all(dim=-1)  # (rows, L-n+1)
    vocab = scores.shape[-1]
    follower = windows[:, :, n - 1]
    banned = torch.where(match & (follower >= 0), follower, vocab)      # index `vocab` = "ban nothing"
    ban = torch.zeros(rows, vocab + 1, dtype=torch.bool, device=scores.device)
    ban.scatter_(1, banned, True)
    return scores.masked_fill(ban[:, :vocab], NEG_INF)


def forbid_eos_before(scores: Tensor, eos_ids: int | Sequence[int] | None, step: int, min_new_tokens: int) -> Tensor:
    """No end-of-sequence token (``eos_ids``: one id or several) while fewer than ``min_new_tokens``
    tokens were generated (``step`` so far)."""
    eos_ids = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids or [])
    if not eos_ids or step >= min_new_tokens:
        return scores
    return forbid_tokens(scores, eos_ids)


def apply_bans(scores: Tensor, history: Tensor, step: int, options) -> Tensor:
    """Every ban of ``options`` (banned_ids, no_repeat_ngram_size, min_new_tokens before EOS)."""
    scores = forbid_tokens(scores, options.banned_ids)
    scores = ban_repeated_ngrams(scores, history, options.no_repeat_ngram_size)
    return forbid_eos_before(scores, end_ids(options), step, options.min_new_tokens)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """logits / T: T < 1 sharpens the distribution, T > 1 flattens it."""
    return logits if temperature == 1.0 else logits / temperature


def keep_top_k(scores: Tensor, k: int | None) -> Tensor:
    """Only the k highest-scoring tokens stay possible (ties with the k-th stay too)."""
    if k is None or k >= scores.shape[-1]:
        return scores
    kth = scores.topk(k, dim=-1).values[:, -1:]
    return scores.masked_fill(scores < kth, NEG_INF)


def keep_top_p(scores: Tensor, p: float | None) -> Tensor:
    """Nucleus sampling (Holtzman et al. 2020): the smallest set of most probable tokens whose
    probability reaches ``p`` stays possible (the most probable token always does)."""
    if p is None or p >= 1.0:
        return scores
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    probs = sorted_scores.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs          # probability mass ranked above each token
    drop_sorted = before >= p                       # the top token always has before = 0
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, NEG_INF)


__all__ = ["check_rules", "check_number", "REPETITION_PENALTY_RANGE", "output_ids", "token_history", "penalise_repetition",
           "forbid_tokens", "ban_repeated_ngrams", "forbid_eos_before", "apply_bans", "apply_temperature", "keep_top_k", "keep_top_p"]
