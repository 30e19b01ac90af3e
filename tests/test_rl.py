"""GRPO-style reinforcement learning (training/rl.py): the objective against its closed forms (and trl's
pieces where trl exposes them), rewards that misbehave, the rollout stream, and a tiny GPT that learns."""

import math

import pytest
import torch

from glassformer.errors import ConfigError, InputError
from glassformer.training.rl import (group_advantages, grpo_loss, grpo_token_losses, k3_divergence, load_reward,
                                     scored)


# -- the objective -----------------------------------------------------------------------------------
def test_group_advantages_closed_form():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 3.0]])
    # group 1: mean 0.5, Bessel std sqrt(1/3); group 2: all equal; group 3: mean 0.75, std 1.5
    s1 = math.sqrt(1 / 3)
    expected = torch.tensor([[0.5 / (s1 + 1e-4), -0.5 / (s1 + 1e-4), -0.5 / (s1 + 1e-4), 0.5 / (s1 + 1e-4)],
                             [0.0, 0.0, 0.0, 0.0],
                             [-0.75 / 1.5001, -0.75 / 1.5001, -0.75 / 1.5001, 2.25 / 1.5001]])
    torch.testing.assert_close(group_advantages(rewards), expected)
    unscaled = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4, [-0.75, -0.75, -0.75, 2.25]])
    torch.testing.assert_close(group_advantages(rewards, scale_by_std=False), unscaled)
    assert (group_advantages(rewards).sum(dim=1).abs() < 1e-5).all()        # every group's advantages sum to 0


def test_group_advantages_equal_trl_formula():
    trl_utils = pytest.importorskip("trl.trainer.utils")
    torch.manual_seed(0)
    rewards = torch.randn(5, 8)
    flat = rewards.flatten()          # trl's layout: the G completions of a prompt are consecutive
    mean = flat.view(-1, 8).mean(dim=1).repeat_interleave(8)
    std = trl_utils.nanstd(flat.view(-1, 8), dim=1).repeat_interleave(8)
    torch.testing.assert_close(group_advantages(rewards).flatten(), (flat - mean) / (std + 1e-4))


def test_k3_divergence_closed_form():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -1.0, -3.0])
    expected = torch.tensor([math.exp(r - p) - (r - p) - 1 for p, r in zip(logp.tolist(), ref.tolist())])
    torch.testing.assert_close(k3_divergence(logp, ref), expected)
    assert k3_divergence(logp, ref)[0] == 0 and (k3_divergence(logp, ref) >= 0).all()


def _loss_by_hand(logp, old, adv, mask, eps, beta, ref):
    """The clipped objective token by token, in plain Python floats."""
    total, count = 0.0, 0
    for b in range(len(logp)):
        for t in range(len(logp[b])):
            if not mask[b][t]:
                continue
            ratio = math.exp(logp[b][t] - old[b][t])
            clipped = min(max(ratio, 1 - eps), 1 + eps)
            token = -min(ratio * adv[b], clipped * adv[b])
            if beta:
                d = ref[b][t] - logp[b][t]
                token += beta * (math.exp(d) - d - 1)
            total, count = total + token, count + 1
    return total / count


@pytest.mark.parametrize("eps,beta", [(0.2, 0.0), (0.1, 0.04)])
def test_grpo_loss_closed_form(eps, beta):
    torch.manual_seed(1)
    logp = -torch.rand(3, 5) * 3
    old = logp + 0.4 * torch.randn(3, 5)            # ratios both inside and outside [1 - eps, 1 + eps]
    ref = logp + 0.3 * torch.randn(3, 5)
    adv = torch.tensor([1.5, -0.7, 0.0])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool)
    got = grpo_loss(logp, old, adv, mask, eps=eps, beta=beta, ref_logp=ref)
    expected = _loss_by_hand(logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), eps, beta, ref.tolist())
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_grpo_gradient_on_policy_and_clipped():
    """On the policy that sampled (old = logp detached) the gradient of each token's loss is -A ∇logp; a ratio
    clipped on the side its advantage pushes toward gives no gradient."""
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([2.0])
    mask = torch.ones(1, 2, dtype=torch.bool)
    grpo_loss(logp, logp.detach(), adv, mask).backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.0, -1.0]]))      # -A / n_tokens
    logp.grad = None
    old = torch.tensor([[-1.5, -1.0]])     # ratios e^0.5 (above 1.2: clipped, A > 0) and e^-1 (below: not clipped)
    grpo_loss(logp, old, adv, mask).backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -math.exp(-1.0)]]))


def test_grpo_token_losses_need_a_reference_for_beta():
    logp = torch.zeros(1, 2)
    with pytest.raises(ConfigError, match="ref_logp"):
        grpo_token_losses(logp, logp, torch.ones(1), beta=0.1)


# -- rewards -------------------------------------------------------------------------------------------
def test_load_reward_by_module_and_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text("def starts_with_a(prompt, completion):\n    return float(completion.startswith('a'))\n"
                    "NOT_A_FUNCTION = 3\n")
    reward = load_reward(f"{path}:starts_with_a")
    assert scored(reward, ["p", "p"], ["abc", "xyz"], [{}, {}]) == [1.0, 0.0]
    assert load_reward("operator:sub")(3.0, 1.0) == 2.0                 # any importable module
    for spec, words in [("no_colon", "module:function"), (f"{path}:missing", "no function 'missing'"),
                        (f"{path}:NOT_A_FUNCTION", "no function"), ("no_such_module_xyz:f", "cannot import"),
                        (f"{tmp_path}/absent.py:f", "is not a file")]:
        with pytest.raises(InputError, match=words):
            load_reward(spec)


def test_a_reward_that_raises_or_returns_a_non_number_is_named(tmp_path):
    path = tmp_path / "bad_rewards.py"
    path.write_text("def raises(prompt, completion):\n    raise KeyError('answer')\n"
                    "def text(prompt, completion):\n    return 'yes'\n"
                    "def nan(prompt, completion):\n    return float('nan')\n")
    for name, words in [("raises", "raised KeyError"), ("text", "returned 'yes'"), ("nan", "returned nan")]:
        with pytest.raises(InputError, match=words) as caught:
            scored(load_reward(f"{path}:{name}"), ["What is 1 + 1?"], ["2"], [{}])
        message = str(caught.value)
        assert f"{path}:{name}" in message and "\n" not in message
