"""A long-range probe: a synthetic translation task whose answer is one token far back in the source.

The notes' claim is that self-attention reaches any earlier token in one step, while a recurrent
network must carry it through every step in between.  The probe isolates that: the source is a
row of random symbols with one marked, the target is the marked symbol::

    source:  k c a h # f o b d n      (distance 3: the answer "f" has 3 symbols after it, 3 before the marker)
    target:  f

The answer sits ``distance`` symbols before the end of the source, and the marker has as many
distractors before it.  Both sides are needed: a bidirectional encoder reads the source from
either end, so an answer near one end would be read last by one of its directions (recalling
the *first* token is easy for the backward LSTM of a bidirectional encoder, whatever the
distance).  Here, from either end, the answer is ``distance`` steps away.  The answer is drawn
from the same symbols as the distractors, so only the marker tells where it is.

Symbols are single lower-case letters separated by spaces, so a BPE trained on the data gives one
token per symbol (``▁f``).  Training holds examples of every distance; the held-out test set has
``n_test`` examples per distance, none of whose sources occurs in training or validation.
Everything is drawn from ``seed``: the same arguments give the same probe.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError

MARKER = "#"
MAX_SYMBOLS = 26


@dataclass
class RecallProbe:
    """Parallel splits of the recall task: ``test[distance]`` the held-out pairs of each distance."""

    train: list[tuple[str, str]]
    valid: list[tuple[str, str]]
    test: dict[int, list[tuple[str, str]]]
    distances: list[int]
    symbols: list[str]


def recall_example(answer: str, before: Sequence[str], after: Sequence[str]) -> tuple[str, str]:
    """``before`` distractors, the marker, ``answer``, ``after`` distractors -> (source, target)."""
    return " ".join([*before, MARKER, answer, *after]), answer


def answer_of(source: str) -> tuple[str, int]:
    """The answer a source asks for and its distance (the symbols after it): the reference the
    generator's pairs are checked against."""
    words = source.split()
    at = words.index(MARKER) + 1
    return words[at], len(words) - at - 1


def recall_probe(distances: Sequence[int] = (2, 4, 8, 16, 32), *, n_train: int = 1000, n_valid: int = 50,
                 n_test: int = 100, n_symbols: int = 16, seed: int = 0) -> RecallProbe:
    """``n_train`` training, ``n_valid`` validation and ``n_test`` held-out test examples per distance.

    A source of distance d has 2d + 2 symbols: d distractors, the marker, the answer, d distractors;
    each distractor and the answer drawn uniformly from ``n_symbols`` letters.  Validation and test
    sources are distinct from each other and from training (drawn again on a collision)."""
    distances = list(distances)
    if not distances or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in distances):
        raise ConfigError(f"probe distances must be positive integers, got {distances}")
    if len(set(distances)) != len(distances):
        raise ConfigError(f"probe distances {distances} repeat a distance; give each once")
    if not 2 <= n_symbols <= MAX_SYMBOLS:
        raise ConfigError(f"n_symbols={n_symbols} is invalid; the probe draws from 2 to {MAX_SYMBOLS} letters")
    for name, n in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{name}={n!r} is invalid; it must be a positive integer")
    symbols = list(string.ascii_lowercase[:n_symbols])
    rng = random.Random(seed)
    train, valid, test = [], [], {}
    for d in sorted(distances):
        possible = n_symbols ** (2 * d + 1)
        if n_valid + n_test > possible // 2:
            raise ConfigError(f"distance {d} has only {possible:,} different sources with {n_symbols} symbols; "
                              f"too few to hold out {n_valid + n_test:,}: use longer distances or more symbols")

        def draw() -> tuple[str, str]:
            return recall_example(rng.choice(symbols), rng.choices(symbols, k=d), rng.choices(symbols, k=d))

        pairs = [draw() for _ in range(n_train)]
        seen = {src for src, _ in pairs}
        held: list[tuple[str, str]] = []
        while len(held) < n_valid + n_test:
            pair = draw()
            if pair[0] not in seen:
                seen.add(pair[0])
                held.append(pair)
        train += pairs
        valid += held[:n_valid]
        test[d] = held[n_valid:]
    rng.shuffle(train)
    rng.shuffle(valid)
    return RecallProbe(train, valid, test, sorted(distances), symbols)


__all__ = ["MARKER", "RecallProbe", "answer_of", "recall_example", "recall_probe"]
