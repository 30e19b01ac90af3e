"""Training batch streams that can say where they are, so a resumed run reads exactly what the
uninterrupted run would have read next, and that split one global stream between processes.

A stream is an endless iterator of micro-batches with ``state_dict()`` / ``load_state_dict()``.
Every process of a data-parallel run walks the *same* seeded global sequence of micro-batches
and keeps every ``world``-th one, starting at its ``rank``:

    global micro-batches:   m0  m1  m2  m3  m4  m5 ...
    world 1, grad_accum 2:  [m0 m1] [m2 m3] [m4 m5]      one process, two micro-batches per step
    world 2, grad_accum 1:  rank 0: m0 m2 m4 ...   rank 1: m1 m3 m5 ...

so the ranks see disjoint data and a step of ``world`` processes × ``grad_accum`` micro-batches
covers the same examples as one process with ``world × grad_accum`` micro-batches: the number of
processes does not change what a run learns.  Only a process's own micro-batches are collated
(for the language model, only its own windows are read).

* :class:`DrawnBatches`: micro-batches drawn at random from one seeded generator, whose state is the
  stream's; :class:`WindowStream`: random windows of a token array (language modelling).
* :class:`EpochStream`: token-budget batches of a parallel corpus, reshuffled each epoch
  (translation); its state is (epoch, position in the epoch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .batching import ParallelDataset, TranslationBatch, collate, token_budget_batches
from .lm import LMBatch, LMData


class DrawnBatches:
    """Random micro-batches from one seeded generator: the part every drawing stream shares.

    A subclass says what one micro-batch's random draw is (``draw``, from ``self.generator``) and
    how a batch is made from it (``collate``); every rank draws every rank's micro-batch and keeps
    its own, rank r of ``world`` the r-th of each ``world`` draws.  Its state is the generator's."""

    def __init__(self, seed: int, *, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self):                                              # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def collate(self, drawn):                                    # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __iter__(self) -> "DrawnBatches":
        return self

    def __next__(self):
        drawn = [self.draw() for _ in range(self.world)]
        return self.collate(drawn[self.rank])

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class WindowStream(DrawnBatches):
    """Micro-batches of ``batch_size`` random windows of ``data``'s ``split``, from ``seed``."""

    def __init__(self, data: LMData, split: str, batch_size: int, seed: int, *, rank: int = 0, world: int = 1):
        super().__init__(seed, rank=rank, world=world)
        self.data, self.split, self.batch_size = data, split, batch_size

    def draw(self) -> Tensor:
        """The starts of the windows (batch_size,)."""
        return torch.randint(len(self.data.splits[self.split]) - self.data.block_size, (self.batch_size,),
                             generator=self.generator)

    def collate(self, starts: Tensor) -> LMBatch:
        return self.data.windows(self.split, starts.tolist())


class EpochBatches:
    """Shuffled epochs of batches with a resumable position: the part every epoch-based stream shares.

    A subclass says which example indices form each batch of an epoch (``epoch_batches``, the
    same list for the same epoch on every process) and how a batch is made from them
    (``collate``); this class walks the global sequence, epoch after epoch, keeping every
    ``world``-th batch from ``rank``.  Its state is (epoch, position in the epoch)."""

    def __init__(self, *, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world
        self.epoch, self.position = 0, rank     # the global index (within the epoch) of this rank's next batch
        self._order: list[list[int]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:   # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def collate(self, indices: list[int]):                      # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __iter__(self) -> "EpochBatches":
        return self

    def __next__(self):
        if self._order is None:
            self._order = self.epoch_batches(self.epoch)
        while self.position >= len(self._order):       # past this epoch's end: carry into the next
            self.position -= len(self._order)
            self.epoch += 1
            self._order = self.epoch_batches(self.epoch)
        indices = self._order[self.position]
        self.position += self.world
        return self.collate(indices)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position, self._order = int(state["epoch"]), int(state["position"]), None


class EpochStream(EpochBatches):
    """Token-budget batches of ``dataset``, epoch after epoch, each epoch's order from (seed, epoch)."""

    def __init__(self, dataset: ParallelDataset, max_tokens: int, seed: int, *, max_sentences: int | None = None,
                 by_length: bool = True, rank: int = 0, world: int = 1):
        super().__init__(rank=rank, world=world)
        self.dataset, self.max_tokens, self.seed = dataset, max_tokens, seed
        self.max_sentences, self.by_length = max_sentences, by_length

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The example indices of every batch of ``epoch``, in that epoch's order."""
        return token_budget_batches(self.dataset.lengths, self.max_tokens, seed=self.seed, epoch=epoch,
                                    max_sentences=self.max_sentences, by_length=self.by_length)

    def collate(self, indices: list[int]) -> TranslationBatch:
        d = self.dataset
        return collate([d.pairs[i] for i in indices], d.pad_id, d.bos_id, d.eos_id)


__all__ = ["DrawnBatches", "WindowStream", "EpochBatches", "EpochStream"]
