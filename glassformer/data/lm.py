"""Language-model data: a text corpus as one array of token ids, read in random windows.

    text files ─► tokenizer ─► token ids, stored once on disk (``.npy``, uint16 or uint32)
               ─► memory-mapped; first 90% train, last 10% validation
               ─► batches of random windows: x = ids[i : i+block], y = ids[i+1 : i+block+1]

The ids are written once, next to the run, and memory-mapped, so a corpus larger
than memory costs nothing to hold and a batch reads only its own windows.  Window
starts come from a seeded ``torch.Generator``: the same seed gives the same batches.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..files import why_unreadable
from .batching import Batch
from .parallel import read_text

PYTHON_STDLIB = "python-stdlib"
TINY_SHAKESPEARE = "tiny-shakespeare"
# Text corpora shipped inside the package (glassformer/data/corpora/), by name.
SHIPPED_CORPORA = {TINY_SHAKESPEARE: Path(__file__).with_name("corpora") / "tinyshakespeare.txt"}
# The corpora that ship with glassformer (or with Python), by the name --data takes.
BUILTIN_CORPORA = {
    PYTHON_STDLIB: "this Python's standard library (its .py files, a few MB)",
    TINY_SHAKESPEARE: "Tiny Shakespeare (about 1.1 MB of the plays, public domain; Karpathy's char-rnn corpus)",
}
STDLIB_CAP_BYTES = 4_000_000       # a few MB of Python is plenty for a character/BPE toy model
VALIDATION_FRACTION = 0.1


def split_point(n: int) -> int:
    """Where ``n`` items (tokens, windows) split: the first 90% train, the rest validate."""
    return int(n * (1 - VALIDATION_FRACTION))


# -- reading text ------------------------------------------------------------------------
def stdlib_files(cap_bytes: int = STDLIB_CAP_BYTES) -> list[Path]:
    """The standard library's own ``.py`` files in sorted order (tests and site-packages
    left out), up to ``cap_bytes`` in total: the same list on every run of this Python."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files, total = [], 0
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts)
        if parts & {"site-packages", "test", "tests", "idlelib", "lib2to3"}:
            continue
        size = path.stat().st_size
        if total + size > cap_bytes:
            break
        files.append(path)
        total += size
    return files


def read_corpus(source: str | Path) -> list[str]:
    """The texts of ``source``: a text file, a folder (every file below it, sorted), or the name of a
    built-in corpus (``"python-stdlib"``, ``"tiny-shakespeare"``; :data:`BUILTIN_CORPORA`).  Raises
    :class:`InputError` for a missing, empty or binary input."""
    if str(source) == PYTHON_STDLIB:
        texts = []
        for path in stdlib_files():
            try:
                texts.append(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:      # a stray non-UTF-8 file in the stdlib is skipped, not fatal
                continue
    elif str(source) in SHIPPED_CORPORA:
        texts = [read_text(SHIPPED_CORPORA[str(source)])]
    else:
        path = Path(source)
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                raise InputError(f"folder {path} holds no files; give a text file or a folder of text files")
        else:
            raise InputError(f"{path} {why_unreadable(path)}; give a text file, a folder of text files or a built-in "
                             f"corpus ({', '.join(map(repr, BUILTIN_CORPORA))})")
        texts = [read_text(p) for p in files]
    if not any(t.strip() for t in texts):
        raise InputError(f"{source} holds no text; the corpus is empty")
    return texts


# -- token ids on disk -------------------------------------------------------------------
def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id: uint16 up to 65,536 tokens, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2 ** 16 else np.dtype(np.uint32)


def write_ids(path: str | Path, ids: list[int] | np.ndarray, vocab_size: int) -> np.memmap:
    """Store token ids as an ``.npy`` file and return it memory-mapped (read-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(ids, dtype=id_dtype(vocab_size))
    tmp = path.with_name(path.name + ".tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=array.dtype, shape=array.shape)
    out[:] = array
    out.flush()
    del out
    tmp.replace(path)
    return read_ids(path)


def read_ids(path: str | Path) -> np.memmap:
    return np.load(path, mmap_mode="r")


@dataclass
class LMBatch(Batch):
    """x: (batch, block) input ids; y: (batch, block) the id after each (the targets)."""

    x: Tensor
    y: Tensor
    n_tokens: int = -1     # target tokens that count (ids of -100 are ignored, as by cross-entropy)

    def __post_init__(self) -> None:
        if self.n_tokens < 0:   # counted once, where the batch is made (on the CPU): reading it costs no sync
            self.n_tokens = int((self.y != -100).sum())


class LMData:
    """Token ids split into a training part (first 90%) and a validation part (last 10%)."""

    def __init__(self, ids: np.ndarray, block_size: int):
        self.check_size(len(ids), block_size)
        self.ids, self.block_size = ids, block_size
        split = split_point(len(ids))
        self.splits = {"train": ids[:split], "val": ids[split:]}

    @classmethod
    def check_size(cls, n: int, block_size: int) -> None:
        """Both parts must hold at least one window of ``block_size`` + 1 tokens."""
        split = split_point(n)
        for name, size in (("train", split), ("validation", n - split)):
            if size < block_size + 1:
                raise InputError(f"the corpus has {n:,} tokens, so its {name} part ({size:,}) is shorter than one "
                                 f"window of block size {block_size} + 1; use more text or a smaller --block-size")

    @classmethod
    def build(cls, texts: list[str], tokenizer, path: str | Path, block_size: int) -> "LMData":
        """Tokenize ``texts`` (each followed by the tokenizer's end-of-text id), store the ids
        at ``path`` once and memory-map them."""
        ids: list[int] = []
        for encoded in tokenizer.encode_batch(texts):
            ids.extend(encoded)
            ids.append(tokenizer.eos_id)
        cls.check_size(len(ids), block_size)           # before anything is written
        return cls(write_ids(path, ids, tokenizer.vocab_size), block_size)

    def batch(self, split: str, batch_size: int, generator: torch.Generator) -> LMBatch:
        """``batch_size`` windows at random starts of ``split`` ("train" or "val")."""
        starts = torch.randint(len(self.splits[split]) - self.block_size, (batch_size,), generator=generator)
        return self.windows(split, starts.tolist())

    def windows(self, split: str, starts: list[int]) -> LMBatch:
        """The windows of ``split`` beginning at ``starts``: x = ids[i : i+block], y = ids[i+1 : i+block+1]."""
        data = self.splits[split]
        windows = torch.from_numpy(np.stack([data[i: i + self.block_size + 1] for i in starts]).astype(np.int64))
        return LMBatch(windows[:, :-1].contiguous(), windows[:, 1:].contiguous())

    def batches(self, split: str, batch_size: int, seed: int):
        """An endless stream of batches, reproducible from ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield self.batch(split, batch_size, generator)


__all__ = ["PYTHON_STDLIB", "TINY_SHAKESPEARE", "BUILTIN_CORPORA", "SHIPPED_CORPORA", "read_corpus", "stdlib_files", "id_dtype", "write_ids", "read_ids", "split_point", "LMBatch", "LMData"]
