"""Translate: sentences through an encoder–decoder (``train translation``, or a Hugging Face Marian / T5
directory).  The decoding and scoring are ``glassformer.generation.translation``."""

from __future__ import annotations

from ..errors import CheckpointError
from ..generation.translation import score, translate, translate_nbest
from ..model_dir import ModelDir


def check_translator(loaded: ModelDir, where) -> None:
    """Refuse, naming ``where``, a directory that holds no encoder–decoder with its tokenizer."""
    if loaded.config.family != "transformer":
        raise CheckpointError(f"{where} holds a {loaded.config.family!r} model; translation needs an "
                              "encoder-decoder ('transformer') model directory")
    if loaded.tokenizer is None:
        raise CheckpointError(f"{where} has no tokenizer.json; a translation model directory needs one")


__all__ = ["check_translator", "translate", "translate_nbest", "score"]
