"""One Tokenizer class over ``tokenizers.Tokenizer``: BPE (Metaspace or byte-level) and characters."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import tokenizers
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

from ..errors import CheckpointError, InputError

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
PAD, BOS, EOS, UNK = SPECIAL_TOKENS


class Tokenizer:
    """Text <-> token ids.

    Build one with :meth:`train_bpe`, :meth:`train_byte_bpe`, :meth:`train_char`
    or :meth:`load`; it wraps a ``tokenizers.Tokenizer`` (``.backend``).
    """

    def __init__(self, backend: tokenizers.Tokenizer):
        self.backend = backend
        ids = [backend.token_to_id(t) for t in SPECIAL_TOKENS]
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = ids

    # -- training ------------------------------------------------------------------
    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> "Tokenizer":
        """Subword BPE (Sennrich et al. 2016) over whitespace-separated words; spaces kept as '▁'."""
        backend = tokenizers.Tokenizer(models.BPE(unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        backend.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=SPECIAL_TOKENS, show_progress=False)
        backend.train_from_iterator(texts, trainer)
        return cls(backend)

    @classmethod
    def train_byte_bpe(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> "Tokenizer":
        """Byte-level BPE (GPT-2): any text is encodable, no unknown tokens."""
        backend = tokenizers.Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        backend.train_from_iterator(texts, trainer)
        return cls(backend)

    @classmethod
    def train_char(cls, texts: Iterable[str]) -> "Tokenizer":
        """One token per character seen in ``texts``; unseen characters become ``<unk>``."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        for ch in sorted(chars):
            vocab.setdefault(ch, len(vocab))
        backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()
        return cls(backend)

    # -- use -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @property
    def kind(self) -> str:
        model = type(self.backend.model).__name__
        if model == "WordLevel":
            return "char"
        return "byte-bpe" if isinstance(self.backend.pre_tokenizer, pre_tokenizers.ByteLevel) else "bpe"

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: Sequence[str], *, bos: bool = False, eos: bool = False) -> list[list[int]]:
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        head, tail = ([self.bos_id] if bos else []), ([self.eos_id] if eos else [])
        return [head + e.ids + tail for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text, special tokens dropped (whether or not the backend marks them special:
        a character vocabulary holds them as plain entries)."""
        special = {self.pad_id, self.bos_id, self.eos_id, self.unk_id}
        return self.backend.decode([int(i) for i in ids if int(i) not in special], skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self.backend.id_to_token(idx)

    # -- files -----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        self.backend.save(str(path))

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"tokenizer file {path} is missing")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises a bare Exception on bad JSON
            raise CheckpointError(f"tokenizer file {path} is corrupt or not a tokenizer.json: {e}") from None
        missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
        if missing:
            raise CheckpointError(f"tokenizer {path} lacks the special tokens {missing}; glassformer needs {SPECIAL_TOKENS}")
        return cls(backend)

    def unknown_characters(self, text: str) -> list[str]:
        """The characters of ``text`` this tokenizer cannot represent (they become ``<unk>``, which
        decoding drops), each once, in order of appearance; ``[]`` for byte-level BPE."""
        encoding = self.backend.encode(text, add_special_tokens=False)
        spans = [text[start:end] for idx, (start, end) in zip(encoding.ids, encoding.offsets) if idx == self.unk_id]
        candidates = dict.fromkeys(ch for span in spans for ch in span)
        # A span can cover a known character next to an unknown one; keep those that are unknown alone.
        return [ch for ch in candidates if self.unk_id in self.backend.encode(ch, add_special_tokens=False).ids]

    def check_known(self, text: str, what: str = "text") -> None:
        """Refuse text whose tokens are all unknown (a char tokenizer seeing another alphabet)."""
        ids = self.encode(text)
        if ids and all(i == self.unk_id for i in ids):
            raise InputError(f"every character of the {what} {text[:40]!r} is unknown to this tokenizer; "
                             "use characters from the training text")
