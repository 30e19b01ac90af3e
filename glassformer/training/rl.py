"""Reinforcement learning with a verifiable reward: GRPO-style policy gradient for a decoder.

Used by ``glassformer train rl`` and usable from Python::

    from glassformer.training.rl import RLSettings, train_rl
    run = train_rl(RLSettings(base="runs/sft/best", task="numbers-instruct", group=8), "runs/rl")

Each step samples G completions (a *group*, default 8) for each of P prompts with the library's one
batched generation loop (a static KV cache; compiled on a GPU), scores every completion with a reward
``reward(prompt, completion) -> float`` (a program that checks the answer), and moves the policy toward
the completions that scored above their group's mean (Shao et al. 2024, DeepSeekMath §4.1):

    advantage   A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4)        (the division optional)
    ratio       ρ_t = π(o_t | q, o_<t) / π_old(o_t | q, o_<t)
    loss        -Σ_t min(ρ_t A, clip(ρ_t, 1 - ε, 1 + ε) A) + β Σ_t KL_t      over every completion token,
                divided by their number over the whole step (token-level normalisation)
    KL_t        exp(ref_t - logp_t) - (ref_t - logp_t) - 1                  the k3 estimator (Schulman 2020),
                ref_t the reference model's log-probability (β = 0 by default: no reference needed)

The standard deviation is Bessel's (n - 1), and ε = 0.2, β = 0 and the token-level normalisation
are ``trl``'s GRPOTrainer defaults (its ``loss_type="dapo"``).  A group whose rewards are all equal
has advantages of zero: it teaches nothing, so it is dropped before the update and its share
reported.  Each sampled batch is used for one update, so the policy that sampled it is the one
being updated: the old log-probabilities are the current ones, detached (ρ = 1 in value, its
gradient that of log π), as in ``trl`` with one iteration per generation.

The reference model for the KL penalty costs no copy with LoRA (the same model with its adapters
disabled); without LoRA it is a frozen copy of the starting weights.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError, InputError

STD_EPS = 1e-4       # added to a group's standard deviation before dividing by it (trl's value)


# -- the objective ---------------------------------------------------------------------------------
def group_advantages(rewards: Tensor, scale_by_std: bool = True) -> Tensor:
    """rewards (P, G): the G completions of each of P prompts -> advantages (P, G): each reward
    less its group's mean, divided by the group's standard deviation (Bessel's) + 1e-4 when
    ``scale_by_std`` (Dr. GRPO (Liu et al. 2025) leaves the division out: it favours groups whose
    rewards barely differ).  A group of equal rewards gets zeros."""
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return centred
    std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(centred[:, :1])
    return centred / (std + STD_EPS)


def k3_divergence(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from the sampled token's log-probabilities (any shape):
    exp(ref - logp) - (ref - logp) - 1, never negative, unbiased under π's samples (Schulman's k3)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def grpo_token_losses(logp: Tensor, old_logp: Tensor, advantages: Tensor, *, eps: float = 0.2, beta: float = 0.0,
                      ref_logp: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """The loss of every completion token, before masking and normalisation.

    logp, old_logp, ref_logp: (B, T) log-probabilities of the sampled tokens under the policy being
    trained (with gradient), the policy that sampled them, and the reference; advantages: (B,) or (B, T).
    Returns (per-token loss (B, T), per-token k3 KL (B, T), or None when ``ref_logp`` is None)."""
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    clipped = ratio.clamp(1 - eps, 1 + eps)
    loss = -torch.minimum(ratio * advantages, clipped * advantages)
    kl = None if ref_logp is None else k3_divergence(logp, ref_logp)
    if beta:
        if kl is None:
            raise ConfigError(f"beta={beta:g} penalises the divergence from a reference model: give ref_logp")
        loss = loss + beta * kl
    return loss, kl


def grpo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *, eps: float = 0.2,
              beta: float = 0.0, ref_logp: Tensor | None = None) -> Tensor:
    """The GRPO loss of a batch (a scalar): :func:`grpo_token_losses` summed over the completion tokens
    (``mask`` (B, T) bool) of the whole batch and divided by their number (token-level normalisation:
    a long completion weighs by its length, not as one sequence)."""
    loss, _ = grpo_token_losses(logp, old_logp, advantages, eps=eps, beta=beta, ref_logp=ref_logp)
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp_min(1)


# -- rewards -----------------------------------------------------------------------------------------
Reward = Callable[..., float]


class NamedReward:
    """A reward function with the name it was given by (``--reward module:function``), for error lines."""

    def __init__(self, function: Reward, name: str):
        self.function, self.name = function, name

    def __call__(self, prompt: str, completion: str, **fields) -> float:
        return self.function(prompt, completion, **fields)


def load_reward(spec: str) -> NamedReward:
    """The reward function named by ``spec``, "module:function" (``module`` importable, or a path to a
    .py file: "rewards.py:exact").  Its call ``reward(prompt, completion, **fields)`` returns a number;
    ``fields``: what a prompts file's row holds besides "prompt".  A name that does not resolve to a
    callable is an InputError naming it."""
    module_name, sep, function = spec.rpartition(":")
    if not sep or not module_name or not function:
        raise InputError(f"--reward {spec!r} is not of the form module:function (e.g. my_rewards:exact_answer)")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise InputError(f"--reward {spec!r}: {path} is not a file")
            found = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except InputError:
        raise
    except Exception as e:      # a missing module, or one whose code fails on import
        raise InputError(f"--reward {spec!r}: cannot import {module_name} ({type(e).__name__}: {e})") from None
    reward = getattr(module, function, None)
    if not callable(reward):
        raise InputError(f"--reward {spec!r}: {module_name} has no function {function!r}")
    return NamedReward(reward, spec)


def reward_name(reward: Reward) -> str:
    return getattr(reward, "name", None) or getattr(reward, "__qualname__", repr(reward))


def scored(reward: Reward, prompts: list[str], completions: list[str], fields: list[dict]) -> list[float]:
    """``reward(prompt, completion, **fields)`` of every completion, as floats.  A reward that raises,
    or returns something that is not a finite number (a bool counts as 0 or 1), stops the run with an
    InputError naming the reward, the error and the prompt."""
    out = []
    for prompt, completion, extra in zip(prompts, completions, fields):
        try:
            value = reward(prompt, completion, **extra)
        except Exception as e:
            raise InputError(f"the reward {reward_name(reward)} raised {type(e).__name__}: {e} (prompt "
                             f"{_short(prompt)}, completion {_short(completion)})") from None
        if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise InputError(f"the reward {reward_name(reward)} returned {_short(value)} for prompt "
                             f"{_short(prompt)}; a reward must return a finite number (a float)")
        out.append(float(value))
    return out


def _short(value, n: int = 40) -> str:
    """A value for an error line: its repr, cut to about ``n`` characters."""
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"
