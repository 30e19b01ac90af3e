"""Encoder and decoder layers and their stacks (§3.1).

Each sublayer (self-attention, cross-attention, feed-forward) is wrapped in a
residual connection with normalisation:

* post-norm (the paper):  Norm(x + Dropout(Sublayer(x)))
* pre-norm (GPT-2 and most later models):  x + Dropout(Sublayer(Norm(x)))

A pre-norm stack ends with one more norm (otherwise its output would be an
unnormalised sum of residuals); a post-norm stack does not need it.  The norm is
LayerNorm or RMSNorm (``norm=``), the feed-forward plain or gated, attention
multi-head or grouped-query: options of these parts, so that GPT-2, Llama, the
paper's model, Marian and T5 are the same stack configured differently.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from .attention import KVCache, MultiHeadAttention
from .feedforward import FeedForward
from .masks import AttentionMask, causal_mask, combine, prepare_mask
from .norms import make_norm


class LayerOutput(NamedTuple):
    hidden: Tensor                       # (batch, seq, d_model)
    self_weights: Tensor | None          # (batch, heads, seq, seq) when requested
    cross_weights: Tensor | None         # (batch, heads, seq, src_len) when requested


class TransformerLayer(nn.Module):
    """One layer of the stack.

    Encoder layer: self-attention + feed-forward.
    Decoder layer (``cross_attention=True``): masked self-attention +
    attention over the encoder output + feed-forward.
    Decoder-only (GPT, Llama) layer: masked self-attention + feed-forward.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        n_kv_heads: int | None = None,
        cross_attention: bool = False,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation: str = "relu",
        gated: bool = False,
        norm: str = "layernorm",
        norm_first: bool = False,
        norm_eps: float = 1e-5,
        norm_bias: bool = True,
        bias: bool = True,
        attention_scale: float | None = None,
    ):
        super().__init__()
        self.norm_first = norm_first
        attention = dict(n_kv_heads=n_kv_heads, dropout=attention_dropout, bias=bias, scale=attention_scale)
        norm_options = dict(eps=norm_eps, bias=norm_bias)
        self.self_attention = MultiHeadAttention(d_model, n_heads, **attention)
        self.self_attention_norm = make_norm(norm, d_model, **norm_options)
        if cross_attention:
            self.cross_attention = MultiHeadAttention(d_model, n_heads, cross_attention=True, **attention)
            self.cross_attention_norm = make_norm(norm, d_model, **norm_options)
        else:
            self.cross_attention = None
        self.feed_forward = FeedForward(d_model, d_ff, activation=activation, dropout=activation_dropout, bias=bias,
                                        gated=gated)
        self.feed_forward_norm = make_norm(norm, d_model, **norm_options)
        self.dropout = nn.Dropout(dropout)

    def _residual(self, x: Tensor, norm: nn.Module, sublayer) -> tuple[Tensor, Tensor | None]:
        """Apply one sublayer with its residual connection; ``sublayer`` returns (output, weights)."""
        if self.norm_first:
            out, weights = sublayer(norm(x))
            return x + self.dropout(out), weights
        out, weights = sublayer(x)
        return norm(x + self.dropout(out)), weights

    def forward(
        self,
        x: Tensor,
        mask: Tensor | AttentionMask | None = None,
        *,
        is_causal: bool = False,
        bias: Tensor | None = None,
        rotary: tuple[Tensor, Tensor] | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | AttentionMask | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
        use_fused: bool = True,
    ) -> LayerOutput:
        """x: (batch, seq, d_model); mask: bool broadcastable to (batch, heads, seq, seq_k);
        bias: float added to the self-attention scores; rotary: (cos, sin) of the positions;
        memory: (batch_m, src_len, d_model); memory_mask: (batch_m, 1, 1, src_len)."""
        opts = dict(cache=cache, layer=layer, need_weights=need_weights, use_fused=use_fused)
        x, self_w = self._residual(x, self.self_attention_norm, lambda h: self.self_attention(
            h, mask=mask, is_causal=is_causal, bias=bias, rotary=rotary, **opts))
        cross_w = None
        if self.cross_attention is not None:
            x, cross_w = self._residual(
                x, self.cross_attention_norm, lambda h: self.cross_attention(h, memory, mask=memory_mask, **opts)
            )
        x, _ = self._residual(x, self.feed_forward_norm, lambda h: (self.feed_forward(h), None))
        return LayerOutput(x, self_w, cross_w)


class StackOutput(NamedTuple):
    hidden: Tensor                         # (batch, seq, d_model)
    self_weights: list[Tensor] | None      # per layer, (batch, heads, seq, seq_k)
    cross_weights: list[Tensor] | None     # per layer, (batch, heads, seq, src_len)


class TransformerStack(nn.Module):
    """N identical, independent layers (§3.1), plus a final norm for pre-norm stacks."""

    def __init__(self, n_layers: int, d_model: int, *, norm_first: bool, norm: str = "layernorm",
                 norm_eps: float = 1e-5, norm_bias: bool = True, **layer_options):
        super().__init__()
        norm_options = dict(norm=norm, norm_first=norm_first, norm_eps=norm_eps, norm_bias=norm_bias)
        self.layers = nn.ModuleList(TransformerLayer(d_model, **norm_options, **layer_options)
                                    for _ in range(n_layers))
        self.final_norm = make_norm(norm, d_model, eps=norm_eps, bias=norm_bias) if norm_first else None

    def forward(self, x: Tensor, mask: Tensor | None = None, *, is_causal: bool = False,
                memory_mask: Tensor | None = None, need_weights: bool = False, **kwargs) -> StackOutput:
        """x: (batch, seq, d_model) -> (batch, seq, d_model); kwargs go to every layer.

        The masks are prepared once here (causal combined in when a padding mask is also
        given, fully-masked rows found) and shared by all layers."""
        if is_causal and mask is not None:
            mask = combine(mask, causal_mask(x.shape[1], mask.shape[-1], device=x.device))
            is_causal = False
        mask, memory_mask = prepare_mask(mask), prepare_mask(memory_mask)
        self_ws, cross_ws = [], []
        for i, layer in enumerate(self.layers):
            x, self_w, cross_w = layer(x, mask, is_causal=is_causal, memory_mask=memory_mask, layer=i,
                                       need_weights=need_weights, **kwargs)
            self_ws.append(self_w)
            cross_ws.append(cross_w)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if not need_weights:
            return StackOutput(x, None, None)
        return StackOutput(x, self_ws, cross_ws if cross_ws[0] is not None else None)
