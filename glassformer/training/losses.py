"""Label-smoothed cross-entropy (§5.4; Szegedy et al. 2016).

The target distribution puts 1 - ε on the true token and spreads ε uniformly
over the whole vocabulary:  q = (1 - ε)·onehot(y) + ε/V.  The loss per token is
the cross-entropy  -Σ_v q_v log p_v = -(1 - ε) log p_y - (ε/V) Σ_v log p_v.
Padding positions contribute nothing, and the result is normalised per real
target token, not per batch.

It takes the model's logits: the log-softmax is taken once, inside PyTorch's
fused ``cross_entropy`` (which implements exactly this smoothing), so no
log-probability tensor of batch × length × vocabulary is kept for the backward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LossOutput(NamedTuple):
    loss: Tensor          # scalar, mean per real token
    total: Tensor         # scalar, sum over real tokens (for exact averaging over batches)
    n_tokens: Tensor      # scalar, number of real target tokens
    nll: Tensor | None    # scalar, sum of -log p_y (no smoothing), for perplexity; with ``with_nll=True``


class LabelSmoothedCrossEntropy(nn.Module):
    def __init__(self, smoothing: float = 0.1, ignore_index: int = 0):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor, *, with_nll: bool = False) -> LossOutput:
        """logits: (..., vocab); target: (...) token ids, ``ignore_index`` = padding.
        The loss is computed in float32 whatever the logits' dtype (autocast)."""
        logits = logits.reshape(-1, logits.shape[-1]).float()
        target = target.reshape(-1)
        total = F.cross_entropy(logits, target, ignore_index=self.ignore_index, label_smoothing=self.smoothing,
                                reduction="sum")
        n_tokens = (target != self.ignore_index).sum()
        nll = None
        if with_nll:
            with torch.no_grad():
                nll = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")
        return LossOutput(total / n_tokens.clamp_min(1), total, n_tokens, nll)
