"""Reading a user's parallel corpus: two aligned text files, or one TSV / JSONL file with two columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import InputError
from ..files import why_unreadable


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file.  Missing, non-UTF-8 or binary (NUL bytes) is an InputError."""
    path = Path(path)
    if why := why_unreadable(path):
        raise InputError(f"file {path} {why}")
    return decode_text(path.read_bytes(), str(path))


def decode_text(data: bytes, where: str) -> str:
    """``data`` (the content of ``where``: a file, stdin) as UTF-8 text; invalid bytes or NUL bytes
    (a binary file) are an InputError naming ``where``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{where} is not UTF-8 text (invalid byte at offset {e.start}); convert it to UTF-8") from None
    if "\x00" in text:
        raise InputError(f"{where} looks like a binary file (it contains NUL bytes); give UTF-8 text")
    return text


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (newlines stripped); see :func:`read_text`."""
    return read_text(path).splitlines()


def check_no_empty(lines: list[str], path: str | Path) -> None:
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise InputError(f"{path}: line {i} is empty; every line must hold a sentence")


def read_parallel(src: str | Path, tgt: str | Path | None = None) -> list[tuple[str, str]]:
    """Pairs from two aligned files (``src``, ``tgt``), or from one ``.tsv`` / ``.jsonl`` file.

    JSONL lines are objects with two string fields (``src``/``tgt`` or ``source``/``target``,
    or any two) or two-element lists.
    """
    if tgt is not None:
        s, t = read_lines(src), read_lines(tgt)
        if len(s) != len(t):
            raise InputError(f"{src} has {len(s)} lines but {tgt} has {len(t)}; aligned files need equal line counts")
        check_no_empty(s, src)
        check_no_empty(t, tgt)
        pairs = list(zip(s, t))
    else:
        path = Path(src)
        lines = read_lines(path)
        if path.suffix.lower() == ".jsonl":
            pairs = [_jsonl_pair(line, path, i) for i, line in enumerate(lines, 1) if line.strip()]
        elif path.suffix.lower() in (".tsv", ".tab"):
            pairs = []
            for i, row in enumerate(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise InputError(f"{path}: line {i} must hold two non-empty tab-separated columns, found {len(row)}")
                pairs.append((row[0], row[1]))
        else:
            raise InputError(f"{path}: give two aligned files (--src and --tgt) or one .tsv / .jsonl file")
    if not pairs:
        raise InputError(f"{src} holds no sentence pairs")
    return pairs


def _jsonl_pair(line: str, path: Path, i: int) -> tuple[str, str]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {i} is not valid JSON ({e.msg})") from None
    if isinstance(obj, dict):
        for a, b in (("src", "tgt"), ("source", "target"), ("translation_src", "translation_tgt")):
            if a in obj and b in obj:
                obj = [obj[a], obj[b]]
                break
        else:
            obj = list(obj.values())
    if not (isinstance(obj, list) and len(obj) == 2 and all(isinstance(x, str) and x.strip() for x in obj)):
        raise InputError(f"{path}: line {i} must hold two non-empty strings (e.g. {{\"src\": ..., \"tgt\": ...}})")
    return obj[0], obj[1]
