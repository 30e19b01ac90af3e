"""Captioned strips of digits, for the image-to-text model: ``train caption --dataset digits``.

    strip:    1 to ``max_digits`` of scikit-learn's 8×8 digit images side by side, left-aligned and padded
              with blank (0) to a fixed width of 8 · max_digits pixels: one (1, 8, 8 · max_digits) image
    caption:  the digits' English names, "seven two nine"

The split is of the 1,797 digit *images* (``data.images.split``: stratified, seeded; 20% test, 10% of
the rest validation) and only then are strips composed, each from the images of one part, so no image
of a validation or test strip is ever seen in training.  Training strips are drawn afresh for every
batch by :class:`CaptionStream` (resumable: its state is its generator's); validation and test strips
are fixed sets composed once from (seed, part).

The vocabulary is word-level: the four special tokens and the ten names (:func:`word_tokenizer`).
A batch is ``CaptionBatch(images, tgt_in = BOS + names, tgt_out = names + EOS, n_tokens)``, padded to
``max_digits + 1`` positions: one shape for every batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError
from ..tokenizers import Tokenizer
from ..tokenizers.tokenizer import SPECIAL_TOKENS, UNK
from .batching import Batch
from .images import ImageSet, load_digits, load_image, shift_images, split
from .streams import DrawnBatches

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def word_tokenizer(words=DIGIT_NAMES) -> Tokenizer:
    """A word-level tokenizer: ``<pad> <s> </s> <unk>`` then ``words``, split on whitespace, decoded
    with single spaces; any other word is ``<unk>``."""
    import tokenizers
    from tokenizers import models, pre_tokenizers

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return Tokenizer(backend)


def caption_of(digits) -> str:
    """Digits (ints; negative = no digit) -> their names, "seven two nine"."""
    return " ".join(DIGIT_NAMES[int(d)] for d in digits if int(d) >= 0)


@dataclass
class CaptionSet:
    """Composed strips.  ``digits`` and ``sources`` are -1 past a strip's last digit."""

    images: Tensor             # (n, channels, 8, 8 · max_digits) float in [0, 1]
    digits: Tensor             # (n, max_digits) the digit shown in each slot
    sources: Tensor            # (n, max_digits) the index (in load_digits()) of the image in each slot

    @property
    def captions(self) -> list[str]:
        return [caption_of(row) for row in self.digits.tolist()]

    def __len__(self) -> int:
        return len(self.digits)


@dataclass
class CaptionBatch(Batch):
    images: Tensor             # (batch, channels, H, W)
    tgt_in: Tensor             # (batch, max_digits + 1): BOS + names, padded
    tgt_out: Tensor            # (batch, max_digits + 1): names + EOS, padded
    n_tokens: int              # real target tokens (the loss normaliser)


@dataclass
class CaptionData:
    """The digit images, which of them each part may use, and the fixed validation and test strips."""

    digits: ImageSet           # all 1,797 images
    pools: dict[str, Tensor]   # "train" / "valid" / "test" -> indices into ``digits`` (disjoint)
    valid: CaptionSet
    test: CaptionSet
    min_digits: int
    max_digits: int


def split_indices(data: ImageSet, seed: int) -> dict[str, Tensor]:
    """The image indices of each part: ``data.images.split`` applied to the indices themselves."""
    parts = split(ImageSet(torch.arange(len(data.labels)), data.labels, data.classes), seed)
    return {"train": parts.train.images, "valid": parts.valid.images, "test": parts.test.images}


def compose(data: ImageSet, pool: Tensor, n: int, min_digits: int, max_digits: int,
            generator: torch.Generator) -> CaptionSet:
    """``n`` strips of min_digits..max_digits images drawn (with replacement) from ``pool``."""
    counts = torch.randint(min_digits, max_digits + 1, (n,), generator=generator)
    picks = pool[torch.randint(len(pool), (n, max_digits), generator=generator)]          # (n, max_digits)
    used = torch.arange(max_digits)[None] < counts[:, None]
    tiles = data.images[picks] * used[:, :, None, None, None]                             # (n, k, c, h, w)
    strips = tiles.permute(0, 2, 3, 1, 4).flatten(3)                                       # (n, c, h, k·w)
    return CaptionSet(strips, data.labels[picks].masked_fill(~used, -1), picks.masked_fill(~used, -1))


def load_caption_data(seed: int, *, min_digits: int = 1, max_digits: int = 3, valid_strips: int = 500,
                      test_strips: int = 1000) -> CaptionData:
    """Split the digit images by ``seed`` and compose the fixed validation and test strips."""
    if not 1 <= min_digits <= max_digits:
        raise ConfigError(f"min_digits={min_digits} and max_digits={max_digits} are invalid; "
                          "they must satisfy 1 <= min_digits <= max_digits")
    data = load_digits()
    pools = split_indices(data, seed)
    sets = {part: compose(data, pools[part], n, min_digits, max_digits,
                          torch.Generator().manual_seed(seed * 1_000_003 + i))
            for i, (part, n) in enumerate((("valid", valid_strips), ("test", test_strips)), 1)}
    return CaptionData(data, pools, sets["valid"], sets["test"], min_digits, max_digits)


class CaptionBatcher:
    """Strips -> teacher-forcing batches, with the tokenizer's ids for the names and the special tokens."""

    def __init__(self, tokenizer: Tokenizer):
        ids = [tokenizer.token_to_id(name) for name in DIGIT_NAMES]
        missing = [name for name, i in zip(DIGIT_NAMES, ids) if i is None]
        if missing:
            raise ConfigError(f"the tokenizer lacks the digit names {missing}")
        self.name_ids = torch.tensor(ids)
        self.pad_id, self.bos_id, self.eos_id = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id

    def __call__(self, strips: CaptionSet) -> CaptionBatch:
        n = len(strips)
        used = strips.digits >= 0
        names = self.name_ids[strips.digits.clamp_min(0)].masked_fill(~used, self.pad_id)   # (n, max_digits)
        pad = torch.full((n, 1), self.pad_id, dtype=torch.long)
        tgt_in = torch.cat([torch.full_like(pad, self.bos_id), names], dim=1)
        tgt_out = torch.cat([names, pad], dim=1)
        tgt_out[torch.arange(n), used.sum(1)] = self.eos_id
        return CaptionBatch(strips.images, tgt_in, tgt_out, int(used.sum()) + n)

    def batches(self, strips: CaptionSet, batch_size: int) -> list[CaptionBatch]:
        """The whole set in order, for evaluation."""
        return [self(CaptionSet(strips.images[i:i + batch_size], strips.digits[i:i + batch_size],
                                strips.sources[i:i + batch_size])) for i in range(0, len(strips), batch_size)]


class CaptionStream(DrawnBatches):
    """Endless micro-batches of ``batch_size`` fresh training strips from ``data.pools["train"]``.

    Every process draws every rank's micro-batch from the one seeded generator and keeps its own
    (rank r: the r-th of each ``world`` draws), as ``data.streams``, so that processes do not change
    what a run learns; the state is the generator's.  ``shift``: move each strip by up to that many
    pixels (zero-filled)."""

    def __init__(self, data: CaptionData, batcher: CaptionBatcher, batch_size: int, seed: int, *, shift: int = 0,
                 rank: int = 0, world: int = 1):
        super().__init__(seed * 1_000_003, rank=rank, world=world)
        self.data, self.batcher, self.batch_size, self.shift = data, batcher, batch_size, shift

    def draw(self) -> CaptionSet:
        d = self.data
        strips = compose(d.digits, d.pools["train"], self.batch_size, d.min_digits, d.max_digits, self.generator)
        images = shift_images(strips.images, self.shift, self.generator) if self.shift else strips.images
        return CaptionSet(images, strips.digits, strips.sources)

    def collate(self, strips: CaptionSet) -> CaptionBatch:
        return self.batcher(strips)


def load_strip(path: str | Path | bytes, channels: int, height: int, width: int) -> Tensor:
    """One image file as (channels, height, width) floats in [0, 1] (ink bright on a dark ground, as the
    digits): exactly ``height`` pixels high and at most ``width`` wide; a narrower strip (fewer digits)
    is padded on the right with blank, as the training strips are."""
    return load_image(path, channels, height, max_width=width)


__all__ = ["DIGIT_NAMES", "word_tokenizer", "caption_of", "CaptionSet", "CaptionBatch", "CaptionData",
           "CaptionBatcher", "CaptionStream", "split_indices", "compose", "load_caption_data", "load_strip"]
