"""Direct Preference Optimisation (Rafailov et al. 2023): a decoder trained toward the answers people prefer,
with no reward model and no sampling.

For a prompt x, a preferred answer y_c ("chosen") and a worse one y_r ("rejected"), the policy π is
pushed to raise the log-probability of y_c relative to a frozen reference π_ref (the model it
started from) more than that of y_r.  The implicit reward of an answer is

    r(x, y) = β · (log π(y | x) − log π_ref(y | x))          log-probabilities summed over the answer's tokens

and the losses (per pair; the step's loss is their mean):

    sigmoid (DPO, eq. 7)   −log σ(r(x, y_c) − r(x, y_r))
    ipo (Azar et al. 2023, eq. 17)   (h − 1/(2β))²,  h = (log π/π_ref)(y_c) − (log π/π_ref)(y_r)

β (0.1 by default, as in the paper and trl) says how far the policy may drift from the reference.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

LOSSES = ("sigmoid", "ipo")


class PreferenceLoss(NamedTuple):
    loss: Tensor               # (B,) per pair
    chosen_rewards: Tensor     # (B,) β · (log π − log π_ref) of the chosen answers, detached
    rejected_rewards: Tensor   # (B,) the same for the rejected ones


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
             beta: float = 0.1, kind: str = "sigmoid",
             lengths: tuple[Tensor, Tensor] | None = None) -> PreferenceLoss:
    """The preference loss of a batch of pairs from their answers' summed log-probabilities (each (B,)).

    ``lengths``: the chosen and rejected answers' token counts (each (B,)).  IPO's squared loss
    aims at a fixed margin 1/(2β), so with sums it would ask long answers for the same margin as
    short ones; given ``lengths``, IPO compares per-token means (log-ratio / tokens) instead, as
    trl does (a normalisation the IPO authors confirmed is the one behind their results).  The
    sigmoid loss and the rewards always use the sums."""
    if kind not in LOSSES:
        raise ConfigError(f"loss={kind!r} is invalid; choose one of {list(LOSSES)}")
    chosen_ratio = policy_chosen - ref_chosen            # log π/π_ref of each chosen answer (B,)
    rejected_ratio = policy_rejected - ref_rejected
    if kind == "sigmoid":
        loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    else:
        if lengths is not None:
            chosen_ratio = chosen_ratio / lengths[0].clamp(min=1)
            rejected_ratio = rejected_ratio / lengths[1].clamp(min=1)
        loss = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
    return PreferenceLoss(loss, beta * (policy_chosen - ref_chosen).detach(),
                          beta * (policy_rejected - ref_rejected).detach())


def preference_figures(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, float]:
    """What a preference model's rewards say about pairs (each (N,)): the share of pairs whose chosen
    answer gets the higher reward (accuracy), the mean reward margin, the mean rewards."""
    margin = chosen_rewards - rejected_rewards
    return {"accuracy": float((margin > 0).double().mean()), "margin": float(margin.double().mean()),
            "chosen_reward": float(chosen_rewards.double().mean()),
            "rejected_reward": float(rejected_rewards.double().mean())}


__all__ = ["dpo_loss", "PreferenceLoss", "preference_figures", "LOSSES"]
