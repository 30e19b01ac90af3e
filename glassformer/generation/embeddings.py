"""Sentence embeddings: texts -> one unit vector each, and ranking by cosine similarity.

    texts ─► [CLS] text [SEP] token ids ─► sorted by length, cut into batches, padded with [PAD]
          ─► encoder (Bert.encode) ─► mean of the real tokens' hidden states ─► L2-normalised
          ─► put back in input order: (n, d_model)

This is how sentence-transformers models such as all-MiniLM-L6-v2 embed text
(Reimers & Gurevych 2019: mean pooling, then cosine similarity).  Sorting by token
length before batching is the one speed trick: a batch of similar lengths carries
little padding, and padding is work the encoder does for nothing.  The result is the
same as batching in input order (padding is masked out), within float error.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, InputError


def embed_texts(model: nn.Module, tokenizer, texts: list[str], *, batch_size: int = 32, normalize: bool = True,
                max_len: int | None = None, truncate: bool = True, sort_by_length: bool = True,
                device: str | torch.device | None = None) -> Tensor:
    """Sentence embeddings of ``texts``: (n, d_model) float32 on the CPU, row i for ``texts[i]``.

    model: an encoder with ``embed_sentences`` (:class:`~glassformer.models.Bert`); tokenizer: its
    WordPiece :class:`~glassformer.tokenizers.Tokenizer`.  ``max_len``: tokens per text at most,
    [CLS] and [SEP] included (default and upper bound: the model's positions); a longer text is cut
    with a warning, or refused (:class:`InputError`) when ``truncate`` is False.  ``sort_by_length``
    batches texts of similar length together (less padding; same result).  ``device``: where the
    inputs go (default: the model's device).  An empty text is an :class:`InputError`."""
    if not hasattr(model, "embed_sentences"):
        raise ConfigError(f"{type(model).__name__} has no sentence encoder; sentence embeddings need a BERT-style "
                          "encoder (family 'bert'), e.g. all-MiniLM-L6-v2")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is invalid; it must be a positive integer")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InputError(f"text {i} is empty; every text needs at least one word")
    positions = model.config.max_len
    if max_len is not None and max_len < 3:
        raise ConfigError(f"max_len={max_len} is invalid; it must hold [CLS], a token and [SEP] (3 or more)")
    limit = min(max_len or positions, positions)
    ids, _, cut = tokenizer.encode_sentences(texts, max_len=limit)
    if any(cut):
        first = cut.index(True)
        if not truncate:
            raise InputError(f"text {first} ({texts[first][:40]!r}...) is longer than {limit} tokens; "
                             "shorten it or allow truncation")
        warnings.warn(f"{sum(cut)} of {len(texts)} texts are longer than {limit} tokens and were cut "
                      f"(the first: text {first})", stacklevel=2)

    device = torch.device(device) if device is not None else next(model.parameters()).device
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True) if sort_by_length \
        else list(range(len(ids)))
    out = torch.empty(len(ids), model.config.d_model)     # a normal tensor, usable after inference mode
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            tokens, real = _pad([ids[i] for i in rows], tokenizer.pad_id)
            vectors = model.embed_sentences(tokens.to(device), attention_mask=real.to(device), normalize=normalize)
            out[rows] = vectors.float().cpu()
    return out


def _pad(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token-id lists -> (batch, longest) ids padded with ``pad_id``, and (batch, longest) True on
    real tokens (from the lengths: a text may hold the string "[PAD]" itself)."""
    longest = max(len(r) for r in rows)
    tokens = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    real = torch.zeros(len(rows), longest, dtype=torch.bool)
    for b, r in enumerate(rows):
        tokens[b, :len(r)] = torch.tensor(r)
        real[b, :len(r)] = True
    return tokens, real


def rank_by_similarity(query_vec: Tensor, corpus_vecs: Tensor, top_k: int | None = None) -> list[tuple[int, float]]:
    """The ``top_k`` rows of ``corpus_vecs`` (n, d) most similar to ``query_vec`` (d,) or (1, d) by
    cosine similarity, best first, as (row index, score) pairs; ties keep corpus order.  None = all."""
    query = query_vec.reshape(-1).float()
    corpus = corpus_vecs.float()
    if corpus.dim() != 2 or corpus.shape[1] != query.shape[0]:
        raise InputError(f"the query has {query.shape[0]} dimensions and the corpus {tuple(corpus.shape)}; "
                         "they must come from the same model")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k={top_k} is invalid; it must be a positive integer (or None for all)")
    scores = F.normalize(corpus, dim=-1) @ F.normalize(query, dim=0)                    # (n,)
    order = torch.sort(scores, descending=True, stable=True).indices[:top_k]
    return [(int(i), float(scores[i])) for i in order]


__all__ = ["embed_texts", "rank_by_similarity"]
