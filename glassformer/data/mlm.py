"""Masked-language-model data (BERT, Devlin et al. 2019, §3.1 and Appendix A).

    text files ─► lines ─► WordPiece ids ─► packed, whole lines at a time, into windows
               ─► [CLS] tokens ... [SEP] [PAD] ...   (block_size ids each; a line longer than
                  a window is cut into window-sized pieces)
               ─► stored once on disk (``.npy``, uint16 or uint32, (windows, block)), memory-mapped
               ─► first 90% of the windows train, last 10% validate

Masking is dynamic (RoBERTa, Liu et al. 2019, §4.1): every batch draws its own masks.
Of the tokens that are not special ([CLS], [SEP], [PAD], [UNK], [MASK]) 15% are
*selected*; a selected token is replaced by [MASK] 80% of the time, by a random
(non-special) token 10% of the time and left unchanged 10% of the time, and the
model is trained to predict the original token at the selected positions only:

    tokens    [CLS] the  cat  sat on  the  mat  . [SEP]
    selected         ·    ✓    ·   ·   ·    ✓   ·
    inputs    [CLS] the [MASK] sat on  the  dog . [SEP]      (80%: [MASK]; 10%: random; 10%: kept)
    targets   -100 -100  cat  -100 ... -100 mat -100 -100

With ``whole_word`` a word — a piece and the "##" continuation pieces after it — is
selected or not as a whole (Google's whole-word-masking BERT), so the model cannot read
"##ing" to recover "play".  Every random draw of a batch has a fixed shape (it does not
depend on the tokens) and comes from one seeded ``torch.Generator``: the generator's
state is the stream's whole state, and a resumed run draws exactly what the
uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .batching import Batch
from .lm import read_ids, split_point, write_ids
from .streams import DrawnBatches

MASK_PROB = 0.15              # the share of (non-special) tokens selected for prediction
MASK_SHARE = 0.8              # of the selected: replaced by [MASK]
RANDOM_SHARE = 0.1            # of the selected: replaced by a random token (the rest: kept as they are)
IGNORE = -100                 # a target that is not predicted (cross-entropy's ignore_index)


@dataclass
class MLMBatch(Batch):
    """tokens: (batch, block) the masked inputs; targets: (batch, block) the original id at the
    selected positions, -100 elsewhere; n_tokens: the number of selected positions."""

    tokens: Tensor
    targets: Tensor
    n_tokens: int = -1

    def __post_init__(self) -> None:
        if self.n_tokens < 0:   # counted once, where the batch is made (on the CPU): reading it costs no sync
            self.n_tokens = int((self.targets != IGNORE).sum())


# -- masking ---------------------------------------------------------------------------------
@dataclass
class Noise:
    """The random draws of one batch, each (batch, block) — their shapes never depend on the tokens."""

    select: Tensor         # uniform [0, 1): a token (or a word, read at its index) is selected below mask_prob
    kind: Tensor           # uniform [0, 1): [MASK] below 0.8, a random token below 0.9, else kept
    replacement: Tensor    # an index into the non-special ids: the random token, where one is used


class Masking:
    """BERT's masking of a batch of windows, given the vocabulary's special and "##" pieces.

    ``special``: (vocab,) bool, never selected nor used as a random replacement;
    ``continuation``: (vocab,) bool, a piece that continues the word before it ("##ing")."""

    def __init__(self, mask_id: int, special: Tensor, continuation: Tensor, *, mask_prob: float = MASK_PROB,
                 whole_word: bool = False):
        if not 0 < mask_prob < 1:
            raise InputError(f"mask_prob={mask_prob!r} is invalid; it must be in (0, 1)")
        self.mask_id, self.mask_prob, self.whole_word = mask_id, mask_prob, whole_word
        self.special, self.continuation = special.bool(), continuation.bool() & ~special.bool()
        self.replacements = torch.nonzero(~self.special).flatten()          # ids a random replacement may take
        if len(self.replacements) == 0:
            raise InputError("the vocabulary holds only special tokens; there is nothing to mask")

    @classmethod
    def from_tokenizer(cls, tokenizer, *, mask_prob: float = MASK_PROB, whole_word: bool = False) -> "Masking":
        if tokenizer.mask_id is None:
            raise InputError("the tokenizer has no [MASK] token; masked-language modelling needs one "
                             "(Tokenizer.train_wordpiece adds it)")
        vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
        size = max(tokenizer.vocab_size, max(vocab.values()) + 1)
        special, continuation = torch.zeros(size, dtype=torch.bool), torch.zeros(size, dtype=torch.bool)
        for idx in (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id, tokenizer.mask_id):
            if idx is not None:
                special[idx] = True
        for idx, added in tokenizer.backend.get_added_tokens_decoder().items():
            special[idx] |= added.special        # any other special token the tokenizer declares
        for piece, idx in vocab.items():
            if piece.startswith("##") and len(piece) > 2:
                continuation[idx] = True
        return cls(tokenizer.mask_id, special, continuation, mask_prob=mask_prob, whole_word=whole_word)

    def draw(self, shape: tuple[int, int], generator: torch.Generator) -> Noise:
        """The draws for one (batch, block) batch, in a fixed order."""
        return Noise(torch.rand(shape, generator=generator), torch.rand(shape, generator=generator),
                     torch.randint(len(self.replacements), shape, generator=generator))

    def words(self, tokens: Tensor) -> Tensor:
        """(batch, block) -> the index of each position's word in its row: a new word starts at every
        piece that is not a "##" continuation (a special token is a word of its own)."""
        starts = ~self.continuation[tokens]
        return starts.long().cumsum(1) - 1

    def apply(self, tokens: Tensor, noise: Noise) -> MLMBatch:
        """Mask ``tokens`` (batch, block), int64, with the draws ``noise``."""
        eligible = ~self.special[tokens]
        if self.whole_word:
            # A word is selected by the draw at its word index: every piece of it reads the same number.
            select_u = noise.select.gather(1, self.words(tokens).clamp_min(0))
        else:
            select_u = noise.select
        selected = eligible & (select_u < self.mask_prob)
        if not bool(selected.any()) and bool(eligible.any()):
            # Nothing selected (a tiny batch): take the eligible token (or word) with the smallest draw,
            # so every batch has something to predict (the loss is divided by the count).
            flat = select_u.masked_fill(~eligible, 2.0).flatten().argmin()
            row, col = divmod(int(flat), tokens.shape[1])
            selected[row, col] = True
            if self.whole_word:
                word = self.words(tokens)[row]
                selected[row] = eligible[row] & (word == word[col])
        targets = torch.where(selected, tokens, torch.full_like(tokens, IGNORE))
        inputs = tokens.clone()
        to_mask = selected & (noise.kind < MASK_SHARE)
        to_random = selected & (noise.kind >= MASK_SHARE) & (noise.kind < MASK_SHARE + RANDOM_SHARE)
        inputs[to_mask] = self.mask_id
        inputs[to_random] = self.replacements[noise.replacement[to_random]]
        return MLMBatch(inputs, targets, int(selected.sum()))

    def mask(self, tokens: Tensor, generator: torch.Generator) -> MLMBatch:
        """Draw and apply one batch's masks."""
        return self.apply(tokens, self.draw(tuple(tokens.shape), generator))


# -- windows on disk ---------------------------------------------------------------------------
def pack_lines(lines: Sequence[Sequence[int]], block_size: int, cls_id: int, sep_id: int, pad_id: int) -> np.ndarray:
    """Pack token-id lines, whole ones at a time, into ``[CLS] ... [SEP] [PAD]...`` windows of
    ``block_size`` (an int64 array (windows, block)); a line longer than a window fills windows
    of its own, the last piece of it shared with the lines after it."""
    room = block_size - 2
    if room < 1:
        raise InputError(f"block size {block_size} leaves no room for tokens between [CLS] and [SEP]; use 3 or more")
    windows: list[list[int]] = []
    current: list[int] = []
    for ids in lines:
        if not ids:
            continue
        if len(current) + len(ids) > room and current:
            windows.append(current)
            current = []
        ids = list(ids)
        while len(ids) > room:
            windows.append(ids[:room])
            ids = ids[room:]
        current += ids
    if current:
        windows.append(current)
    out = np.full((len(windows), block_size), pad_id, dtype=np.int64)
    for i, w in enumerate(windows):
        out[i, 0], out[i, 1: len(w) + 1], out[i, len(w) + 1] = cls_id, w, sep_id
    return out


class MLMData:
    """Windows of token ids (windows, block) split into training (first 90%) and validation (last 10%),
    and the masking that turns them into batches."""

    def __init__(self, windows: np.ndarray, masking: Masking):
        self.check_size(len(windows), windows.shape[1] if windows.ndim == 2 else 0)
        self.windows, self.masking, self.block_size = windows, masking, int(windows.shape[1])
        split = split_point(len(windows))
        self.splits = {"train": windows[:split], "val": windows[split:]}

    @classmethod
    def check_size(cls, n: int, block_size: int) -> None:
        """Both parts must hold at least one window."""
        split = split_point(n)
        if split < 1 or n - split < 1:
            raise InputError(f"the corpus packs into {n} window(s) of block size {block_size}; training and validation "
                             "need at least one each (10 or more make sense): use more text or a smaller --block-size")

    @classmethod
    def build(cls, texts: list[str], tokenizer, path: str | Path, block_size: int, masking: Masking) -> "MLMData":
        """Tokenize the lines of ``texts``, pack them into windows, store them at ``path`` once and
        memory-map them."""
        lines = [line for text in texts for line in text.splitlines() if line.strip()]
        ids = tokenizer.encode_batch(lines) if lines else []
        windows = pack_lines(ids, block_size, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
        cls.check_size(len(windows), block_size)             # before anything is written
        return cls(write_ids(path, windows, tokenizer.vocab_size), masking)

    def rows(self, split: str, indices: Sequence[int]) -> Tensor:
        """The windows of ``split`` at ``indices``, as an int64 tensor (batch, block)."""
        return torch.from_numpy(np.asarray(self.splits[split][np.asarray(indices)], dtype=np.int64))

    def validation_batches(self, batch_size: int, n_batches: int, seed: int) -> list[MLMBatch]:
        """Up to ``n_batches`` batches of the validation windows in order, masked once from ``seed``:
        the same batches at every evaluation."""
        generator = torch.Generator().manual_seed(seed)
        n = min(len(self.splits["val"]), batch_size * n_batches)
        return [self.masking.mask(self.rows("val", range(i, min(i + batch_size, n))), generator)
                for i in range(0, n, batch_size)]


class MaskedWindowStream(DrawnBatches):
    """Micro-batches of ``batch_size`` random windows of ``split``, freshly masked, from ``seed``.

    Every rank draws every rank's window indices and masking noise (fixed shapes, so nothing is
    read for them) and keeps its own: rank r of ``world`` gets global micro-batches r, r+world, ..."""

    def __init__(self, data: MLMData, split: str, batch_size: int, seed: int, *, rank: int = 0, world: int = 1):
        super().__init__(seed, rank=rank, world=world)
        self.data, self.split, self.batch_size = data, split, batch_size

    def draw(self) -> tuple[Tensor, Noise]:
        indices = torch.randint(len(self.data.splits[self.split]), (self.batch_size,), generator=self.generator)
        return indices, self.data.masking.draw((self.batch_size, self.data.block_size), self.generator)

    def collate(self, drawn: tuple[Tensor, Noise]) -> MLMBatch:
        indices, noise = drawn
        return self.data.masking.apply(self.data.rows(self.split, indices.tolist()), noise)


__all__ = ["MLMBatch", "Masking", "Noise", "MLMData", "MaskedWindowStream", "pack_lines", "read_ids",
           "MASK_PROB", "MASK_SHARE", "RANDOM_SHARE", "IGNORE"]
