"""Normalisation layers.  LayerNorm (Ba et al. 2016) is what the paper uses after each sublayer."""

from torch.nn import LayerNorm

__all__ = ["LayerNorm"]
