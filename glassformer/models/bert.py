"""BERT (Devlin et al. 2019): the Transformer's encoder alone, read in both directions.

    tokens, segments ─► token + learned position + segment embeddings, summed ─► LayerNorm ─► dropout
                     ─► N post-norm encoder layers (GELU feed-forward; every token attends to every real token)
                     ─► hidden states (batch, seq, d_model)
                          ├─ pooler: tanh(W · hidden[:, 0])               the [CLS] summary of the sequence
                          ├─ masked-LM head: dense ─► GELU ─► LayerNorm ─► the token-embedding matrix + a bias
                          │    (or a matrix of its own: tie_embeddings=False)
                          ├─ sequence classification: dropout ─► linear on the pooled vector
                          │    (one output and a squared error when the labels are numbers: regression;
                          │     a yes/no per label and a binary cross-entropy each: multi_label)
                          ├─ token classification: dropout ─► linear on every hidden state
                          └─ sentence embedding: the mean of the real tokens' hidden states (L2-normalised on request)

The encoder is the same ``nn.TransformerStack`` the translator uses (``norm_first=False``); the
embedding is ``nn.InputEmbedding`` with its segment and LayerNorm options.  A config's ``head``
picks the head a model directory carries ("none" for an encoder / sentence-embedding model).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, InputError
from ..nn import ACTIVATIONS, InputEmbedding, TransformerStack, activation_fn
from ..nn.cross_entropy import linear_cross_entropy
from .config import ModelConfig, register_family, register_preset

HEADS = ("none", "mlm", "classify", "tokens")


@register_family
@dataclasses.dataclass
class BertConfig(ModelConfig):
    """Hyper-parameters of a BERT (Hugging Face names in comments)."""

    family = "bert"

    vocab_size: int = 30522
    n_layers: int = 12                   # num_hidden_layers
    n_heads: int = 12                    # num_attention_heads
    d_model: int = 768                   # hidden_size
    d_ff: int | None = None              # intermediate_size; None = 4 * d_model
    max_len: int = 512                   # max_position_embeddings
    segments: int = 2                    # type_vocab_size
    dropout: float = 0.1                 # hidden_dropout_prob
    attention_dropout: float = 0.1       # attention_probs_dropout_prob
    norm_eps: float = 1e-12              # layer_norm_eps
    activation: str = "gelu"             # hidden_act
    pad_id: int = 0
    pooler: bool = True                  # the [CLS] pooler (dense + tanh)
    head: str = "none"                   # none | mlm | classify | tokens
    labels: list[str] | None = None      # class names of the classify / tokens heads (index = class id)
    regression: bool = False             # classify head: one number, squared error
    multi_label: bool = False            # classify head: any number of labels per sequence, a sigmoid each
    tie_embeddings: bool = True          # tie_word_embeddings: the masked-LM output is the token-embedding matrix

    def validate(self) -> None:
        self._positive("vocab_size", "n_layers", "n_heads", "d_model", "d_ff", "max_len", "segments")
        self._heads_divide()
        self._probability("dropout", "attention_dropout")
        self._choice("activation", ACTIVATIONS)
        self._choice("head", HEADS)
        if self.head in ("classify", "tokens") and not self.regression and not self.labels:
            raise ConfigError(f"head={self.head!r} needs labels (the class names), e.g. labels=['neg', 'pos']")
        if self.regression and self.head != "classify":
            raise ConfigError("regression=True is a classify head's option (one number per sequence)")
        if self.multi_label and (self.head != "classify" or self.regression):
            raise ConfigError("multi_label=True is a classify head's option with class names (not regression)")

    @property
    def n_outputs(self) -> int:
        return 1 if self.regression else len(self.labels or [])


# BERT (Devlin et al. 2019, §3): BASE L=12, H=768, A=12 (110M); LARGE L=24, H=1024, A=16 (340M).
register_preset("bert-base", BertConfig)
register_preset("bert-large", BertConfig, n_layers=24, n_heads=16, d_model=1024)
# all-MiniLM-L6-v2's shape (6 layers of 384), and small ones for one CPU and the tests.
register_preset("bert-mini", BertConfig, n_layers=6, n_heads=12, d_model=384, d_ff=1536)
register_preset("bert-small", BertConfig, vocab_size=8000, n_layers=4, n_heads=4, d_model=256, max_len=128)
register_preset("bert-tiny", BertConfig, vocab_size=100, n_layers=2, n_heads=4, d_model=32, max_len=64, dropout=0.0,
                attention_dropout=0.0)


class EncoderOutput(NamedTuple):
    hidden: Tensor                       # (batch, seq, d_model)
    mask: Tensor                         # (batch, seq) bool, True = real token
    weights: list[Tensor] | None         # per layer (batch, heads, seq, seq), if asked


class MaskedLMHead(nn.Module):
    """transform (dense, activation, LayerNorm), then the token-embedding matrix (tied; or ``decoder``,
    a matrix of its own, when ``tie_embeddings`` is False) and a bias."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.d_model, c.d_model)
        self.activation = activation_fn(c.activation)
        self.norm = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.decoder = None if c.tie_embeddings else nn.Linear(c.d_model, c.vocab_size, bias=False)

    def transform(self, hidden: Tensor) -> Tensor:
        return self.norm(self.activation(self.dense(hidden)))


class Bert(nn.Module):
    """Encoder-only Transformer with the head its config names."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = c = config
        self.embed = InputEmbedding(c.vocab_size, c.d_model, c.max_len, positional="learned", scale_embedding=False,
                                    dropout=c.dropout, padding_idx=c.pad_id, segments=c.segments, norm_eps=c.norm_eps)
        self.encoder = TransformerStack(c.n_layers, c.d_model, norm_first=False, norm_eps=c.norm_eps, n_heads=c.n_heads,
                                        d_ff=c.d_ff, dropout=c.dropout, attention_dropout=c.attention_dropout,
                                        activation=c.activation)
        self.pooler = nn.Linear(c.d_model, c.d_model) if c.pooler else None
        self.mlm = MaskedLMHead(c) if c.head == "mlm" else None
        self.classifier = nn.Linear(c.d_model, c.n_outputs) if c.head in ("classify", "tokens") else None
        self.head_dropout = nn.Dropout(c.dropout)
        if c.head == "classify" and not c.pooler:
            raise ConfigError("head='classify' reads the pooled [CLS] vector; it needs pooler=True")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT's initialisation: matrices and embeddings N(0, 0.02), biases 0, LayerNorms 1 and 0."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        with torch.no_grad():
            self.embed.token.weight[self.config.pad_id].zero_()
        if self.mlm is not None:
            nn.init.zeros_(self.mlm.bias)

    @property
    def unused_in_training(self) -> bool:
        """Whether some parameters take no part in the training loss: the pooler, kept for the
        checkpoint but read only by head 'classify' (data-parallel training must allow for it)."""
        return self.pooler is not None and self.config.head != "classify"

    # -- the encoder ---------------------------------------------------------------------
    def encode(self, tokens: Tensor, segments: Tensor | None = None, attention_mask: Tensor | None = None, *,
               need_weights: bool = False, use_fused: bool = True) -> EncoderOutput:
        """tokens: (batch, seq) ids; segments: (batch, seq) segment ids (0 if not given);
        attention_mask: (batch, seq), 1/True for real tokens (default: ``tokens != pad_id``)."""
        if tokens.shape[1] > self.config.max_len:
            raise InputError(f"{tokens.shape[1]} tokens exceed the model's {self.config.max_len} positions")
        real = (tokens != self.config.pad_id) if attention_mask is None else attention_mask.bool()
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens, positions, segments)
        out = self.encoder(x, real[:, None, None, :], need_weights=need_weights, use_fused=use_fused)
        return EncoderOutput(out.hidden, real, out.self_weights)

    def pool(self, hidden: Tensor) -> Tensor:
        """(batch, seq, d_model) -> the pooled [CLS] vector tanh(W·h_0 + b) (batch, d_model)."""
        return torch.tanh(self.pooler(hidden[:, 0]))

    @staticmethod
    def mean_pool(hidden: Tensor, real: Tensor, *, normalize: bool = False) -> Tensor:
        """The mean of the real tokens' vectors (batch, d_model); unit length if ``normalize``."""
        weights = real.to(hidden.dtype)[..., None]
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def embed_sentences(self, tokens: Tensor, segments: Tensor | None = None, attention_mask: Tensor | None = None,
                        *, normalize: bool = False) -> Tensor:
        """Sentence embeddings: mean-pooled hidden states (batch, d_model)."""
        out = self.encode(tokens, segments, attention_mask)
        return self.mean_pool(out.hidden, out.mask, normalize=normalize)

    # -- the heads -----------------------------------------------------------------------------
    @property
    def mlm_output(self) -> Tensor:
        """The masked-LM output matrix (vocab, d_model): the token embeddings, unless untied."""
        return self.embed.token.weight if self.mlm.decoder is None else self.mlm.decoder.weight

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """(..., d_model) -> masked-LM logits over the vocabulary (..., vocab)."""
        return F.linear(self.mlm.transform(hidden), self.mlm_output, self.mlm.bias)

    def forward(self, tokens: Tensor, segments: Tensor | None = None, attention_mask: Tensor | None = None,
                targets: Tensor | None = None, *, reduction: str = "mean") -> Tensor:
        """The head's output, or with ``targets`` its loss ("mean" or "sum"):

        * none: hidden states (batch, seq, d_model);
        * mlm: logits (batch, seq, vocab); targets (batch, seq) with -100 where nothing is predicted:
          only the selected positions are projected to the vocabulary (fused, chunked cross-entropy);
        * classify: logits (batch, labels), or (batch,) numbers for regression; targets (batch,)
          class ids (cross-entropy) or numbers (squared error); multi_label: targets (batch, labels)
          of 0/1, a binary cross-entropy per label, averaged over the labels (transformers' loss);
        * tokens: logits (batch, seq, labels); targets (batch, seq), -100 = ignored."""
        out = self.encode(tokens, segments, attention_mask)
        head = self.config.head
        if head == "none":
            if targets is not None:
                raise ConfigError("a model with head='none' has no loss; give it a head (mlm, classify, tokens)")
            return out.hidden
        if head == "mlm":
            if targets is None:
                return self.mlm_logits(out.hidden)
            selected = targets != -100
            hidden = self.mlm.transform(out.hidden[selected])           # (n_selected, d_model)
            return linear_cross_entropy(hidden, self.mlm_output, targets[selected], bias=self.mlm.bias,
                                        reduction=reduction)
        if head == "classify":
            logits = self.classifier(self.head_dropout(self.pool(out.hidden)))
            if self.config.regression:
                logits = logits.squeeze(-1)
            if targets is None:
                return logits
            if self.config.multi_label != (targets.dim() == 2):
                raise InputError(f"targets of shape {tuple(targets.shape)} do not fit multi_label="
                                 f"{self.config.multi_label}: multi-label targets are (batch, labels) of 0/1, "
                                 "others (batch,)")
            if self.config.regression:
                return F.mse_loss(logits.float(), targets.float(), reduction=reduction)
            if self.config.multi_label:
                per_example = F.binary_cross_entropy_with_logits(logits.float(), targets.float(),
                                                                 reduction="none").mean(-1)
                return per_example.sum() if reduction == "sum" else per_example.mean()
            return F.cross_entropy(logits.float(), targets, reduction=reduction)
        logits = self.classifier(self.head_dropout(out.hidden))
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction=reduction)

    def tie_weights(self) -> None:
        """The tied masked-LM output reads the token-embedding matrix itself (no separate copy to tie)."""


__all__ = ["BertConfig", "Bert", "EncoderOutput", "MaskedLMHead", "HEADS"]
