"""Instruction data: the built-in numbers task, and the readers of a user's JSONL rows.

The built-in task (:data:`NUMBERS_INSTRUCT`) needs no download: questions about numbers whose
answers a program checks exactly, in four kinds, built from a seed::

    words    "Write 4,071 in English words."                  -> "four thousand and seventy-one"
    add      "What is 38 + 57?"                               -> "95"
    compare  "Which is larger, 812 or 821?"                   -> "821"
    german   "Translate 'dreihundertzwölf' into English."     -> "three hundred and twelve"

The words are ``num2words``' (:func:`glassformer.data.numbers.spell`, the translation task's).
The numbers 0..9,999 are split once per seed into train (85%), valid (5%) and test (10%); every
number a question or its answer holds is of its split's share, so the test questions hold numbers
never seen in training (the digits 0..9 are all in training: ten are too few to share).
Numbers are drawn by magnitude (1, 2, 3 or 4 digits equally often), so short ones are not rare.

Preference pairs (:func:`numbers_preferences`) set the right answer against a plausible wrong
one: a number off by one or ten or with two digits swapped, spelled or written as the right one
is; for "which is larger", the smaller number.

The readers (:func:`read_sft_rows`, :func:`read_preference_rows`, :func:`read_prompt_rows`)
refuse a bad row in one line: ``FILE line N: <what is wrong>; <what is right>``.  Each row they
return is a dict that also knows where it came from (``row.source``, ``row.line``), so a later
check (an empty response after tokenisation, a prompt longer than the context) names the line too.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from .numbers import spell

NUMBERS_INSTRUCT = "numbers-instruct"
KINDS = ("words", "add", "compare", "german")
SPLITS = {"train": 0.85, "valid": 0.05, "test": 0.10}      # shares of 0..MAX_NUMBER
MAX_NUMBER = 9_999
ROLES = ("system", "user", "assistant")


@dataclass
class Instruction:
    prompt: str
    answer: str
    kind: str                                   # "words" | "add" | "compare" | "german"
    numbers: tuple[int, ...] = field(default=(), compare=False)   # every number in the question and answer


# -- the built-in task --------------------------------------------------------------------------------
def split_numbers(seed: int = 0) -> dict[str, list[list[int]]]:
    """0..9,999 shared out between the splits (:data:`SPLITS`) from ``seed``, each split's share kept by
    magnitude: ``[1 digit, 2 digits, 3 digits, 4 digits]`` sorted lists.  The ten digits are all in
    train: too few to share, and "zero" is in no other number's words."""
    rng = random.Random(seed)
    parts: dict[str, list[list[int]]] = {name: [] for name in SPLITS}
    parts["train"].append(list(range(10)))
    for name in ("valid", "test"):
        parts[name].append([])
    for low, high in ((10, 100), (100, 1000), (1000, MAX_NUMBER + 1)):
        numbers = list(range(low, high))
        rng.shuffle(numbers)
        start = 0
        for i, (name, share) in enumerate(SPLITS.items()):
            count = len(numbers) - start if i == len(SPLITS) - 1 else max(1, round(share * len(numbers)))
            parts[name].append(sorted(numbers[start:start + count]))
            start += count
    return parts


def _check_split(split: str, n: int) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is invalid; choose one of {list(SPLITS)}")
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"n={n!r} is invalid; give a positive number of questions")


class _Draw:
    """Numbers of one split, drawn by magnitude."""

    def __init__(self, pools: list[list[int]], rng: random.Random):
        self.pools, self.rng = pools, rng
        self.members = {n for pool in pools for n in pool}

    def number(self, max_digits: int = 4, min_digits: int = 1) -> int:
        pools = [pool for pool in self.pools[min_digits - 1:max_digits] if pool]   # (no digits outside train)
        return self.rng.choice(self.rng.choice(pools))

    def near(self, n: int) -> int:
        """A plausible mistake for ``n``: off by one or ten, or two adjacent digits swapped (>= 0, != n)."""
        digits = str(n)
        swaps = [int(digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]) for i in range(len(digits) - 1)
                 if digits[i] != digits[i + 1] and not (i == 0 and digits[1] == "0")]
        choices = [m for m in (n - 1, n + 1, n - 10, n + 10, *swaps) if m >= 0 and m != n]
        return self.rng.choice(choices)


def _question(kind: str, draw: _Draw) -> tuple[Instruction, str]:
    """One question of ``kind`` and a plausible wrong answer to it."""
    rng = draw.rng
    if kind in ("words", "german"):
        n = draw.number()
        wrong = draw.near(n)
        asked = f"Write {n:,} in English words." if kind == "words" else \
            f"Translate '{spell(n, 'de')}' into English."
        return Instruction(asked, spell(n, "en"), kind, (n,)), spell(wrong, "en")
    if kind == "add":
        while True:                              # the sum also of this split's numbers
            a, b = draw.number(3), draw.number(3)
            if a + b in draw.members:
                break
        return Instruction(f"What is {a} + {b}?", str(a + b), kind, (a, b, a + b)), str(draw.near(a + b))
    # compare: often the same digits in another order (the hard case), else any number as long
    while True:
        a = draw.number(4, 2)
        digits = list(str(a))
        rng.shuffle(digits)
        b = int("".join(digits)) if rng.random() < 0.5 and digits[0] != "0" else draw.number(len(str(a)), len(str(a)))
        if b != a and b in draw.members:
            break
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    return (Instruction(f"Which is larger, {first} or {second}?", str(max(a, b)), kind, (a, b)),
            str(min(a, b)))


def _questions(split: str, n: int, seed: int) -> list[tuple[Instruction, str]]:
    _check_split(split, n)
    pools = split_numbers(seed)[split]
    rng = random.Random(f"{seed}/{split}")
    kinds = [KINDS[i % len(KINDS)] for i in range(n)]
    rng.shuffle(kinds)
    draw = _Draw(pools, rng)
    return [_question(kind, draw) for kind in kinds]


def numbers_instructions(split: str = "train", n: int = 2000, seed: int = 0) -> list[Instruction]:
    """``n`` questions of ``split`` (train, valid or test), the four kinds in equal shares, from ``seed``;
    the test and valid questions hold numbers never seen in train."""
    return [instruction for instruction, _ in _questions(split, n, seed)]


def numbers_preferences(split: str = "train", n: int = 2000, seed: int = 0) -> list[dict[str, str]]:
    """``n`` preference pairs ``{"prompt", "chosen", "rejected"}``: the question's right answer against
    a plausible wrong one (the same questions as :func:`numbers_instructions` with these arguments)."""
    return [{"prompt": q.prompt, "chosen": q.answer, "rejected": wrong} for q, wrong in _questions(split, n, seed)]


def completion_answer(completion: str) -> str:
    """The answer a completion gives: its first line, stripped."""
    lines = completion.strip().splitlines()
    return lines[0].strip() if lines else ""


def is_correct(answer: str, completion: str) -> bool:
    """Whether ``completion`` (its first line, stripped) is exactly ``answer``."""
    return completion_answer(completion) == answer.strip()


# -- the readers of a user's rows ---------------------------------------------------------------------
class Row(dict):
    """A row read from a file: a plain dict that knows its file and line (``source``, ``line``)."""

    source: str = ""
    line: int = 0

    def where(self) -> str:
        return f"{self.source} line {self.line}" if self.source else "a row"


def _rows(path: str | Path, what: str):
    """(line number, JSON object) of each non-blank line of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is not a file; give a JSONL file of {what}, or {NUMBERS_INSTRUCT!r}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); give a JSONL file of {what}") from None
    found = False
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path} line {number}: not valid JSON ({e.msg}, column {e.colno}); each line must be "
                             f"one JSON object of {what}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path} line {number}: a JSON {type(data).__name__}, not an object; each line must be "
                             f"one JSON object of {what}")
        found = True
        row = Row(data)
        row.source, row.line = str(path), number
        yield row
    if not found:
        raise InputError(f"{path} holds no rows; give one JSON object of {what} per line")


def _text(row: Row, key: str, right: str, *, empty_ok: bool = False) -> str:
    if key not in row:
        raise InputError(f"{row.where()}: no {key!r} field (it has {sorted(row)}); {right}")
    value = row[key]
    if not isinstance(value, str):
        raise InputError(f"{row.where()}: {key!r} is a {type(value).__name__}, not a string; {right}")
    if not empty_ok and not value.strip():
        raise InputError(f"{row.where()}: {key!r} is empty; {right}")
    return value


def _messages(row: Row, key: str, right: str) -> list[dict[str, str]]:
    messages = row[key]
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{row.where()}: {key!r} must be a non-empty list of messages; {right}")
    for i, message in enumerate(messages, 1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
            raise InputError(f"{row.where()}: message {i} must be an object with a 'role' and a string 'content'; "
                             f"{right}")
        if message["role"] not in ROLES:
            raise InputError(f"{row.where()}: message {i} has the unknown role {message['role']!r}; the roles are "
                             f"{', '.join(ROLES)}")
    return messages


SFT_ROW = 'each row is {"prompt": "...", "response": "..."} or {"messages": [{"role": "user", "content": "..."}, ...]}'


def read_sft_rows(path: str | Path) -> list[dict]:
    """Supervised fine-tuning rows of a JSONL file: ``{"prompt", "response"}`` (``"completion"`` is
    read as ``"response"``) or ``{"messages": [{"role", "content"}, ...]}`` with at least one
    assistant message.  A bad row is refused in one line naming the file and line."""
    rows = []
    for row in _rows(path, "fine-tuning examples"):
        if "messages" in row:
            messages = _messages(row, "messages", SFT_ROW)
            if not any(m["role"] == "assistant" for m in messages):
                raise InputError(f"{row.where()}: no assistant message; the model learns the assistant's turns, "
                                 "give at least one")
            if any(m["role"] == "assistant" and not m["content"].strip() for m in messages):
                raise InputError(f"{row.where()}: an assistant message is empty; give the text the model should learn")
        else:
            if "response" not in row and "completion" in row:
                row["response"] = row.pop("completion")
            _text(row, "prompt", SFT_ROW, empty_ok=True)
            _text(row, "response", SFT_ROW)
        rows.append(row)
    return rows


PREFERENCE_ROW = 'each row is {"prompt": "...", "chosen": "...", "rejected": "..."}'


def read_preference_rows(path: str | Path) -> list[dict]:
    """Preference rows ``{"prompt", "chosen", "rejected"}`` of a JSONL file (the prompt a string or a
    list of messages); a row whose chosen answer equals its rejected one teaches nothing and is refused."""
    rows = []
    for row in _rows(path, "preference pairs"):
        if isinstance(row.get("prompt"), list):
            _messages(row, "prompt", PREFERENCE_ROW)
        else:
            _text(row, "prompt", PREFERENCE_ROW, empty_ok=True)
        chosen, rejected = _text(row, "chosen", PREFERENCE_ROW), _text(row, "rejected", PREFERENCE_ROW)
        if chosen.strip() == rejected.strip():
            raise InputError(f"{row.where()}: 'chosen' equals 'rejected'; a preference pair needs two different "
                             "answers")
        rows.append(row)
    return rows


PROMPT_ROW = 'each row is {"prompt": "...", ...} (any other fields are passed on)'


def read_prompt_rows(path: str | Path) -> list[dict]:
    """Prompt rows ``{"prompt", ...}`` of a JSONL file (the prompt a string or a list of messages);
    the other fields are kept as they are."""
    rows = []
    for row in _rows(path, "prompts"):
        if isinstance(row.get("prompt"), list):
            _messages(row, "prompt", PROMPT_ROW)
        else:
            _text(row, "prompt", PROMPT_ROW)
        rows.append(row)
    return rows


def where(row: dict[str, Any], index: int) -> str:
    """Where a row came from, for an error: ``FILE line N`` (a row read from a file), else ``row N``."""
    return row.where() if isinstance(row, Row) and row.source else f"row {index + 1}"


__all__ = ["NUMBERS_INSTRUCT", "KINDS", "SPLITS", "Instruction", "numbers_instructions", "numbers_preferences",
           "split_numbers", "is_correct", "completion_answer", "read_sft_rows", "read_preference_rows",
           "read_prompt_rows", "Row", "where"]
