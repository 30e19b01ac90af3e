"""Building blocks in the vocabulary of the paper; they know nothing about models or tasks."""

from .attention import (
    AttentionOutput,
    KVCache,
    MultiHeadAttention,
    scaled_dot_product_attention,
)
from .blocks import StackOutput, TransformerLayer, TransformerStack
from .embeddings import InputEmbedding, TokenEmbedding
from .feedforward import FeedForward
from .masks import causal_mask, combine, padding_mask
from .positions import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_table,
)

__all__ = [
    "AttentionOutput", "KVCache", "MultiHeadAttention", "scaled_dot_product_attention",
    "StackOutput", "TransformerLayer", "TransformerStack", "InputEmbedding", "TokenEmbedding",
    "FeedForward", "causal_mask", "combine", "padding_mask",
    "LearnedPositionalEmbedding", "SinusoidalPositionalEncoding", "sinusoidal_table",
]
