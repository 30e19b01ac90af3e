"""Building blocks in the vocabulary of the paper; they know nothing about models or tasks."""

from .activations import ACTIVATIONS, activation_fn
from .attention import (
    AttentionOutput,
    KVCache,
    MultiHeadAttention,
    scaled_dot_product_attention,
)
from .blocks import StackOutput, TransformerLayer, TransformerStack
from .cross_entropy import linear_cross_entropy
from .embeddings import InputEmbedding, PatchEmbedding, TokenEmbedding
from .feedforward import FeedForward
from .masks import AttentionMask, causal_mask, combine, padding_mask, prepare_mask
from .norms import NORMS, make_norm
from .positions import (
    POSITIONS,
    LearnedPositionalEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    apply_rotary,
    sinusoidal_table,
)

__all__ = [
    "ACTIVATIONS", "activation_fn", "AttentionOutput", "KVCache", "MultiHeadAttention",
    "scaled_dot_product_attention", "StackOutput", "TransformerLayer", "TransformerStack", "InputEmbedding", "PatchEmbedding",
    "TokenEmbedding", "FeedForward", "AttentionMask", "causal_mask", "combine", "padding_mask", "prepare_mask",
    "NORMS", "make_norm", "POSITIONS", "LearnedPositionalEmbedding", "RotaryEmbedding", "RelativePositionBias",
    "SinusoidalPositionalEncoding", "apply_rotary", "sinusoidal_table", "linear_cross_entropy",
]
