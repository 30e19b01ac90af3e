"""GPT: a decoder-only language model (Radford et al. 2018, 2019 "GPT-2"; Brown et al. 2020 "GPT-3"),
and, with other options, a Llama-style decoder (Touvron et al. 2023).

    tokens ─► token embedding (+ learned positions) ─► dropout
           ─► N × [x + Attn(Norm(x)) (causal),  x + FFN(Norm(x))]  ─► Norm
           ─► linear to the vocabulary (sharing the token-embedding matrix if tied)

It is the decoder of the original Transformer without cross-attention, in the
pre-norm arrangement, predicting token t+1 from tokens ≤ t.  Everything here is
wiring: the parts live in ``glassformer.nn``.  GPT-2 is LayerNorm + learned
positions + GELU; Llama is the same decoder with RMSNorm, rotary positions inside
attention, a SwiGLU feed-forward, no biases, grouped-query attention and an untied
output: the config chooses.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError, InputError
from ..nn import ACTIVATIONS, NORMS, POSITIONS, InputEmbedding, KVCache, RotaryEmbedding, TransformerStack
from ..nn.cross_entropy import linear_cross_entropy
from ..nn.positions import LLAMA3_SCALING_FIELDS
from .config import ModelConfig, register_family, register_preset
from .decoding import DecodingMixin


@register_family
@dataclasses.dataclass
class GPTConfig(ModelConfig):
    """Hyper-parameters of a GPT (GPT-2 names in comments: n_layer, n_head, n_embd, n_positions)."""

    family = "gpt"

    vocab_size: int = 50257
    n_layers: int = 12                   # n_layer
    n_heads: int = 12                    # n_head
    d_model: int = 768                   # n_embd
    d_ff: int | None = None              # n_inner; None = 4 * d_model
    max_len: int = 1024                  # n_positions: the context length
    dropout: float = 0.1                 # embedding, residual and attention-weight dropout
    norm_eps: float = 1e-5
    activation: str = "gelu_tanh"        # GPT-2's "gelu_new"
    bias: bool = True                    # biases of the linear layers
    tie_embeddings: bool = True          # output projection = token-embedding matrix
    norm: str = "layernorm"              # | "rmsnorm" (Llama)
    norm_bias: bool = True               # LayerNorm's β (RMSNorm has none)
    norm_first: bool = True              # pre-norm (GPT-2 on); False = the paper's post-norm
    positional: str = "learned"          # | "sinusoidal" | "rotary" (inside attention, Llama) | "none"
    rope_theta: float = 10000.0          # rotary base frequency
    rope_scaling: dict | None = None     # Llama 3.1's frequency scaling: factor, low_freq_factor,
                                         # high_freq_factor, original_max_len (see nn.positions.llama3_frequencies)
    n_kv_heads: int | None = None        # key/value heads (grouped-query attention); None = n_heads
    gated: bool = False                  # gated feed-forward: SwiGLU with activation "silu" (Llama)
    vocab_multiple: int = 1              # embedding rows padded to a multiple of this (64: faster matmuls);
                                         # the pad rows are never predicted

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding: ``vocab_size`` rounded up to a multiple of ``vocab_multiple``."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    def validate(self) -> None:
        self._positive("vocab_size", "n_layers", "n_heads", "d_model", "d_ff", "max_len", "vocab_multiple")
        self._heads_divide()
        self._kv_heads_divide()
        self._probability("dropout")
        self._choice("activation", ACTIVATIONS)
        self._choice("norm", NORMS)
        self._choice("positional", POSITIONS)
        if self.rope_scaling is not None and sorted(self.rope_scaling) != sorted(LLAMA3_SCALING_FIELDS):
            raise ConfigError(f"rope_scaling={self.rope_scaling} is invalid; it needs exactly the fields "
                              f"{list(LLAMA3_SCALING_FIELDS)} (Llama 3.1's frequency scaling)")
        if self.positional == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ConfigError(f"positional='rotary' needs an even head size, but d_model/n_heads = "
                              f"{self.d_model}/{self.n_heads} = {self.d_model // self.n_heads}")


# Presets for pretraining at scale train without dropout (as GPT-3-era recipes and nanoGPT do; ask
# for it with model overrides) and pad the vocabulary to a multiple of 64 (50,257 -> 50,304 rows),
# which keeps the output matmul on fast tile sizes.
_AT_SCALE = dict(dropout=0.0, vocab_multiple=64)


# GPT-2 (Radford et al. 2019, Table 2; sizes of the released checkpoints).
register_preset("gpt2", GPTConfig, **_AT_SCALE)                                                     # 124M
register_preset("gpt2-medium", GPTConfig, **_AT_SCALE, n_layers=24, n_heads=16, d_model=1024)         # 355M
register_preset("gpt2-large", GPTConfig, **_AT_SCALE, n_layers=36, n_heads=20, d_model=1280)          # 774M
register_preset("gpt2-xl", GPTConfig, **_AT_SCALE, n_layers=48, n_heads=25, d_model=1600)             # 1.56B

# GPT-3 (Brown et al. 2020, Table 2.1): n_ctx = 2048, d_ff = 4 * d_model, the GPT-2
# vocabulary.  (GPT-3 alternates dense and locally banded sparse attention layers;
# these presets give the dense model of the same shape.)  Two rows of the table do
# not multiply out — "XL" lists 24 heads of 128 for d_model 2048, and "13B" lists
# d_model 5140 for 40 heads of 128 — so XL keeps d_head = 128 with 16 heads, and
# 13B uses 40 × 128 = 5120.  Neither choice changes the parameter count by > 1%.
_GPT3 = {
    "gpt3-small": (12, 12, 768),      # 125M
    "gpt3-medium": (24, 16, 1024),    # 350M
    "gpt3-large": (24, 16, 1536),     # 760M
    "gpt3-xl": (24, 16, 2048),        # 1.3B
    "gpt3-2.7b": (32, 32, 2560),
    "gpt3-6.7b": (32, 32, 4096),
    "gpt3-13b": (40, 40, 5120),
    "gpt3-175b": (96, 96, 12288),
}
for _name, (_layers, _heads, _d) in _GPT3.items():
    register_preset(_name, GPTConfig, **_AT_SCALE, n_layers=_layers, n_heads=_heads, d_model=_d, max_len=2048)

# Small ones for characters on one CPU, and for the tests.  "gpt-mini" is benchmark
# shape (a), "gpt-char" shape (b) (nanoGPT's Shakespeare-character model).
register_preset("gpt-char", GPTConfig, vocab_size=65, n_layers=6, n_heads=6, d_model=384, max_len=256, dropout=0.2)
register_preset("gpt-mini", GPTConfig, vocab_size=65, n_layers=4, n_heads=4, d_model=128, max_len=256, dropout=0.0)
register_preset("gpt-tiny", GPTConfig, vocab_size=64, n_layers=2, n_heads=4, d_model=32, max_len=64, dropout=0.0)

# Llama-style decoders: the same GPT with Llama's options (Touvron et al. 2023; Meta's released configs).
_LLAMA = dict(norm="rmsnorm", positional="rotary", activation="silu", gated=True, bias=False, tie_embeddings=False,
              dropout=0.0)
register_preset("llama2-7b", GPTConfig, **_LLAMA, vocab_size=32000, n_layers=32, n_heads=32, d_model=4096, d_ff=11008,
                max_len=4096)
register_preset("llama3-8b", GPTConfig, **_LLAMA, vocab_size=128256, n_layers=32, n_heads=32, n_kv_heads=8,
                d_model=4096, d_ff=14336, max_len=8192, rope_theta=500000.0)
register_preset("llama2-70b", GPTConfig, **_LLAMA, vocab_size=32000, n_layers=80, n_heads=64, n_kv_heads=8,
                d_model=8192, d_ff=28672, max_len=4096)
register_preset("llama3.1-8b", GPTConfig, **_LLAMA, vocab_size=128256, n_layers=32, n_heads=32, n_kv_heads=8,
                d_model=4096, d_ff=14336, max_len=131072, rope_theta=500000.0,
                rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_len": 8192})
register_preset("llama-tiny", GPTConfig, **_LLAMA, vocab_size=64, n_layers=2, n_heads=4, n_kv_heads=2, d_model=32,
                d_ff=88, max_len=64)


class GPT(DecodingMixin, nn.Module):
    """Decoder-only Transformer language model."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.embed = InputEmbedding(c.padded_vocab_size, c.d_model, c.max_len, positional=c.positional,
                                    scale_embedding=False, dropout=c.dropout)
        self.rotary = RotaryEmbedding(c.d_model // c.n_heads, c.max_len, c.rope_theta, c.rope_scaling) \
            if c.positional == "rotary" else None
        self.decoder_bias = None                                 # no relative positions (T5 has them)
        self.decoder = TransformerStack(
            c.n_layers, c.d_model, norm_first=c.norm_first, norm=c.norm, norm_eps=c.norm_eps, norm_bias=c.norm_bias,
            n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, d_ff=c.d_ff, dropout=c.dropout, attention_dropout=c.dropout,
            activation=c.activation, gated=c.gated, bias=c.bias,
        )
        self.lm_head = nn.Linear(c.d_model, c.padded_vocab_size, bias=False)
        self.reset_parameters()
        self.tie_weights()

    def tie_weights(self) -> None:
        """The output projection shares the token-embedding matrix (Press & Wolf 2017) if the config ties them."""
        if self.config.tie_embeddings:
            self.lm_head.weight = self.embed.token.weight

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: every matrix and embedding N(0, 0.02), biases 0, norms 1;
        the projections that write into the residual stream (attention ``out_proj``
        and the second feed-forward linear) N(0, 0.02 / sqrt(2 · n_layers)), since
        2 · n_layers of them are summed into it."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("out_proj", "linear2")) else 0.02
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                module.reset_parameters()
        if self.config.positional == "learned":
            nn.init.normal_(self.embed.position.weight, std=0.02)

    # -- the network -------------------------------------------------------------------
    @property
    def decoder_embedding(self) -> InputEmbedding:
        return self.embed

    def hidden_states(self, tokens: Tensor, *, need_weights: bool = False, use_fused: bool = True):
        """tokens: (batch, seq) -> the stack's output: hidden (batch, seq, d_model), and the
        self-attention weights per layer (batch, heads, seq, seq) if ``need_weights``."""
        if tokens.shape[1] > self.config.max_len:
            raise InputError(f"{tokens.shape[1]} tokens exceed the model's context of {self.config.max_len}")
        return self.decoder_states(tokens, need_weights=need_weights, use_fused=use_fused)

    @property
    def output_weight(self) -> Tensor:
        """The output projection's rows for the real vocabulary (vocab, d_model): the pad rows of a
        padded embedding are never predicted."""
        return self.lm_head.weight[: self.config.vocab_size]

    def forward(self, tokens: Tensor, targets: Tensor | None = None, *, reduction: str = "mean",
                ignore_index: int = -100) -> Tensor:
        """tokens: (batch, seq) -> logits of the next token at every position (batch, seq, vocab).

        With ``targets`` (batch, seq), the next-token ids already shifted, it returns instead their
        cross-entropy ("mean" per target token or "sum"), computed with the output projection in
        chunks (:func:`~glassformer.nn.linear_cross_entropy`): the batch × seq × vocab logits are
        never held at once.  Training goes through ``forward`` so that wrappers (DDP, FSDP,
        ``torch.compile``) see the whole computation."""
        hidden = self.hidden_states(tokens).hidden
        if targets is None:
            return self.logits(hidden)
        return linear_cross_entropy(hidden, self.output_weight, targets, ignore_index=ignore_index, reduction=reduction)

    def loss(self, tokens: Tensor, targets: Tensor, *, reduction: str = "mean", ignore_index: int = -100) -> Tensor:
        """Cross-entropy of ``targets`` given ``tokens``: ``self(tokens, targets, ...)``."""
        return self(tokens, targets, reduction=reduction, ignore_index=ignore_index)

    # -- the decoding interface used by glassformer.generation ------------------------
    def start_decoding(
        self, prompts: Sequence[Sequence[int]] | Tensor, max_new_tokens: int, pad_id: int = 0
    ) -> tuple[KVCache, Tensor]:
        """Prepare a batch of prompts for :func:`glassformer.generation.generate`.

        ``prompts``: a list of token-id lists (lengths may differ) or a (batch, t)
        tensor (every row real, no padding).  Shorter prompts are left-padded so
        all end at the same position; the cache's ``key_padding`` hides the pads
        from attention and ``position_offset`` shifts each row's position ids, so
        each row gets exactly what it would get alone.  Returns (cache, first_tokens
        (batch, t)).
        """
        device = self.embed.token.weight.device
        if isinstance(prompts, Tensor):
            tokens, lengths = prompts.to(device), None
            if tokens.dim() != 2 or tokens.shape[1] == 0:
                raise InputError(f"prompts must be (batch, t) with t >= 1, got shape {tuple(tokens.shape)}")
        else:
            lengths = [len(p) for p in prompts]
            if not lengths or min(lengths) == 0:
                raise InputError("every prompt needs at least one token (a GPT predicts from what it has read)")
            width = max(lengths)
            tokens = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long,
                                  device=device)
        needed = tokens.shape[1] + max_new_tokens
        if needed > self.config.max_len:
            raise InputError(f"prompt of {tokens.shape[1]} tokens + {max_new_tokens} new tokens = {needed} positions, "
                             f"more than the model's context of {self.config.max_len}; shorten the prompt or "
                             "generate fewer tokens")
        cache = self.new_cache(tokens.shape[0], needed, dtype=self.embed.token.weight.dtype, device=device)
        if lengths is not None and min(lengths) != tokens.shape[1]:
            pads = torch.tensor([tokens.shape[1] - n for n in lengths], device=device)   # (batch,)
            cache.position_offset = pads
            cache.key_padding = torch.arange(needed, device=device)[None, :] >= pads[:, None]   # (batch, max_len)
        return cache, tokens


__all__ = ["GPTConfig", "GPT"]
