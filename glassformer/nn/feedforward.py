"""Position-wise feed-forward network (§3.3), plain or gated.

* plain (the paper):  FFN(x) = act(x W1 + b1) W2 + b2, with act = max(0, ·) in the paper;
* gated (Shazeer 2020, "GLU Variants Improve Transformer"):
  FFN(x) = (act(x W_gate) ⊙ x W_up) W2 — SwiGLU with act = SiLU (Llama), GEGLU with GELU (T5 v1.1).

Gated, ``linear1`` holds W_gate and W_up stacked, [gate; up], so one matrix product
computes both halves.
"""

from __future__ import annotations

from torch import Tensor, nn

from .activations import activation_fn


class FeedForward(nn.Module):
    """Linear d_model→d_ff (→2·d_ff gated), activation (⊙ up), (dropout), Linear d_ff→d_model;
    applied at each position alike."""

    def __init__(self, d_model: int, d_ff: int, *, activation: str = "relu", dropout: float = 0.0,
                 bias: bool = True, gated: bool = False):
        super().__init__()
        self.gated = gated
        self.linear1 = nn.Linear(d_model, 2 * d_ff if gated else d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        self.activation = activation_fn(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, seq, d_model) -> (batch, seq, d_model)"""
        h = self.linear1(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.activation(gate) * up
        else:
            h = self.activation(h)
        return self.linear2(self.dropout(h))
