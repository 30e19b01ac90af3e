"""Model directories moved to :mod:`glassformer.model_dir` (inference, interop and the CLI read them
without importing the trainer); these names stay importable from here."""

from ..files import read_json, write_atomically, write_text_atomically
from ..model_dir import (
    CONFIG,
    GENERATION,
    SOURCE_TOKENIZER,
    TOKENIZER,
    WEIGHTS,
    ModelDir,
    load_model_dir,
    load_weights,
    read_config,
    save_model_dir,
)

__all__ = ["CONFIG", "GENERATION", "SOURCE_TOKENIZER", "TOKENIZER", "WEIGHTS", "ModelDir", "load_model_dir",
           "load_weights", "read_config", "save_model_dir", "read_json", "write_atomically", "write_text_atomically"]
