"""LM data: token ids on disk, the 90/10 split, reproducible windows, and refused inputs."""

import numpy as np
import pytest
import torch

from glassformer.data.lm import (
    LMData,
    id_dtype,
    read_corpus,
    read_ids,
    stdlib_files,
    write_ids,
)
from glassformer.errors import InputError
from glassformer.tokenizers import Tokenizer


def test_ids_round_trip_through_a_memory_map(tmp_path):
    ids = list(range(0, 65_536, 7))
    small = write_ids(tmp_path / "a.npy", ids, vocab_size=65_536)
    assert small.dtype == np.uint16 and isinstance(small, np.memmap)
    assert small.tolist() == ids
    big_ids = [0, 65_536, 100_000, 50_256]
    big = write_ids(tmp_path / "b.npy", big_ids, vocab_size=100_001)
    assert big.dtype == np.uint32 and read_ids(tmp_path / "b.npy").tolist() == big_ids
    assert id_dtype(50_257) == np.uint16 and id_dtype(65_537) == np.uint32
    assert not list(tmp_path.glob("*.tmp"))


def test_split_and_windows(tmp_path):
    ids = np.arange(1000, dtype=np.uint16)
    data = LMData(ids, block_size=8)
    assert len(data.splits["train"]) == 900 and data.splits["val"][0] == 900
    batch = data.batch("val", 16, torch.Generator().manual_seed(0))
    assert batch.x.shape == (16, 8) and batch.n_tokens == 128
    assert torch.equal(batch.y[:, :-1], batch.x[:, 1:]) and torch.equal(batch.y, batch.x + 1)
    assert batch.x.min() >= 900                                  # validation windows stay in validation
    train = data.batch("train", 64, torch.Generator().manual_seed(0))
    assert train.y.max() < 900                                   # and training windows in training
    a, b = data.batches("train", 4, seed=3), data.batches("train", 4, seed=3)
    for _ in range(3):
        assert torch.equal(next(a).x, next(b).x)
    assert not torch.equal(next(data.batches("train", 4, seed=4)).x, next(data.batches("train", 4, seed=3)).x)


def test_build_tokenizes_stores_and_separates_documents(tmp_path):
    texts = ["hello world\n" * 20, "second file\n" * 20]
    tok = Tokenizer.train_char(texts)
    data = LMData.build(texts, tok, tmp_path / "run" / "tokens.npy", block_size=16)
    stored = read_ids(tmp_path / "run" / "tokens.npy")
    expected = tok.encode(texts[0]) + [tok.eos_id] + tok.encode(texts[1]) + [tok.eos_id]
    assert stored.tolist() == expected and len(data.ids) == len(expected)


def test_too_small_a_corpus_is_refused_before_writing(tmp_path):
    tok = Tokenizer.train_char(["abc"])
    with pytest.raises(InputError, match="block size 64"):
        LMData.build(["abcabc" * 10], tok, tmp_path / "tokens.npy", block_size=64)
    assert not (tmp_path / "tokens.npy").exists()


def test_read_corpus_files_folders_and_bad_input(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("bee\n", encoding="utf-8")
    (tmp_path / "d" / "a.txt").write_text("ay\n", encoding="utf-8")
    assert read_corpus(tmp_path / "d") == ["ay\n", "bee\n"]             # sorted: the same order every run
    assert read_corpus(tmp_path / "d" / "b.txt") == ["bee\n"]
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        read_corpus(tmp_path / "empty.txt")
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="no files"):
        read_corpus(tmp_path / "none")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="not UTF-8"):
        read_corpus(tmp_path / "blob.bin")
    with pytest.raises(InputError, match="does not exist"):
        read_corpus(tmp_path / "missing.txt")


def test_python_stdlib_corpus_is_capped_and_deterministic():
    files = stdlib_files(cap_bytes=300_000)
    assert files and files == stdlib_files(cap_bytes=300_000) and files == sorted(files)
    assert sum(f.stat().st_size for f in files) <= 300_000
    assert all(f.suffix == ".py" and "test" not in f.parts for f in files)
    texts = read_corpus("python-stdlib")
    assert 1_000_000 < sum(len(t) for t in texts) <= 4_000_000
