"""A SentencePiece model with a separate vocabulary: the tokenizer of Marian (OPUS-MT) checkpoints.

A Marian checkpoint ships ``source.spm`` / ``target.spm`` (SentencePiece models, read with the
``sentencepiece`` package) and ``vocab.json`` (piece -> id, the ids the model's embedding uses).
Text is cut into pieces by the SentencePiece model; each piece's id is looked up in the vocabulary
(a piece it lacks becomes ``<unk>``).  Decoding maps ids back to pieces, drops the special tokens
and joins the pieces with the SentencePiece model, as transformers' ``MarianTokenizer`` does.

:class:`SentencePieceTokenizer` offers what glassformer's callers use of
:class:`~glassformer.tokenizers.Tokenizer` (``encode``, ``encode_batch``, ``decode``, the special
ids, ``unknown_characters``, ...), so a Marian directory works with ``translate``, ``evaluate``,
``explain`` and ``serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import CheckpointError, ConfigError
from .tokenizer import Tokenizer

SPIECE_UNDERLINE = "▁"


def _processor(file: Path):
    """The ``sentencepiece.SentencePieceProcessor`` of ``file``; one line naming it if it is not one."""
    try:
        import sentencepiece
    except ImportError:
        raise ConfigError(f"{file} is a SentencePiece model; reading it needs the sentencepiece package "
                          "(pip install 'glassformer[hf]')") from None
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; a Marian tokenizer needs source.spm, target.spm and vocab.json")
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(str(file))
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"{file} is not a SentencePiece model ({str(e).strip().splitlines()[0]})") from None
    return processor


class SentencePieceTokenizer:
    """Text <-> ids through a SentencePiece model (``spm_file``) and a vocabulary (piece -> id).

    Marian's special tokens: ``eos`` ends every source (``encode(..., eos=True)``), ``unk`` stands for
    pieces the vocabulary lacks, ``pad`` pads and starts decoding; there is no begin-of-sequence token.
    """

    kind = "sentencepiece"

    def __init__(self, spm_file: str | Path, vocab: dict[str, int], *, eos: str = "</s>", unk: str = "<unk>",
                 pad: str = "<pad>", vocab_file: str | Path = "vocab.json"):
        self.spm_file = Path(spm_file)
        self.processor = _processor(self.spm_file)
        self.vocab = dict(vocab)
        self.pieces = {i: p for p, i in self.vocab.items()}
        missing = [t for t in (eos, unk, pad) if t not in self.vocab]
        if missing:
            raise CheckpointError(f"{vocab_file} lacks the special tokens {missing} (the tokenizer's eos, unk and "
                                  "pad tokens)")
        self.special_tokens = [pad, None, eos, unk]          # pad, begin (none), end, unknown
        self.pad_id, self.eos_id, self.unk_id = self.vocab[pad], self.vocab[eos], self.vocab[unk]
        self.bos_id = self.mask_id = None

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        if bos:
            raise ConfigError("a Marian SentencePiece vocabulary has no begin-of-sequence token")
        code, text = _language_code(text)
        pieces = code + self.processor.encode(text, out_type=str)
        return [self.vocab.get(p, self.unk_id) for p in pieces] + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: Sequence[str], *, bos: bool = False, eos: bool = False) -> list[list[int]]:
        return [self.encode(t, bos=bos, eos=eos) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text, special tokens dropped; an id the vocabulary lacks is the SentencePiece model's
        piece of that id (as ``MarianTokenizer`` reads it)."""
        special = {self.pad_id, self.eos_id, self.unk_id}
        pieces = [self.id_to_token(int(i)) for i in ids if int(i) not in special]
        text = self.processor.decode_pieces([p for p in pieces if p])
        return text.replace(SPIECE_UNDERLINE, " ").strip()

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, idx: int) -> str | None:
        if idx in self.pieces:
            return self.pieces[idx]
        return self.processor.id_to_piece(idx) if 0 <= idx < self.processor.get_piece_size() else None

    def unknown_characters(self, text: str) -> list[str]:
        """The characters of ``text`` that become ``<unk>`` (which decoding drops), each once, in order."""
        return [ch for ch in dict.fromkeys(text) if not ch.isspace() and self.unk_id in self.encode(ch)]

    # The same rule as glassformer's own tokenizers, over this class's encode and unk_id.
    check_known = Tokenizer.check_known

    def save(self, path: str | Path) -> None:
        """Refused: a glassformer model directory holds ``tokenizers`` files (tokenizer.json), and a
        SentencePiece model is not one; the Hugging Face directory itself is the one to use."""
        raise ConfigError(f"{self.spm_file} is a SentencePiece model (Marian's source.spm/target.spm + vocab.json), "
                          "which a glassformer model directory cannot hold (it keeps tokenizer.json); use the Hugging "
                          "Face directory itself with translate / evaluate / explain / serve")


def _language_code(text: str) -> tuple[list[str], str]:
    """A leading target-language code of multilingual checkpoints (``>>fr<< text``) as its own piece."""
    end = text.find("<<")
    if text.startswith(">>") and end != -1:
        return [text[:end + 2]], text[end + 2:]
    return [], text


__all__ = ["SentencePieceTokenizer"]
