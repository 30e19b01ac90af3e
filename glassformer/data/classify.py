"""Labelled examples for sequence classification: reading them, naming the labels, batching them.

    text,label                          {"text": "wonderful film", "label": "pos"}
    wonderful film,pos                  {"text": "a dull hour", "label": "neg"}
    a dull hour,neg

A file is CSV (``.csv``, a header line naming the columns), TSV (``.tsv``, the same with
tabs, no quoting) or JSON lines (``.jsonl``, one object per line); UTF-8.  Each example
has a text, optionally a second text (``--text-pair-column``: entailment, paraphrase)
and a label: a class name, or a number for regression.  Anything unusable is one
:class:`InputError` naming the file, the line and what would be right.

Multi-label examples (``multi_label``: any number of classes per text, none included) hold
their class names separated by commas in a CSV/TSV cell (``"sci,space"``; empty for none), or
as a JSON list in a ``.jsonl`` file (``["sci", "space"]``); their targets are 0/1 per class.

The classes are the training labels, sorted (numerically when every label is a number,
so "2" comes before "10"); index = class id, stored as the model config's ``labels``.

Batches are padded to their longest example with ``[PAD]``; the attention mask is
True on real tokens.  :class:`ClassifyStream` deals out epochs of shuffled examples
from a seed and can say where it is (``state_dict``), like ``data.streams``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..errors import InputError
from .batching import Batch, pad
from .parallel import read_text
from .streams import EpochBatches

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass
class Example:
    """One labelled example; ``where`` ("FILE: line N") locates it for error messages."""

    text: str
    label: str | float | tuple[str, ...]  # a class name, a number (regression), or class names (multi-label)
    pair: str | None = None              # the second text of a sentence-pair task
    where: str = ""


# -- reading -------------------------------------------------------------------------------
def read_examples(path: str | Path, text_column: str = "text", label_column: str = "label",
                  pair_column: str | None = None, *, regression: bool = False, multi_label: bool = False
                  ) -> list[Example]:
    """The examples of a ``.csv``, ``.tsv`` or ``.jsonl`` file (labels as strings, floats with
    ``regression``, or tuples of names with ``multi_label``).  Blank lines are skipped."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: give a .csv, .tsv or .jsonl file (the suffix says which)")
    text = read_text(path).removeprefix("\ufeff")          # a spreadsheet's UTF-8 byte-order mark
    columns = {"text": text_column, "label": label_column, "pair": pair_column}
    rows = _jsonl_rows(text, path, columns) if kind == "jsonl" else _table_rows(text, path, columns, kind)
    examples = [_example(row, line, path, columns, regression, multi_label) for line, row in rows]
    if not examples:
        layout = ("one JSON object per line" if kind == "jsonl"
                  else "a header line naming the columns, then one example per line")
        raise InputError(f"{path} holds no examples; expected {layout}")
    return examples


_FLAGS = {"text": "--text-column", "label": "--label-column", "pair": "--text-pair-column"}


def _table_rows(text: str, path: Path, columns: dict, kind: str):
    """(line number, {column: value}) for each row of a CSV / TSV file; the header is checked first."""
    if kind == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        for role, name in columns.items():
            if name is not None and name not in header:
                raise InputError(f"{path}: line 1 (the header) has no column {name!r} ({_FLAGS[role]}); "
                                 f"its columns are {header}")
        index = {role: header.index(name) for role, name in columns.items() if name is not None}
        line = reader.line_num + 1
        for row in reader:
            if row and any(cell.strip() for cell in row):
                if len(row) != len(header):
                    sep = "tabs" if kind == "tsv" else "commas (quote a text that holds one)"
                    raise InputError(f"{path}: line {line} has {len(row)} fields but the header has {len(header)}; "
                                     f"separate exactly {len(header)} fields with {sep}")
                yield line, {role: row[i] for role, i in index.items()}
            line = reader.line_num + 1                    # a quoted field may span several lines
    except csv.Error as e:
        raise InputError(f"{path}: line {reader.line_num} is not valid {kind.upper()} ({e})") from None


def _jsonl_rows(text: str, path: Path, columns: dict):
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {line} is not valid JSON ({e.msg}); give one object per line") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}: line {line} must hold a JSON object, e.g. "
                             f"{{\"{columns['text']}\": \"...\", \"{columns['label']}\": \"...\"}}")
        for role, name in columns.items():
            if name is not None and name not in obj:
                raise InputError(f"{path}: line {line} has no field {name!r} ({_FLAGS[role]}); "
                                 f"its fields are {list(obj)}")
        yield line, {role: obj[name] for role, name in columns.items() if name is not None}


def _example(row: dict, line: int, path: Path, columns: dict, regression: bool, multi_label: bool) -> Example:
    where = f"{path}: line {line}"
    texts = {}
    for role in ("text", "pair"):
        if role not in row:
            continue
        value = row[role]
        what = "the text" if role == "text" else "the second text"
        if not isinstance(value, str):
            raise InputError(f"{where}: {what} ({columns[role]!r}) must be a string, found {json.dumps(value)}")
        if not value.strip():
            raise InputError(f"{where}: {what} ({columns[role]!r}) is empty; every example needs one")
        texts[role] = value
    label = (_label_set(row["label"], where, columns["label"]) if multi_label
             else _label(row["label"], where, columns["label"], regression))
    return Example(texts["text"], label, texts.get("pair"), where)


def _label_set(value: Any, where: str, column: str) -> tuple[str, ...]:
    """A multi-label example's class names, sorted: a JSON list, or names separated by commas."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or any(isinstance(v, (list, dict)) for v in value):
        raise InputError(f"{where}: the labels ({column!r}) {json.dumps(value)} are not class names; multi-label "
                         "examples need names separated by commas, or a JSON list of names")
    names = (v.strip() if isinstance(v, str) else json.dumps(v) for v in value)
    return tuple(sorted({name for name in names if name}, key=_label_order))


def _label(value: Any, where: str, column: str, regression: bool) -> str | float:
    if regression:
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            raise InputError(f"{where}: the label ({column!r}) {json.dumps(value)} is not a finite number; "
                             "--regression needs a number on every line")
        return float(number)
    name = value.strip() if isinstance(value, str) else (None if value is None else json.dumps(value))
    if not name:
        raise InputError(f"{where}: the label ({column!r}) is empty; every example needs a class name")
    return name


# -- labels --------------------------------------------------------------------------------
def label_names(train: Sequence[Example], valid: Sequence[Example] = (), *, train_name: str = "the training data"
                ) -> list[str]:
    """The class names of ``train``, sorted (numerically if all are numbers); a label of ``valid``
    that training never shows is an InputError naming it (no model could predict it)."""
    names = sorted({name for e in train for name in _names(e)}, key=_label_order)
    known = set(names)
    for e in valid:
        for name in _names(e):
            if name not in known:
                raise InputError(f"{e.where or 'validation'}: label {name!r} occurs only in validation, not in "
                                 f"{train_name}; its labels are {names[:20]}{' ...' if len(names) > 20 else ''}")
    return names


def _names(example: Example) -> tuple[str, ...]:
    """The class names of an example: one, or a multi-label example's several."""
    return example.label if isinstance(example.label, tuple) else (str(example.label),)


def _label_order(name: str):
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


# -- encoding and batches ------------------------------------------------------------------------
@dataclass
class ClassifyBatch(Batch):
    """Examples framed ``[CLS] A [SEP] (B [SEP])`` and padded to the longest of the batch."""

    tokens: Tensor       # (batch, seq) ids, [PAD] after the end
    segments: Tensor     # (batch, seq) 0 for the first text, 1 for the second
    mask: Tensor         # (batch, seq) bool, True = a real token
    targets: Tensor      # (batch,) class ids (long), numbers (float) for regression; (batch, labels) 0/1 multi-label
    n_tokens: int        # examples in the batch (the loss normaliser; counted on the CPU)


@dataclass
class ClassifyData:
    """Encoded examples: token ids, segments and targets, aligned."""

    ids: list[list[int]]
    segments: list[list[int]]
    targets: list[int] | list[float] | list[list[float]]
    pad_id: int
    regression: bool = False
    multi_label: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: Sequence[int]) -> ClassifyBatch:
        tokens = pad([self.ids[i] for i in indices], self.pad_id)
        segments = pad([self.segments[i] for i in indices], 0)
        mask = pad([[1] * len(self.ids[i]) for i in indices], 0).bool()
        dtype = torch.float32 if self.regression or self.multi_label else torch.long
        targets = torch.tensor([self.targets[i] for i in indices], dtype=dtype)
        return ClassifyBatch(tokens, segments, mask, targets, len(indices))

    def batches_in_order(self, batch_size: int) -> list[tuple[list[int], ClassifyBatch]]:
        """Every example once, in batches of similar length (little padding): (indices, batch) pairs."""
        order = sorted(range(len(self)), key=lambda i: len(self.ids[i]))
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        return [(chunk, self.batch(chunk)) for chunk in chunks]


def encode_examples(examples: Sequence[Example], tokenizer, labels: list[str] | None, max_len: int, *,
                    truncate: bool = True, multi_label: bool = False) -> tuple[ClassifyData, int]:
    """Tokenize ``examples`` for a model of ``max_len`` positions: (data, how many were cut).

    ``labels``: the class names (a label outside them is an InputError); None for regression.
    ``multi_label``: each example's target is 0/1 for every class (1 for the classes it names).
    Longer than ``max_len`` tokens ([CLS] and [SEP] included): cut (the longer text first), or
    with ``truncate=False`` an InputError naming the first such example."""
    if tokenizer.token_to_id("[CLS]") is None:
        raise InputError("classification needs a BERT tokenizer (with [CLS] and [SEP]); this one has neither")
    has_pairs = any(e.pair is not None for e in examples)
    pairs = [e.pair or "" for e in examples] if has_pairs else None
    ids, segments, cut = tokenizer.encode_sentences([e.text for e in examples], pairs, max_len=max_len)
    if not truncate and any(cut):
        first = examples[cut.index(True)]
        full = len(tokenizer.encode_sentences([first.text], [first.pair or ""] if has_pairs else None)[0][0])
        raise InputError(f"{first.where or 'an example'}: the text has {full} tokens, more than the {max_len} "
                         f"positions allowed; shorten it, or let it be cut (--truncate)")
    if labels is None:
        targets = [float(e.label) for e in examples]
    else:
        index = {name: i for i, name in enumerate(labels)}
        targets = []
        for e in examples:
            if isinstance(e.label, tuple) and not multi_label:
                raise InputError(f"{e.where or 'an example'}: {len(e.label)} labels {list(e.label)} for a model "
                                 "with one label per example (multi_label is off)")
            for name in _names(e):
                if name not in index:
                    raise InputError(f"{e.where or 'an example'}: label {name!r} is not one of the model's labels "
                                     f"{labels[:20]}")
            if multi_label:
                targets.append([1.0 if name in _names(e) else 0.0 for name in labels])
            else:
                targets.append(index[str(e.label)])
    return ClassifyData(ids, segments, targets, tokenizer.pad_id, regression=labels is None,
                        multi_label=multi_label), sum(cut)


class ClassifyStream(EpochBatches):
    """Micro-batches of ``batch_size`` examples, epoch after epoch, each epoch shuffled from
    (seed, epoch); the last batch of an epoch may be smaller.  With ``world`` processes each
    keeps every ``world``-th batch of the one global sequence, starting at its ``rank``."""

    def __init__(self, data: ClassifyData, batch_size: int, seed: int, *, rank: int = 0, world: int = 1):
        super().__init__(rank=rank, world=world)
        self.data, self.batch_size, self.seed = data, batch_size, seed

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.data)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def collate(self, indices: list[int]) -> ClassifyBatch:
        return self.data.batch(indices)


__all__ = ["Example", "read_examples", "label_names", "ClassifyBatch", "ClassifyData", "encode_examples",
           "ClassifyStream", "SUFFIXES"]
