"""The built-in translation task: numbers written out in words, between languages.

German → English by default:  ``vierunddreißigtausendfünfhundertsiebenundsechzig``
→ ``thirty-four thousand, five hundred and sixty-seven``.  The German is one
compound read units-before-tens ("vier-und-dreißig"), the English is split into
words tens-before-units: exactly the reordering and segmentation attention
has to learn.  Text comes from the ``num2words`` package, so the corpus is
built on any machine, deterministically from a seed.

The splits are stratified by magnitude (0–99, 100–999, 1,000–9,999, ...).  A
uniform draw of 2,000 test numbers from 0..99,999 holds about 2 numbers below
100 and 18 below 1,000, too few to say anything about the inputs people type
first; so each range gets its proportional share of the test set, raised to a
floor (``min_test_per_range``, at most ``max_test_fraction`` of the range).  The
test figures per range are then measured on numbers never seen in training,
and the overall test figure is a slightly small-number-heavy mix of them.

People do not always write what ``num2words`` writes: German says 100 and 1,000
as "hundert" / "tausend" as often as "einhundert" / "eintausend", and likewise
inside numbers ("hunderteins", "tausendzweihundert", "zweitausendhundert").
Every number with such a form has them in its split's ``spoken`` pairs (the
written form stays in ``train`` / ``valid`` / ``test``), so the held-out
spoken forms belong to numbers never seen in training in any form.

Zero is always in training: "null" / "zero" occur in no other number, so no
model could translate it without having seen it, and holding it out would
test luck, not generalisation.  Every other number's words also occur inside
larger numbers ("elf" in "dreihundertelf"), which is what a held-out small
number tests.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from num2words import CONVERTER_CLASSES, num2words

from ..errors import ConfigError


@dataclass
class NumberCorpus:
    """Parallel splits; train, valid and test hold disjoint numbers (``numbers[split]`` aligned with the pairs).

    ``spoken[split]``: the spoken forms (:func:`spoken_forms`) of that split's numbers as source, with the
    same target, ``spoken_numbers[split]`` aligned with them; empty lists for a source language without any."""

    train: list[tuple[str, str]]
    valid: list[tuple[str, str]]
    test: list[tuple[str, str]]
    numbers: dict[str, list[int]]
    spoken: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    spoken_numbers: dict[str, list[int]] = field(default_factory=dict)


def spell(n: int, lang: str) -> str:
    return num2words(n, lang=lang)


# German: "ein" before "hundert" or "tausend" where it counts one hundred or one thousand, i.e. where a number
# part starts (the word's start, after a space, after "tausend"), may be left out: "einhunderteins" ->
# "hunderteins", "zweitausendeinhundert" -> "zweitausendhundert".  Not elsewhere: in "hunderteintausend"
# (101,000) the "ein" counts the thousands after "hundert", and "hunderttausend" is 100,000.
_GERMAN_ONE = re.compile(r"(?:^|(?<=\s)|(?<=tausend))ein(?=hundert|tausend)")


def spoken_forms(written: str, lang: str) -> list[str]:
    """The other ways people write a number that :func:`spell` writes ``written`` in ``lang``, e.g. German
    1,100 ``eintausendeinhundert`` -> ``["eintausendhundert", "tausendeinhundert", "tausendhundert"]``
    (every "ein" of one hundred / one thousand left out or kept, at least one left out); ``[]`` for a
    number or a language with none."""
    if lang != "de":
        return []
    first, *rest = _GERMAN_ONE.split(written)               # the text around each "ein" that may go
    return [first + "".join(one + piece for one, piece in zip(ones, rest))
            for ones in itertools.product(("ein", ""), repeat=len(rest)) if "" in ones]


def number_ranges(max_number: int) -> list[range]:
    """Ranges by magnitude: 0–99, 100–999, 1,000–9,999, ..., the last one ending at ``max_number``."""
    if max_number < 0:
        raise ConfigError(f"max_number={max_number} is negative; give a number >= 0")
    ranges, low, high = [], 0, 100
    while low <= max_number:
        ranges.append(range(low, min(high, max_number + 1)))
        low, high = high, high * 10
    return ranges


def range_label(numbers: range) -> str:
    """``range(100, 1000)`` -> ``"100-999"`` (the key used in results files)."""
    return f"{numbers.start}-{numbers.stop - 1}"


def stratified_sizes(sizes: list[int], n: int, min_per_range: int = 0, max_fraction: float = 1.0) -> list[int]:
    """How many of ``n`` draws each range gets: its proportional share of ``n`` (largest remainders),
    raised to ``min(min_per_range, max_fraction × its size, n // len(sizes))``; the largest range gives up
    what the raised ones took.  The result sums to ``n`` and never exceeds a range's size."""
    total = sum(sizes)
    if not 0 <= n <= total:
        raise ConfigError(f"cannot draw {n} numbers from {total}")
    exact = [n * s / total for s in sizes]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(sizes)), key=lambda i: shares[i] - exact[i])[: n - sum(shares)]:
        shares[i] += 1
    floors = [min(min_per_range, int(max_fraction * s), n // len(sizes), s) for s in sizes]
    out = [max(f, s) for f, s in zip(floors, shares)]
    largest = max(range(len(sizes)), key=lambda i: sizes[i])
    out[largest] -= sum(out) - n
    if out[largest] < floors[largest]:
        raise ConfigError(f"cannot draw {n} numbers with at least {min_per_range} from each of {len(sizes)} ranges")
    return out


def number_corpus(
    src_lang: str = "de",
    tgt_lang: str = "en",
    *,
    max_number: int = 99_999,
    n_train: int | None = None,
    n_valid: int = 1000,
    n_test: int = 2000,
    min_test_per_range: int = 50,
    max_test_fraction: float = 0.2,
    always_train: Sequence[int] = (0,),
    seed: int = 0,
) -> NumberCorpus:
    """Draw disjoint sets of numbers from [0, max_number] and spell each in both languages.

    Test: per range of :func:`number_ranges`, its share of ``n_test`` by
    :func:`stratified_sizes` (with the defaults and ``n_test=2000``: 20 of 0–99,
    50 of 100–999, 180 of 1,000–9,999, 1,750 of 10,000–99,999).  Validation: a
    proportional share of each range of the rest, so it costs the small ranges
    (nearly) nothing.  Train: every remaining number, or a uniform draw of
    ``n_train`` of them.  ``always_train`` numbers are never drawn for test or
    validation (and are in train unless ``n_train`` leaves them out).  Each
    split is in a seeded random order; the same arguments give the same corpus.
    Each split's spoken forms (``spoken``) are those of its own numbers, every one of them.
    """
    for lang in (src_lang, tgt_lang):
        if lang not in CONVERTER_CLASSES:
            raise ConfigError(f"language {lang!r} is not supported by num2words; choose one of "
                              f"{', '.join(sorted(CONVERTER_CLASSES))}")
    if src_lang == tgt_lang:
        raise ConfigError(f"source and target language are both {src_lang!r}; choose two different languages")
    if not 0.0 <= max_test_fraction <= 1.0:
        raise ConfigError(f"max_test_fraction={max_test_fraction} must be between 0 and 1")
    population = max_number + 1
    n_train = population - n_valid - n_test if n_train is None else n_train
    if min(n_train, n_valid, n_test) < 1 or n_train + n_valid + n_test > population:
        raise ConfigError(f"cannot draw {n_train}+{n_valid}+{n_test} disjoint numbers from 0..{max_number}")
    rng = random.Random(seed)
    kept = set(always_train)
    ranges = [[n for n in r if n not in kept] for r in number_ranges(max_number)]   # those that may be held out
    for numbers in ranges:
        rng.shuffle(numbers)
    sizes = [len(r) for r in number_ranges(max_number)]
    test_sizes = stratified_sizes(sizes, n_test, min_test_per_range, max_test_fraction)
    valid_sizes = stratified_sizes([s - t for s, t in zip(sizes, test_sizes)], n_valid)
    if any(t + v > len(r) for r, t, v in zip(ranges, test_sizes, valid_sizes)):
        raise ConfigError(f"cannot hold out {n_test}+{n_valid} numbers of 0..{max_number} besides {sorted(kept)}")
    parts = {
        "test": [n for r, t in zip(ranges, test_sizes) for n in r[:t]],
        "valid": [n for r, t, v in zip(ranges, test_sizes, valid_sizes) for n in r[t:t + v]],
        "train": [n for r, t, v in zip(ranges, test_sizes, valid_sizes) for n in r[t + v:]]
        + sorted(n for n in kept if 0 <= n <= max_number),
    }
    for numbers in parts.values():
        rng.shuffle(numbers)
    parts["train"] = parts["train"][:n_train]
    pairs = {name: [(spell(n, src_lang), spell(n, tgt_lang)) for n in nums] for name, nums in parts.items()}
    spoken = {name: [(n, (form, tgt)) for n, (src, tgt) in zip(nums, pairs[name])
                     for form in spoken_forms(src, src_lang)] for name, nums in parts.items()}
    return NumberCorpus(pairs["train"], pairs["valid"], pairs["test"], parts,
                        spoken={name: [pair for _, pair in rows] for name, rows in spoken.items()},
                        spoken_numbers={name: [n for n, _ in rows] for name, rows in spoken.items()})
