"""The recurrent encoder–decoder with attention (Bahdanau et al. 2014; Luong et al. 2015): the baseline
the Transformer replaced, as a family like the others.

    source tokens ─► embedding ─► RecurrentEncoder (bidirectional LSTM/GRU, packed) ─► annotations h̄
                                                    └─ final states ─► the decoder's initial state
    target tokens ─► embedding ─► RecurrentDecoder (LSTM/GRU, attention over h̄, input feeding) ─► h̃
                 ─► Generator (Linear to the vocabulary: logits)

The same interface as :class:`~glassformer.models.Transformer`: ``forward(src, tgt, targets,
label_smoothing=...)`` (teacher forcing; the loss through ``linear_cross_entropy``), ``decoder_hidden`` /
``target_loss`` (validation), and the decoding interface of ``glassformer.generation`` —
``start_decoding(src, max_new_tokens) -> (state, first_tokens)``, ``step``, ``decode_step``,
``reorder_cache`` — over a :class:`~glassformer.nn.recurrent.RecurrentCache`.  The decoder starts from the
encoder's final states, layer by layer ([→h; ←h] of each encoder layer), as in OpenNMT; without
attention that state is all the decoder knows of the source (Sutskever et al. 2014).
Everything here is wiring: the parts live in ``glassformer.nn.recurrent``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn import padding_mask
from ..nn.cross_entropy import linear_cross_entropy
from ..nn.recurrent import (ATTENTION_KINDS, CELLS, DecoderOutput, RecurrentCache, RecurrentDecoder, RecurrentEncoder,
                              State, make_attention)
from .config import EncoderDecoderConfig, register_family, register_preset
from .decoding import DecodingMixin
from .transformer import Generator


@register_family
@dataclasses.dataclass
class RecurrentConfig(EncoderDecoderConfig):
    """Hyper-parameters of the recurrent encoder–decoder.

    ``hidden_size`` is the decoder's state and the width of an annotation (each encoder direction has
    half of it); ``attention_size`` the width of the additive score's tanh (None = hidden_size).
    Token ids and ``max_len`` (the longest sentence accepted) are named as in ``TransformerConfig``."""

    family = "recurrent"

    src_vocab_size: int = 8000
    tgt_vocab_size: int = 8000
    cell: str = "lstm"                   # | "gru"
    attention: str = "additive"          # | "multiplicative" (Luong "general") | "none"
    embedding_size: int = 256
    hidden_size: int = 256
    attention_size: int | None = None    # additive attention's W_q q + W_k k width; None = hidden_size
    encoder_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.1                 # embeddings, between layers, the attentional vector
    input_feeding: bool = True           # feed h̃_{t-1} to step t (Luong §3.3); needs attention
    tie_embeddings: str = "all"          # "none" | "decoder" (target emb = output) | "all" (source too)
    max_len: int = 256

    def validate(self) -> None:
        self._positive("src_vocab_size", "tgt_vocab_size", "embedding_size", "hidden_size", "encoder_layers",
                       "decoder_layers", "max_len")
        if self.attention_size is not None:
            self._positive("attention_size")
        self._probability("dropout")
        self._choice("cell", CELLS)
        self._choice("attention", ATTENTION_KINDS)
        self._choice("tie_embeddings", {"none", "decoder", "all"})
        if self.hidden_size % 2:
            raise ConfigError(f"hidden_size={self.hidden_size} is invalid; it must be even: each direction of the "
                              "bidirectional encoder has hidden_size/2")
        if self.encoder_layers != self.decoder_layers:
            raise ConfigError(f"decoder_layers={self.decoder_layers} is invalid with encoder_layers="
                              f"{self.encoder_layers}; they must be equal (each decoder layer starts from the final "
                              "state of the encoder layer under it)")
        if self.input_feeding and self.attention == "none":
            raise ConfigError("input_feeding=True is invalid with attention='none'; it feeds the attentional vector, "
                              "so set input_feeding=false or choose an attention")
        if self.tie_embeddings != "none" and self.embedding_size != self.hidden_size:
            raise ConfigError(f"tie_embeddings={self.tie_embeddings!r} needs embedding_size == hidden_size (the "
                              f"output projection reads hidden_size={self.hidden_size}), not {self.embedding_size}; "
                              "use tie_embeddings='none' or equal sizes")
        self._one_vocabulary_if_tied("all")

    @property
    def d_model(self) -> int:
        """The width of the vectors the output projection reads (the Transformer's d_model): what the
        paper's learning-rate schedule scales by."""
        return self.hidden_size


# Sized to the parameters of vaswani-small (3 + 3 layers, d_model 256; 5.89M on the numbers task's shared
# vocabulary of 1,395 tokens): 2 + 2 layers, input feeding; hidden 384 with an LSTM and attention (5.86M
# additive, 5.71M multiplicative), 432 for the GRU (three gates, not four: 5.84M) and the LSTM without
# attention (5.84M).  Each encoder direction is half as wide.
_SMALL = dict(encoder_layers=2, decoder_layers=2, dropout=0.1)
_384, _432 = dict(embedding_size=384, hidden_size=384), dict(embedding_size=432, hidden_size=432)
register_preset("lstm-attention", RecurrentConfig, **_SMALL, **_384, attention="additive")
register_preset("lstm-luong", RecurrentConfig, **_SMALL, **_384, attention="multiplicative")
register_preset("gru-attention", RecurrentConfig, **_SMALL, **_432, cell="gru", attention="additive")
register_preset("lstm", RecurrentConfig, **_SMALL, **_432, attention="none", input_feeding=False)
register_preset("lstm-tiny", RecurrentConfig, embedding_size=32, hidden_size=32, encoder_layers=1, decoder_layers=1,
                src_vocab_size=50, tgt_vocab_size=50, max_len=64, dropout=0.0)


class RecurrentEncoding(NamedTuple):
    memory: Tensor        # (batch, src_len, hidden_size): the annotations h̄
    mask: Tensor          # (batch, 1, 1, src_len), True = real source token
    final: State          # the encoder's final states, (layers, batch, hidden_size) each


class RecurrentEncoderDecoder(DecodingMixin, nn.Module):
    """Recurrent encoder–decoder with (or without) attention."""

    def __init__(self, config: RecurrentConfig):
        super().__init__()
        self.config = c = config
        padding_idx = None if c.start_id == c.pad_id else c.pad_id        # as in the Transformer
        self.src_embed = nn.Embedding(c.src_vocab_size, c.embedding_size, padding_idx=padding_idx)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.embedding_size, padding_idx=padding_idx)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = RecurrentEncoder(c.cell, c.embedding_size, c.hidden_size, c.encoder_layers, c.dropout)
        attention = make_attention(c.attention, c.hidden_size, c.hidden_size, c.attention_size or c.hidden_size)
        self.decoder = RecurrentDecoder(c.cell, c.embedding_size, c.hidden_size, c.decoder_layers,
                                        attention=attention, input_feeding=c.input_feeding, dropout=c.dropout)
        self.generator = Generator(c.hidden_size, c.tgt_vocab_size, bias=True)
        self.reset_parameters()
        self.tie_weights()

    def tie_weights(self) -> None:
        """One matrix for the target embedding and the output projection (``decoder``), and the source
        embedding too (``all``) — Press & Wolf 2017, as the Transformer's option of the same name."""
        if self.config.tie_embeddings in ("decoder", "all"):
            self.generator.proj.weight = self.tgt_embed.weight
        if self.config.tie_embeddings == "all":
            self.src_embed.weight = self.tgt_embed.weight

    def reset_parameters(self) -> None:
        """Every parameter uniform in [-0.1, 0.1] (Luong et al. §4.1), the padding vector zero."""
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)
        for emb in (self.src_embed, self.tgt_embed):
            if emb.padding_idx is not None:
                with torch.no_grad():
                    emb.weight[emb.padding_idx].zero_()

    # -- the decoding interface's parts ---------------------------------------------------
    @property
    def output_weight(self) -> Tensor:
        return self.generator.proj.weight

    @property
    def output_bias(self) -> Tensor | None:
        return self.generator.proj.bias

    # -- the two halves ---------------------------------------------------------------------
    def encode(self, src: Tensor) -> RecurrentEncoding:
        """src: (batch, src_len) token ids, right-padded with pad_id -> the annotations, their mask and
        the final states.  Padding is never read (a packed sequence)."""
        mask = padding_mask(src, self.config.pad_id)
        states = self.encoder(self.dropout(self.src_embed(src)), mask.sum(dim=-1).view(-1))
        return RecurrentEncoding(states.annotations, mask, states.final)

    def initial_feed(self, enc: RecurrentEncoding) -> Tensor | None:
        """h̃_0 = 0 (batch, hidden_size) with input feeding, else None."""
        if not self.config.input_feeding:
            return None
        return enc.memory.new_zeros(enc.memory.shape[0], self.config.hidden_size)

    def decode(self, tgt: Tensor, enc: RecurrentEncoding, *, need_weights: bool = False) -> DecoderOutput:
        """Teacher forcing: the decoder over its inputs ``tgt`` (batch, tgt_len; BOS + target shifted
        right) from the encoder's final states, attending over ``enc`` -> the attentional vectors h̃
        (batch, tgt_len, hidden_size) and, with ``need_weights``, the alignment (batch, tgt_len, src_len)."""
        return self.decoder(self.dropout(self.tgt_embed(tgt)), enc.final, self.initial_feed(enc), enc.memory,
                            enc.mask, need_weights=need_weights)

    def decoder_hidden(self, src: Tensor, tgt: Tensor) -> Tensor:
        """The attentional vectors h̃ (batch, tgt_len, hidden_size) under teacher forcing."""
        return self.decode(tgt, self.encode(src)).output

    def target_loss(self, hidden: Tensor, targets: Tensor, *, label_smoothing: float = 0.0,
                    reduction: str = "mean") -> Tensor:
        """The label-smoothed cross-entropy of ``targets`` given ``hidden`` (h̃), through the output
        projection in chunks (:func:`~glassformer.nn.linear_cross_entropy`)."""
        return linear_cross_entropy(hidden, self.output_weight, targets, bias=self.output_bias,
                                    ignore_index=self.config.pad_id, label_smoothing=label_smoothing,
                                    reduction=reduction)

    def forward(self, src: Tensor, tgt: Tensor, targets: Tensor | None = None, *, label_smoothing: float = 0.0,
                reduction: str = "mean") -> Tensor:
        """Teacher forcing.  src: (batch, src_len); tgt: (batch, tgt_len) decoder inputs -> logits of
        the next target token (batch, tgt_len, tgt_vocab), or with ``targets`` (batch, tgt_len; pad_id =
        padding) the label-smoothed cross-entropy ("mean" per token or "sum"), as the Transformer's."""
        hidden = self.decoder_hidden(src, tgt)
        if targets is None:
            return self.logits(hidden)
        return self.target_loss(hidden, targets, label_smoothing=label_smoothing, reduction=reduction)

    # -- the decoding interface used by glassformer.generation ------------------------------
    def start_decoding(self, src: Tensor, max_new_tokens: int) -> tuple[RecurrentCache, Tensor]:
        """Encode the source once (and project its keys for the score); return a decoding state for
        ``max_new_tokens`` steps, started from the encoder's final states, and the first decoder
        input, ``start_id`` (batch, 1)."""
        enc = self.encode(src)
        attention = self.decoder.attention
        keys = attention.project_memory(enc.memory) if attention is not None else None
        cache = RecurrentCache(enc.final, self.initial_feed(enc), max_new_tokens + 1, memory=enc.memory,
                               memory_mask=enc.mask, keys=keys)
        return cache, torch.full((src.shape[0], 1), self.config.start_id, dtype=torch.long, device=src.device)

    def step(self, tokens: Tensor, cache: RecurrentCache) -> Tensor:
        """tokens: (batch, t), the positions after those the state has read -> float32 logits of the
        next token (batch, vocab); the new state is written into ``cache`` (``decode_step`` advances it)."""
        out = self.decoder(self.dropout(self.tgt_embed(tokens)), cache.state, cache.feed, cache.memory, cache.memory_mask,
                           keys=cache.keys)
        cache.update(out.state, out.feed)
        return self.logits(out.output[:, -1]).float()


__all__ = ["RecurrentConfig", "RecurrentEncoderDecoder", "RecurrentEncoding"]
