"""The original encoder–decoder Transformer (Vaswani et al., 2017, "Attention Is All You Need").

    source tokens ─► InputEmbedding ─► Encoder (N × [self-attention, feed-forward]) ─► memory
    target tokens ─► InputEmbedding ─► Decoder (N × [masked self-attention,
                                                     attention over memory, feed-forward])
                 ─► Generator (Linear to the vocabulary: logits; the softmax is taken by the loss or the search)

Everything here is wiring: the parts live in ``glassformer.nn``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError, InputError
from ..nn import (
    ACTIVATIONS,
    NORMS,
    POSITIONS,
    InputEmbedding,
    KVCache,
    RelativePositionBias,
    RotaryEmbedding,
    StackOutput,
    TransformerStack,
    padding_mask,
)
from ..nn.cross_entropy import linear_cross_entropy
from .config import EncoderDecoderConfig, register_family, register_preset
from .decoding import DecodingMixin


@register_family
@dataclasses.dataclass
class TransformerConfig(EncoderDecoderConfig):
    """Hyper-parameters of the encoder–decoder (paper names: N, d_model, h, d_ff, P_drop)."""

    family = "transformer"

    src_vocab_size: int = 37000
    tgt_vocab_size: int = 37000
    d_model: int = 512
    n_heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1                 # P_drop: residual and embedding dropout (§5.4)
    attention_dropout: float = 0.0       # not in the paper (tensor2tensor has it)
    activation_dropout: float = 0.0      # not in the paper (torch.nn.Transformer has it)
    activation: str = "relu"
    norm_first: bool = False             # False = post-norm, as in the paper
    norm_eps: float = 1e-5
    max_len: int = 256                   # positions the encoding table covers
    positional: str = "sinusoidal"       # | "sinusoidal-split" | "learned" | "rotary" (inside attention) | "none"
    rope_theta: float = 10000.0          # rotary base frequency
    norm: str = "layernorm"              # | "rmsnorm"
    norm_bias: bool = True               # LayerNorm's β (RMSNorm has none)
    bias: bool = True                    # biases of the linear layers
    gated: bool = False                  # gated feed-forward (GEGLU with "gelu", SwiGLU with "silu")
    n_kv_heads: int | None = None        # key/value heads (grouped-query attention); None = n_heads
    scale_embedding: bool = True         # multiply embeddings by sqrt(d_model) (§3.4)
    tie_embeddings: str = "all"          # "none" | "decoder" (target emb = output) | "all" (three-way)
                                         # | "inputs" (source = target embedding, output apart: T5 v1.1)
    attention_scale: float | None = None # None = 1/sqrt(d_head) (§3.2.1); T5 scales by 1 (folded into init)
    relative_buckets: int = 32           # positional="relative" (T5): buckets of key-query offsets ...
    relative_max_distance: int = 128     # ... growing logarithmically up to this distance
    scale_decoder_output: bool = False   # T5: decoder output × d_model^-0.5 before the (tied) projection
    final_logits_bias: bool = False      # a bias on the output projection (Marian checkpoints have one)

    def validate(self) -> None:
        self._positive("src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "encoder_layers",
                       "decoder_layers", "d_ff", "max_len")
        self._heads_divide()
        self._kv_heads_divide()
        self._probability("dropout", "attention_dropout", "activation_dropout")
        self._choice("activation", ACTIVATIONS)
        self._choice("positional", POSITIONS)
        self._choice("norm", NORMS)
        self._choice("tie_embeddings", {"none", "decoder", "all", "inputs"})
        self._one_vocabulary_if_tied("all", "inputs")


# Table 3 of the paper.  Vocabulary: the shared 37k BPE of WMT'14 En–De.
register_preset("vaswani-base", TransformerConfig)
register_preset("vaswani-big", TransformerConfig, d_model=1024, n_heads=16, d_ff=4096, dropout=0.3)
# Small ones: the quickstart translator and the tests.
register_preset("vaswani-small", TransformerConfig, d_model=256, n_heads=4, encoder_layers=3, decoder_layers=3,
                d_ff=1024, src_vocab_size=8000, tgt_vocab_size=8000)
register_preset("vaswani-tiny", TransformerConfig, d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=64,
                src_vocab_size=50, tgt_vocab_size=50, max_len=64, dropout=0.0)


# T5 (Raffel et al. 2020): pre-norm RMSNorm, no biases, relative position buckets, attention unscaled,
# the decoder output scaled by d_model^-0.5 before the shared embedding; vocabulary of 32,128;
# decoding starts from the pad token.  t5-small 60M, t5-base 220M (Table 14's "Small" and "Base").
_T5 = dict(norm="rmsnorm", norm_bias=False, norm_eps=1e-6, norm_first=True, bias=False, positional="relative",
           attention_scale=1.0, scale_embedding=False, scale_decoder_output=True, src_vocab_size=32128,
           tgt_vocab_size=32128, pad_id=0, eos_id=1, unk_id=2, bos_id=0, decoder_start_id=0, max_len=512)
register_preset("t5-small", TransformerConfig, **_T5, d_model=512, n_heads=8, encoder_layers=6, decoder_layers=6,
                d_ff=2048)
register_preset("t5-base", TransformerConfig, **_T5, d_model=768, n_heads=12, encoder_layers=12, decoder_layers=12,
                d_ff=3072)
register_preset("t5-tiny", TransformerConfig, **{**_T5, "src_vocab_size": 60, "tgt_vocab_size": 60, "max_len": 64},
                d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=64, dropout=0.0)


class EncoderOutput(NamedTuple):
    memory: Tensor                       # (batch, src_len, d_model)
    mask: Tensor                         # (batch, 1, 1, src_len), True = real source token
    weights: list[Tensor] | None         # per layer (batch, heads, src_len, src_len)


class Generator(nn.Module):
    """The pre-softmax linear projection to the vocabulary (§3.4).  It returns logits: the
    softmax is applied once, by the loss (fused into cross-entropy) or by the search."""

    def __init__(self, d_model: int, vocab_size: int, bias: bool = False):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size, bias=bias)

    def forward(self, hidden: Tensor) -> Tensor:
        """(batch, seq, d_model) -> logits (batch, seq, vocab)"""
        return self.proj(hidden)


class EncoderDecoderMixin(DecodingMixin):
    """The shared decoder of the encoder–decoder and the captioner: it embeds its tokens with
    ``tgt_embed`` and projects to the vocabulary with ``generator``."""

    @property
    def decoder_embedding(self) -> InputEmbedding:
        return self.tgt_embed

    @property
    def output_weight(self) -> Tensor:
        return self.generator.proj.weight

    @property
    def output_bias(self) -> Tensor | None:
        return self.generator.proj.bias


class Transformer(EncoderDecoderMixin, nn.Module):
    """Encoder–decoder Transformer."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = c = config
        # The pad row is a padding vector (zero, no gradient) only where pad is nothing but padding: a decoder
        # that starts from the pad token (T5, Marian) reads that row first in every sentence, so it is the start
        # token's vector and is initialised and learned like any other (padded positions are masked either way).
        padding_idx = None if c.start_id == c.pad_id else c.pad_id
        embed = dict(positional=c.positional, scale_embedding=c.scale_embedding, dropout=c.dropout,
                     padding_idx=padding_idx)
        layer = dict(n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, d_ff=c.d_ff, dropout=c.dropout,
                     attention_dropout=c.attention_dropout, activation_dropout=c.activation_dropout,
                     activation=c.activation, gated=c.gated, bias=c.bias, norm=c.norm, norm_first=c.norm_first,
                     norm_eps=c.norm_eps, norm_bias=c.norm_bias, attention_scale=c.attention_scale)
        self.src_embed = InputEmbedding(c.src_vocab_size, c.d_model, c.max_len, **embed)
        self.tgt_embed = InputEmbedding(c.tgt_vocab_size, c.d_model, c.max_len, **embed)
        self.rotary = RotaryEmbedding(c.d_model // c.n_heads, c.max_len, c.rope_theta) \
            if c.positional == "rotary" else None
        relative = dict(buckets=c.relative_buckets, max_distance=c.relative_max_distance)
        self.encoder_bias = RelativePositionBias(c.n_heads, **relative, bidirectional=True) \
            if c.positional == "relative" else None
        self.decoder_bias = RelativePositionBias(c.n_heads, **relative, bidirectional=False) \
            if c.positional == "relative" else None
        self.encoder = TransformerStack(c.encoder_layers, c.d_model, **layer)
        self.decoder = TransformerStack(c.decoder_layers, c.d_model, cross_attention=True, **layer)
        self.generator = Generator(c.d_model, c.tgt_vocab_size, bias=c.final_logits_bias)
        self.decoder_output_scale = c.d_model ** -0.5 if c.scale_decoder_output else None   # T5
        self.reset_parameters()
        self.tie_weights()

    def tie_weights(self) -> None:
        """Weight tying (§3.4, Press & Wolf 2017): one matrix for the target embedding and the
        pre-softmax projection (``decoder``), and the source embedding too (``all``)."""
        if self.config.tie_embeddings in ("decoder", "all"):
            self.generator.proj.weight = self.tgt_embed.token.weight
        if self.config.tie_embeddings in ("all", "inputs"):
            self.src_embed.token.weight = self.tgt_embed.token.weight

    def reset_parameters(self) -> None:
        """Xavier-uniform matrices (as the reference tensor2tensor/fairseq code);
        embeddings N(0, d_model^-0.5) so that after the sqrt(d_model) scale they have unit variance."""
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embed" not in name:
                nn.init.xavier_uniform_(p)
            elif p.dim() == 1 and name.endswith("bias"):
                nn.init.zeros_(p)
        for emb in (self.src_embed.token, self.tgt_embed.token):
            nn.init.normal_(emb.weight, std=self.config.d_model ** -0.5)
            if emb.padding_idx is not None:
                with torch.no_grad():
                    emb.weight[emb.padding_idx].zero_()

    # -- the two halves -------------------------------------------------------------
    @property
    def _position_limit(self) -> int | None:
        """Positions the tables (sinusoidal, learned, rotary) hold: ``max_len``; a longer sequence is
        refused rather than met by an index error (a device assert on a GPU).  Relative position
        buckets (T5) and no positions at all have no limit (None)."""
        return None if self.config.positional in ("relative", "none") else self.config.max_len

    def _check_length(self, length: int, what: str) -> None:
        limit = self._position_limit
        if limit is not None and length > limit:
            raise InputError(f"the {what} has {length} tokens but the model's {self.config.positional} positions "
                             f"cover max_len={limit}; shorten or split it")

    def encode(self, src: Tensor, *, need_weights: bool = False, use_fused: bool = True) -> EncoderOutput:
        """src: (batch, src_len) token ids (padded with pad_id) -> memory (batch, src_len, d_model)."""
        self._check_length(src.shape[1], "source")
        mask = padding_mask(src, self.config.pad_id)
        positions = torch.arange(src.shape[1], device=src.device)
        x = self.src_embed(src, positions)
        bias = self.encoder_bias(positions, positions) if self.encoder_bias is not None else None
        rotary = self.rotary(positions) if self.rotary is not None else None
        out = self.encoder(x, mask, bias=bias, rotary=rotary, need_weights=need_weights,
                           use_fused=use_fused)
        return EncoderOutput(out.hidden, mask, out.self_weights)

    def decode(self, tgt: Tensor, memory: Tensor, memory_mask: Tensor, *, cache: KVCache | None = None,
               need_weights: bool = False, use_fused: bool = True) -> StackOutput:
        """tgt: (batch, tgt_len) decoder inputs (BOS + target shifted right); memory and its mask from
        :meth:`encode` -> hidden states (batch, tgt_len, d_model).  Causal: position i sees inputs ≤ i.
        With a ``cache``, ``tgt`` holds only the new positions (see :meth:`decoder_states`)."""
        if cache is None:                          # with a cache, start_decoding has bounded the positions
            self._check_length(tgt.shape[1], "target")
        return self.decoder_states(tgt, memory=memory, memory_mask=memory_mask, cache=cache,
                                   need_weights=need_weights, use_fused=use_fused)

    def forward(self, src: Tensor, tgt: Tensor, targets: Tensor | None = None, *, label_smoothing: float = 0.0,
                reduction: str = "mean") -> Tensor:
        """Teacher forcing.  src: (batch, src_len); tgt: (batch, tgt_len) decoder inputs
        -> logits of the next target token (batch, tgt_len, tgt_vocab).

        With ``targets`` (batch, tgt_len; ``pad_id`` = padding) it returns instead the
        label-smoothed cross-entropy (§5.4) over the real target tokens ("mean" per token, or
        "sum"), computed with the generator's projection in chunks
        (:func:`~glassformer.nn.linear_cross_entropy`): the logits are never held whole.
        Training goes through ``forward`` so that wrappers (DDP, FSDP, ``torch.compile``)
        see the whole computation."""
        hidden = self.decoder_hidden(src, tgt)
        if targets is None:
            return self.logits(hidden)
        return self.target_loss(hidden, targets, label_smoothing=label_smoothing, reduction=reduction)

    def decoder_hidden(self, src: Tensor, tgt: Tensor) -> Tensor:
        """The decoder's last hidden states (batch, tgt_len, d_model) under teacher forcing."""
        enc = self.encode(src)
        return self.decode(tgt, enc.memory, enc.mask).hidden

    def target_loss(self, hidden: Tensor, targets: Tensor, *, label_smoothing: float = 0.0,
                    reduction: str = "mean") -> Tensor:
        """The label-smoothed cross-entropy of ``targets`` given the decoder's ``hidden`` states, through
        the generator's projection in chunks (:func:`~glassformer.nn.linear_cross_entropy`)."""
        return linear_cross_entropy(hidden, self.output_weight, targets, bias=self.output_bias,
                                    ignore_index=self.config.pad_id, label_smoothing=label_smoothing,
                                    reduction=reduction)

    # -- the decoding interface used by glassformer.generation ------------------------
    def start_decoding(self, src: Tensor, max_new_tokens: int) -> tuple[KVCache, Tensor]:
        """Encode the source once and project it to every decoder layer's cross-attention keys and
        values; return a cache for ``max_new_tokens`` steps and the first decoder input (batch, 1)."""
        c = self.config
        limit = self._position_limit
        if limit is not None and max_new_tokens > limit:            # the last new token is never fed back
            raise ConfigError(f"max_new_tokens={max_new_tokens} is too many: the decoder's {c.positional} positions "
                              f"cover max_len={limit}, so at most {limit} new tokens")
        enc = self.encode(src)
        return self.start_from_memory(enc.memory, enc.mask, max_new_tokens, c.start_id)


def num_parameters(module: nn.Module) -> int:
    """Unique parameters (tied matrices counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


__all__ = ["TransformerConfig", "Transformer", "Generator", "EncoderDecoderMixin", "EncoderOutput", "num_parameters"]
