"""The built-in classification task: in which language is this number written?

    "vierunddreißig" -> de      "trente-quatre" -> fr      "thirty-four" -> en      "trentaquattro" -> it

Numbers spelled out by ``num2words`` in seven languages it writes well (de, en, es, fr, it,
nl, pt), so the data set is built offline, on any machine, the same from the same seed.
Long numbers are easy (a compound like "duizendtweehonderd" can only be Dutch); the short
ones are the test: "tre" (it) against "tres" (es) against "três" (pt), "drie" (nl) against
"drei" (de).

* Every example is a different number, so train, valid and test hold disjoint numbers.
* Numbers are drawn in equal shares from each magnitude (0–99, 100–999, ..., up to
  ``max_number``; a range too small for its share gives all it has), so short numbers are
  not a rounding error of the set.
* Within each split the languages take turns in a shuffled order: the classes are balanced.
* A spelling two languages share ("elf" in de and nl, "six" in en and fr, "mil" in es and pt)
  has no right answer; such a (number, language) goes to another language that spells the
  number its own way.  These collisions are all the same number read alike, and occur only
  below 1,000 and at round thousands (checked for these languages over 0–19,999 and 60,000
  numbers drawn up to 999,999), so only those numbers are spelled in every language.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import ConfigError
from .classify import Example
from .numbers import number_ranges, spell

LANGUAGES = ("de", "en", "es", "fr", "it", "nl", "pt")
NAME = "number-language"


@dataclass
class NumberLanguageCorpus:
    """Labelled splits (label = language code); ``numbers[split]`` aligned with the examples."""

    train: list[Example]
    valid: list[Example]
    test: list[Example]
    numbers: dict[str, list[int]]
    labels: list[str]


def _may_collide(n: int) -> bool:
    return n < 1000 or n % 1000 == 0


def number_language_corpus(n_train: int = 7000, n_valid: int = 700, n_test: int = 1400, *,
                           languages: tuple[str, ...] = LANGUAGES, max_number: int = 999_999,
                           seed: int = 0) -> NumberLanguageCorpus:
    """Seeded train / valid / test splits of (number words, language) examples."""
    from num2words import CONVERTER_CLASSES

    unknown = [lang for lang in languages if lang not in CONVERTER_CLASSES]
    if unknown or len(set(languages)) < 2:
        raise ConfigError(f"languages={list(languages)} is invalid; give two or more of num2words' languages "
                          f"({', '.join(sorted(CONVERTER_CLASSES))})")
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    if any(not isinstance(n, int) or n < 1 for n in sizes.values()):
        raise ConfigError(f"split sizes {sizes} are invalid; each must be a positive integer")
    total = sum(sizes.values())
    if total > max_number + 1:
        raise ConfigError(f"{total} examples need as many different numbers, but 0..{max_number} holds "
                          f"{max_number + 1}; raise max_number or ask for fewer")
    rng = random.Random(seed)
    numbers = _draw(number_ranges(max_number), total, rng)
    rng.shuffle(numbers)
    corpus: dict[str, list[Example]] = {}
    split_numbers: dict[str, list[int]] = {}
    start = 0
    for split, size in sizes.items():
        chosen = numbers[start:start + size]
        start += size
        turns = [languages[i % len(languages)] for i in range(size)]
        rng.shuffle(turns)
        corpus[split] = [Example(*_spelled(n, lang, languages)) for n, lang in zip(chosen, turns)]
        split_numbers[split] = chosen
    return NumberLanguageCorpus(corpus["train"], corpus["valid"], corpus["test"], split_numbers,
                                sorted(languages))


def _draw(ranges: list[range], total: int, rng: random.Random) -> list[int]:
    """``total`` different numbers, equal shares per range (water-filling: a small range gives all it has)."""
    shares, left, open_ranges = [0] * len(ranges), total, list(range(len(ranges)))
    while left and open_ranges:
        each = max(1, left // len(open_ranges))
        for i in list(open_ranges):
            take = min(each, len(ranges[i]) - shares[i], left)
            shares[i] += take
            left -= take
            if shares[i] == len(ranges[i]):
                open_ranges.remove(i)
            if not left:
                break
    return [n for r, k in zip(ranges, shares) for n in rng.sample(r, k)]


def _spelled(n: int, lang: str, languages: tuple[str, ...]) -> tuple[str, str]:
    """(words, language): ``lang`` if its spelling of ``n`` is its own, else the next language that is."""
    if not _may_collide(n):
        return spell(n, lang), lang
    spellings = {other: spell(n, other) for other in languages}
    shared = {text for text in spellings.values() if list(spellings.values()).count(text) > 1}
    start = languages.index(lang)
    for other in languages[start:] + languages[:start]:
        if spellings[other] not in shared:
            return spellings[other], other
    raise ConfigError(f"{n} reads the same in every one of {list(languages)}; choose other languages")


__all__ = ["number_language_corpus", "NumberLanguageCorpus", "LANGUAGES", "NAME"]
