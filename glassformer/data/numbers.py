"""The built-in translation task: numbers written out in words, between languages.

German → English by default:  ``vierunddreißigtausendfünfhundertsiebenundsechzig``
→ ``thirty-four thousand, five hundred and sixty-seven``.  The German is one
compound read units-before-tens ("vier-und-dreißig"), the English is split into
words tens-before-units: exactly the reordering and segmentation attention
has to learn.  Text comes from the ``num2words`` package, so the corpus is
built on any machine, deterministically from a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from num2words import CONVERTER_CLASSES, num2words

from ..errors import ConfigError


@dataclass
class NumberCorpus:
    """Parallel splits; train, valid and test hold disjoint numbers."""

    train: list[tuple[str, str]]
    valid: list[tuple[str, str]]
    test: list[tuple[str, str]]
    numbers: dict[str, list[int]]


def spell(n: int, lang: str) -> str:
    return num2words(n, lang=lang)


def number_corpus(
    src_lang: str = "de",
    tgt_lang: str = "en",
    *,
    max_number: int = 99_999,
    n_train: int | None = None,
    n_valid: int = 1000,
    n_test: int = 2000,
    seed: int = 0,
) -> NumberCorpus:
    """Draw disjoint sets of numbers from [0, max_number] and spell each in both languages.

    ``n_train=None`` uses every number not in valid or test.
    """
    for lang in (src_lang, tgt_lang):
        if lang not in CONVERTER_CLASSES:
            raise ConfigError(f"language {lang!r} is not supported by num2words; choose one of "
                              f"{', '.join(sorted(CONVERTER_CLASSES))}")
    if src_lang == tgt_lang:
        raise ConfigError(f"source and target language are both {src_lang!r}; choose two different languages")
    population = max_number + 1
    n_train = population - n_valid - n_test if n_train is None else n_train
    if min(n_train, n_valid, n_test) < 1 or n_train + n_valid + n_test > population:
        raise ConfigError(f"cannot draw {n_train}+{n_valid}+{n_test} disjoint numbers from 0..{max_number}")
    order = list(range(population))
    random.Random(seed).shuffle(order)
    parts = {"test": order[:n_test], "valid": order[n_test:n_test + n_valid],
             "train": order[n_test + n_valid:n_test + n_valid + n_train]}
    pairs = {name: [(spell(n, src_lang), spell(n, tgt_lang)) for n in nums] for name, nums in parts.items()}
    return NumberCorpus(pairs["train"], pairs["valid"], pairs["test"], parts)
