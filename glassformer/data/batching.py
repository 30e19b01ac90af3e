"""Batches by token budget with length bucketing (§5.1: "batched together by approximate sequence length").

Sentences of similar length go together so little compute is spent on
padding; each batch holds at most ``max_tokens`` tokens counting padding
(``batch size × longest sentence``, on the longer of source and target).
Batch order is shuffled each epoch from a seeded generator.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


def to_device(tensor: Tensor, device) -> Tensor:
    """Copy a CPU batch tensor to ``device``; to a GPU through pinned memory, without waiting for the copy."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class Batch:
    """A batch (a dataclass of tensors and counts) that the trainer moves to its device."""

    def to(self, device):
        """The batch with its tensors on ``device`` (:func:`to_device`) and its counts as they are."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: to_device(v, device) for k, v in values.items() if isinstance(v, Tensor)})


@dataclass
class TranslationBatch(Batch):
    """Teacher forcing: the decoder reads ``tgt_in`` = BOS + target and predicts ``tgt_out`` = target + EOS."""

    src: Tensor          # (batch, src_len)
    tgt_in: Tensor       # (batch, tgt_len)
    tgt_out: Tensor      # (batch, tgt_len)
    n_tokens: int        # real target tokens (the loss normaliser)


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    """Right-pad to (batch, longest)."""
    longest = max(len(s) for s in sequences)
    out = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, bos_id: int, eos_id: int) -> TranslationBatch:
    """(source ids, target ids) without specials -> a padded batch, target shifted right."""
    src = pad([s + [eos_id] for s, _ in pairs], pad_id)
    tgt_in = pad([[bos_id] + t for _, t in pairs], pad_id)
    tgt_out = pad([t + [eos_id] for _, t in pairs], pad_id)
    return TranslationBatch(src, tgt_in, tgt_out, int((tgt_out != pad_id).sum()))


def token_budget_batches(lengths: Sequence[int], max_tokens: int, *, seed: int = 0, epoch: int = 0,
                         shuffle: bool = True, max_sentences: int | None = None,
                         by_length: bool = True) -> list[list[int]]:
    """Group example indices into batches of at most ``max_tokens`` padded tokens
    (and at most ``max_sentences`` examples, if given).

    Examples are sorted by length (ties broken randomly per epoch), cut into
    batches greedily, and the batch order is shuffled.  Without a sentence cap,
    very short examples end up in a few huge batches, i.e. in few optimiser steps.
    ``by_length=False`` skips the sort: every batch is a random mix of lengths
    (more padding, but short examples reach every step, not a few).
    """
    rng = random.Random(seed * 100_003 + epoch)
    if by_length:
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random() if shuffle else i))
    else:
        order = list(range(len(lengths)))
        if shuffle:
            rng.shuffle(order)
    batches, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        full = max_sentences is not None and len(current) >= max_sentences
        if current and (full or longest_if_added * (len(current) + 1) > max_tokens):
            batches.append(current)
            current, longest_if_added = [], lengths[i]
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches


class ParallelDataset:
    """Tokenised sentence pairs and their batches."""

    def __init__(self, pairs: list[tuple[list[int], list[int]]], pad_id: int, bos_id: int, eos_id: int):
        self.pairs, self.pad_id, self.bos_id, self.eos_id = pairs, pad_id, bos_id, eos_id
        self.lengths = [max(len(s), len(t)) + 1 for s, t in pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def batches(self, max_tokens: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True,
                max_sentences: int | None = None, by_length: bool = True) -> list[TranslationBatch]:
        return [collate([self.pairs[i] for i in idx], self.pad_id, self.bos_id, self.eos_id)
                for idx in token_budget_batches(self.lengths, max_tokens, seed=seed, epoch=epoch, shuffle=shuffle,
                                                max_sentences=max_sentences, by_length=by_length)]
