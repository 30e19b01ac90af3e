"""An image-to-text model: the ViT's encoder as the memory of the Transformer's decoder.

    image (channels, H, W) ─► (H/P)·(W/P) patches ─► [CLS] + learned positions ─► pre-norm encoder
                                                                                  ─► memory (1 + patches)
    caption tokens ─► InputEmbedding ─► decoder (N × [masked self-attention,
                                                      cross-attention over the memory, feed-forward])
                   ─► Generator (Linear to the vocabulary: logits)

Nothing new is computed here: the encoder is the ViT's (``models.vit.ImageEncoder``: the ViT
without its classification head), and the decoder is the encoder–decoder's (``nn.InputEmbedding``,
``nn.TransformerStack(cross_attention=True)``, ``models.transformer.Generator``, decoded by
``models.decoding.DecodingMixin``).  Cross-attention is what joins the
two kinds of data: each caption position's query looks over every image patch (and [CLS]); the
memory has no padding, so it needs no mask.  Images may be rectangular (a strip of digits is
8 × 8k pixels): the patch grid is (H/P) × (W/P).

Decoding is the encoder–decoder's: ``start_decoding`` encodes the images once and projects them
to every decoder layer's cross-attention keys and values; ``step`` has static shapes over the
preallocated :class:`~glassformer.nn.KVCache`, so ``glassformer.generation`` (greedy, sampling,
beam search) and ``compile_decoding`` work unchanged.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn import ACTIVATIONS, InputEmbedding, KVCache, StackOutput, TransformerStack
from ..nn.cross_entropy import linear_cross_entropy
from .config import ModelConfig, register_family, register_preset
from .transformer import EncoderDecoderMixin, Generator
from .vit import ImageEncoder


@register_family
@dataclasses.dataclass
class CaptionConfig(ModelConfig):
    """Hyper-parameters of the image captioner: a ViT encoder and a Transformer decoder."""

    family = "caption"

    image_size: int = 8                  # image height in pixels
    image_width: int | None = None       # image width in pixels; None = image_size (square)
    patch_size: int = 2
    channels: int = 1
    vocab_size: int = 14                 # caption tokens
    d_model: int = 64
    n_heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 2
    d_ff: int | None = None              # None = 4 * d_model
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "gelu"
    norm_eps: float = 1e-5
    max_len: int = 16                    # caption positions (BOS included) the decoder can hold
    positional: str = "learned"          # of the caption tokens: "learned" | "sinusoidal"
    tie_embeddings: bool = True          # one matrix for the caption embedding and the output projection
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3

    def __post_init__(self) -> None:
        if self.image_width is None:
            self.image_width = self.image_size
        super().__post_init__()

    def validate(self) -> None:
        self._positive("image_size", "image_width", "patch_size", "channels", "vocab_size", "d_model", "n_heads",
                       "encoder_layers", "decoder_layers", "d_ff", "max_len")
        self._heads_divide()
        self._probability("dropout", "attention_dropout")
        self._choice("activation", ACTIVATIONS)
        self._choice("positional", {"learned", "sinusoidal"})
        for name in ("image_size", "image_width"):
            if getattr(self, name) % self.patch_size:
                raise ConfigError(f"{name}={getattr(self, name)} is not a multiple of patch_size={self.patch_size}; "
                                  "the patches must tile the image")
        for name in ("pad_id", "bos_id", "eos_id", "unk_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a token id below "
                                  f"vocab_size={self.vocab_size}")

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) * (self.image_width // self.patch_size)


# Strips of up to three of scikit-learn's 8×8 digits (8 × 24 pixels: 2 × 6 patches of 4×4, four per digit),
# captioned with the digits' names; the vocabulary is the ten names and the four special tokens.
register_preset("caption-digits", CaptionConfig, image_size=8, image_width=24, patch_size=4, d_model=64, n_heads=4,
                encoder_layers=3, decoder_layers=2, d_ff=128, dropout=0.0)
# For the tests: strips of up to two digits.
register_preset("caption-tiny", CaptionConfig, image_size=8, image_width=16, patch_size=4, d_model=32, n_heads=2,
                encoder_layers=1, decoder_layers=1, d_ff=64, dropout=0.0, max_len=8)


class CaptionModel(EncoderDecoderMixin, nn.Module):
    """Image -> caption: a ViT encoder whose patches the Transformer decoder cross-attends to."""

    def __init__(self, config: CaptionConfig):
        super().__init__()
        self.config = c = config
        self.encoder = ImageEncoder(c.image_size, c.patch_size, c.channels, c.d_model, c.encoder_layers, c.n_heads,
                                    c.d_ff, width=c.image_width, dropout=c.dropout,
                                    attention_dropout=c.attention_dropout, norm_eps=c.norm_eps,
                                    activation=c.activation)
        self.tgt_embed = InputEmbedding(c.vocab_size, c.d_model, c.max_len, positional=c.positional,
                                        scale_embedding=False, dropout=c.dropout, padding_idx=c.pad_id)
        self.decoder = TransformerStack(c.decoder_layers, c.d_model, cross_attention=True, norm_first=True,
                                        norm_eps=c.norm_eps, n_heads=c.n_heads, d_ff=c.d_ff, dropout=c.dropout,
                                        attention_dropout=c.attention_dropout, activation=c.activation)
        self.generator = Generator(c.d_model, c.vocab_size)
        self.rotary = self.decoder_bias = None                   # the caption's positions are in its embedding
        self.reset_parameters()
        self.tie_weights()

    def tie_weights(self) -> None:
        """One matrix for the caption embedding and the pre-softmax projection (§3.4), if configured."""
        if self.config.tie_embeddings:
            self.generator.proj.weight = self.tgt_embed.token.weight

    def reset_parameters(self) -> None:
        """Xavier-uniform matrices (as the encoder–decoder); N(0, 0.02) caption tokens and positions,
        truncated-normal(0.02) image positions and [CLS]; zero biases and padding vector; norms 1 and 0.

        Why not the ViT's 0.02 for the matrices too: at a small d_model the query–key products then
        start so close to 0 that every cross-attention row is uniform — the decoder sees the mean of
        all the digits and cannot tell the first from the second — and it stays so for hundreds of
        steps (strips of 1–2 digits, 2×2 patches, d_model 64: at chance for ~400 steps; with Xavier 25% exact
        match after 100 and 87% after 400)."""
        own_init = ("encoder.position", "encoder.cls_token")
        for name, p in self.named_parameters():
            if p.dim() > 1 and not name.startswith("tgt_embed.") and name not in own_init:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        nn.init.trunc_normal_(self.encoder.position, std=0.02)
        nn.init.trunc_normal_(self.encoder.cls_token, std=0.02)
        for p in self.tgt_embed.parameters():
            nn.init.normal_(p, std=0.02)
        with torch.no_grad():
            self.tgt_embed.token.weight[self.config.pad_id].zero_()

    # -- the two halves -------------------------------------------------------------
    def encode(self, images: Tensor, *, need_weights: bool = False) -> StackOutput:
        """images: (batch, channels, H, W) -> memory ``.hidden`` (batch, 1 + patches, d_model)."""
        return self.encoder(images, need_weights=need_weights)

    def decode(self, tgt: Tensor, memory: Tensor, *, cache: KVCache | None = None, need_weights: bool = False,
               use_fused: bool = True) -> StackOutput:
        """tgt: (batch, tgt_len) decoder inputs (BOS + caption shifted right); memory from :meth:`encode`
        -> hidden states (batch, tgt_len, d_model), causal.  With a ``cache``, ``tgt`` holds only the
        new positions (see :meth:`decoder_states`)."""
        return self.decoder_states(tgt, memory=memory, cache=cache, need_weights=need_weights, use_fused=use_fused)

    def forward(self, images: Tensor, tgt: Tensor, targets: Tensor | None = None, *, label_smoothing: float = 0.0,
                reduction: str = "mean") -> Tensor:
        """Teacher forcing.  images: (batch, channels, H, W); tgt: (batch, tgt_len) decoder inputs
        -> logits of the next caption token (batch, tgt_len, vocab).

        With ``targets`` (batch, tgt_len; ``pad_id`` = padding), the label-smoothed cross-entropy
        over the real target tokens instead ("mean" per token, or "sum"), through the fused and
        chunked :func:`~glassformer.nn.linear_cross_entropy`."""
        hidden = self.decode(tgt, self.encode(images).hidden).hidden
        if targets is None:
            return self.logits(hidden)
        return linear_cross_entropy(hidden, self.output_weight, targets, bias=self.output_bias,
                                    ignore_index=self.config.pad_id, label_smoothing=label_smoothing,
                                    reduction=reduction)

    # -- looking inside ---------------------------------------------------------------
    def cross_attention(self, images: Tensor, tgt: Tensor) -> list[Tensor]:
        """Where each caption position looks in the image: per decoder layer, the cross-attention
        weights (batch, heads, tgt_len, 1 + patches) — key 0 is [CLS], key 1 + r·(W/P) + c the patch
        in row r, column c.  Each row sums to 1."""
        return self.decode(tgt, self.encode(images).hidden, need_weights=True).cross_weights

    # -- the decoding interface used by glassformer.generation ------------------------
    def start_decoding(self, images: Tensor, max_new_tokens: int) -> tuple[KVCache, Tensor]:
        """Encode the images once and project them to every decoder layer's cross-attention keys and
        values; return a cache for ``max_new_tokens`` steps and the first decoder input (batch, 1)."""
        c = self.config
        if max_new_tokens > c.max_len:         # the last new token is never fed back
            raise ConfigError(f"max_new_tokens={max_new_tokens} is too many: the decoder has {c.max_len} "
                              f"positions (max_len), so at most {c.max_len} new tokens")
        return self.start_from_memory(self.encode(images).hidden, None, max_new_tokens, c.bos_id)


__all__ = ["CaptionConfig", "CaptionModel", "ImageEncoder"]
