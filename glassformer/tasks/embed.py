"""Sentence embeddings with a BERT-style encoder — ours, or a Hugging Face / sentence-transformers one such
as all-MiniLM-L6-v2 — and the texts most similar to a query (``glassformer.generation.embeddings``)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ..errors import CheckpointError
from ..files import read_json
from ..generation.embeddings import embed_texts, rank_by_similarity
from ..model_dir import ModelDir


def check_encoder(loaded: ModelDir, where, command: str) -> None:
    """Refuse, naming ``where``, a directory that holds no BERT-style encoder with a tokenizer."""
    if loaded.config.family != "bert":
        raise CheckpointError(f"{where} holds a {loaded.config.family!r} model, which has no sentence "
                              f"encoder; {command} needs a BERT-style encoder directory (e.g. all-MiniLM-L6-v2)")
    if loaded.tokenizer is None:
        raise CheckpointError(f"{where} has no tokenizer (tokenizer.json or vocab.txt); {command} "
                              "needs one to read text")


def sentence_max_len(model_dir: str | Path) -> int | None:
    """The ``max_seq_length`` of a sentence-transformers directory (texts are cut there when it embeds
    them, 256 for all-MiniLM-L6-v2), or None: the model's positions."""
    settings = Path(model_dir) / "sentence_bert_config.json"
    if not settings.is_file():
        return None
    value = read_json(settings, what="sentence-transformers settings", error=CheckpointError).get("max_seq_length")
    return value if isinstance(value, int) and value > 0 else None


def embed(loaded: ModelDir, texts: list[str], *, batch_size: int = 32, normalize: bool = True,
          max_len: int | None = None) -> Tensor:
    """Sentence embeddings (texts, d_model) of ``texts``, float32 on the CPU; a text longer than ``max_len``
    tokens (default: the model's positions) is cut with a warning."""
    return embed_texts(loaded.model, loaded.tokenizer, texts, batch_size=batch_size, normalize=normalize,
                       max_len=max_len)


def most_similar(loaded: ModelDir, query: str, texts: list[str], top_k: int = 5, *, batch_size: int = 32,
                 max_len: int | None = None) -> list[tuple[int, float]]:
    """(index into ``texts``, cosine similarity) of the ``top_k`` texts nearest ``query``, best first."""
    vectors = embed(loaded, [query, *texts], batch_size=batch_size, max_len=max_len)
    return rank_by_similarity(vectors[0], vectors[1:], top_k)
