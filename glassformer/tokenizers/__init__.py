"""Tokenizers: thin wrappers over the Hugging Face ``tokenizers`` library.

Every tokenizer is saved as one ``tokenizer.json`` that the ``tokenizers``
library (and so the rest of the ecosystem) can read.  Special tokens have fixed
ids in every tokenizer glassformer trains: ``<pad>`` = 0, ``<s>`` = 1,
``</s>`` = 2, ``<unk>`` = 3.
"""

from .tokenizer import SPECIAL_TOKENS, Tokenizer

__all__ = ["SPECIAL_TOKENS", "Tokenizer"]
