"""The Vision Transformer (ViT, Dosovitskiy et al. 2021): the Transformer's encoder on image patches.

    image (channels, H, W) ─► N = (H/P)·(W/P) patches of P×P pixels, each flattened and linearly
                              projected to d_model (nn.PatchEmbedding)
                           ─► [CLS] vector prepended, learned position embeddings added (N + 1 positions)
                           ─► pre-norm encoder layers (GELU) ─► final LayerNorm
                           ─► classification head on the [CLS] position ─► class logits

The encoder is ``nn.TransformerStack`` with ``norm_first=True`` (the translator's stack with the
pre-norm option); nothing is masked: every patch attends to every patch.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn import ACTIVATIONS, PatchEmbedding, StackOutput, TransformerStack
from .config import ModelConfig, register_family, register_preset


@register_family
@dataclasses.dataclass
class ViTConfig(ModelConfig):
    """Hyper-parameters of a ViT (Hugging Face names in comments)."""

    family = "vit"

    image_size: int = 224                # image_size (square images)
    patch_size: int = 16                 # patch_size
    channels: int = 3                    # num_channels
    n_classes: int = 1000                # the classification head's outputs
    labels: list[str] | None = None      # class names (index = class id); None = "0", "1", ...
    n_layers: int = 12                   # num_hidden_layers
    n_heads: int = 12                    # num_attention_heads
    d_model: int = 768                   # hidden_size
    d_ff: int | None = None              # intermediate_size; None = 4 * d_model
    dropout: float = 0.0                 # hidden_dropout_prob
    attention_dropout: float = 0.0       # attention_probs_dropout_prob
    norm_eps: float = 1e-12              # layer_norm_eps
    activation: str = "gelu"             # hidden_act

    def validate(self) -> None:
        self._positive("image_size", "patch_size", "channels", "n_classes", "n_layers", "n_heads", "d_model", "d_ff")
        self._heads_divide()
        self._probability("dropout", "attention_dropout")
        self._choice("activation", ACTIVATIONS)
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}; "
                              "the patches must tile the image")
        if self.labels is not None and len(self.labels) != self.n_classes:
            raise ConfigError(f"labels has {len(self.labels)} names but n_classes={self.n_classes}")

    @property
    def class_names(self) -> list[str]:
        return self.labels or [str(i) for i in range(self.n_classes)]


# ViT-Base/16 (Dosovitskiy et al. 2021, Table 1: 12 layers, 768 wide, 3072 MLP, 12 heads, 86M) on 224×224 images.
register_preset("vit-b16", ViTConfig)
# For scikit-learn's 8×8 digit images (one channel, 16 patches of 2×2), and for the tests.
register_preset("vit-digits", ViTConfig, image_size=8, patch_size=2, channels=1, n_classes=10, n_layers=4, n_heads=4,
                d_model=64, d_ff=128, dropout=0.1)
register_preset("vit-tiny", ViTConfig, image_size=8, patch_size=4, channels=1, n_classes=3, n_layers=2, n_heads=2,
                d_model=16, d_ff=32)


class ImageEncoder(nn.Module):
    """The ViT's encoder without a head: patches, [CLS] prepended, learned positions, pre-norm layers.

    Images are (channels, image_size, width) pixels, ``width`` = ``image_size`` unless given (the
    patch grid is (H/P) × (W/P)).  The layers are the ``stack`` attribute, except in a :class:`ViT`,
    whose checkpoints (and Hugging Face's names) call them ``encoder``: ``stack_name`` says which."""

    stack_name = "stack"

    def __init__(self, image_size: int, patch_size: int, channels: int, d_model: int, n_layers: int, n_heads: int,
                 d_ff: int, *, width: int | None = None, dropout: float = 0.0, attention_dropout: float = 0.0,
                 norm_eps: float = 1e-12, activation: str = "gelu"):
        super().__init__()
        self.patches = PatchEmbedding(image_size, patch_size, channels, d_model, width=width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.position = nn.Parameter(torch.zeros(1, self.patches.n_patches + 1, d_model))
        self.dropout = nn.Dropout(dropout)
        self.add_module(self.stack_name, TransformerStack(
            n_layers, d_model, norm_first=True, norm_eps=norm_eps, n_heads=n_heads, d_ff=d_ff, dropout=dropout,
            attention_dropout=attention_dropout, activation=activation))

    def forward(self, images: Tensor, *, need_weights: bool = False) -> StackOutput:
        """images: (batch, channels, H, W) -> the encoder's output (batch, 1 + patches, d_model);
        position 0 is [CLS].  With ``need_weights`` also the attention weights per layer."""
        x = self.patches(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position   # [CLS] first
        return getattr(self, self.stack_name)(self.dropout(x), need_weights=need_weights)


class ViT(ImageEncoder):
    """Image classifier: patches -> encoder -> [CLS] -> classes."""

    stack_name = "encoder"

    def __init__(self, config: ViTConfig):
        c = config
        super().__init__(c.image_size, c.patch_size, c.channels, c.d_model, c.n_layers, c.n_heads, c.d_ff,
                         dropout=c.dropout, attention_dropout=c.attention_dropout, norm_eps=c.norm_eps,
                         activation=c.activation)
        self.config = c
        self.head = nn.Linear(c.d_model, c.n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal(0.02) matrices, positions and [CLS]; zero biases; LayerNorms 1 and 0."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def features(self, images: Tensor, *, need_weights: bool = False) -> StackOutput:
        """The encoder's output, as :meth:`ImageEncoder.forward`."""
        return super().forward(images, need_weights=need_weights)

    def forward(self, images: Tensor, targets: Tensor | None = None, *, reduction: str = "mean") -> Tensor:
        """images (batch, channels, H, W) -> class logits (batch, n_classes); with ``targets``
        (batch,) class ids, their cross-entropy ("mean" or "sum")."""
        logits = self.head(self.features(images).hidden[:, 0])
        if targets is None:
            return logits
        return F.cross_entropy(logits.float(), targets, reduction=reduction)

    def tie_weights(self) -> None:
        """Nothing is tied in a ViT."""


def top_classes(logits: Tensor, class_names, k: int) -> list[list[dict]]:
    """logits (batch, n_classes) -> for each row its ``k`` most likely classes, most likely first, as
    {"label", "id", "probability"}: the class's name (its index where the model names none)."""
    probs = logits.detach().float().softmax(-1)
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [[{"label": class_names[i] if class_names else str(i), "id": i, "probability": p}
             for p, i in zip(values, indices)] for values, indices in zip(top.values.tolist(), top.indices.tolist())]


__all__ = ["ViTConfig", "ViT", "ImageEncoder", "top_classes"]
