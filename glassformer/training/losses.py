"""Label-smoothed cross-entropy (§5.4; Szegedy et al. 2016).

The target distribution puts 1 - ε on the true token and spreads ε uniformly
over the whole vocabulary:  q = (1 - ε)·onehot(y) + ε/V.  The loss per token is
the cross-entropy  -Σ_v q_v log p_v = -(1 - ε) log p_y - (ε/V) Σ_v log p_v.
Padding positions contribute nothing, and the result is normalised per real
target token, not per batch.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn


class LossOutput(NamedTuple):
    loss: Tensor          # scalar, mean per real token
    total: Tensor         # scalar, sum over real tokens (for exact averaging over batches)
    n_tokens: Tensor      # scalar, number of real target tokens
    nll: Tensor           # scalar, sum of -log p_y (no smoothing), for perplexity


class LabelSmoothedCrossEntropy(nn.Module):
    def __init__(self, smoothing: float = 0.1, ignore_index: int = 0):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self.ignore_index = ignore_index

    def forward(self, log_probs: Tensor, target: Tensor) -> LossOutput:
        """log_probs: (..., vocab) float; target: (...) token ids, ``ignore_index`` = padding."""
        log_probs = log_probs.reshape(-1, log_probs.shape[-1])
        target = target.reshape(-1)
        real = target != self.ignore_index
        nll = -log_probs.gather(1, target.clamp_min(0)[:, None]).squeeze(1)
        smooth = -log_probs.mean(dim=-1)                      # (ε/V)·Σ_v -log p_v, divided by ε
        per_token = (1.0 - self.smoothing) * nll + self.smoothing * smooth
        total = per_token.masked_fill(~real, 0.0).sum()
        n_tokens = real.sum()
        return LossOutput(total / n_tokens.clamp_min(1), total, n_tokens, nll.masked_fill(~real, 0.0).sum())
