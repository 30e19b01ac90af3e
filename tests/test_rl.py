"""GRPO-style reinforcement learning (training/rl.py): the objective against its closed forms (and trl's
pieces where trl exposes them), rewards that misbehave, the rollout stream, and a tiny GPT that learns."""

import json
import math
import signal
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from helpers import one_line_error, run_cli

from glassformer.errors import ConfigError, InputError
from glassformer.model_dir import save_model_dir
from glassformer.models import GPT, preset
from glassformer.tokenizers import Tokenizer
from glassformer.training.posttrain import load_policy
from glassformer.training.rl import (Rollouts, RLSettings, group_advantages, grpo_loss, grpo_token_losses,
                                     k3_divergence, load_reward, rl_data, scored, train_rl)


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


def test_grpo_loss_equals_trls_compute_loss():
    """trl's own GRPOTrainer._compute_loss (loss_type "dapo", its default: token-level normalisation) on a
    stand-in trainer whose model returns the log-probabilities we choose."""
    grpo = pytest.importorskip("trl.trainer.grpo_trainer", reason="the comparison with trl needs it")
    torch.manual_seed(3)
    rows, length, eps, beta = 4, 6, 0.2, 0.04
    logp = -torch.rand(rows, length) * 3
    old = logp + 0.3 * torch.randn(rows, length)
    ref = logp + 0.3 * torch.randn(rows, length)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 1:] = 0
    advantages = torch.tensor([1.2, -0.4, 0.0, 2.0])
    stand_in = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token", beta=beta,
        epsilon_low=eps, epsilon_high=eps, loss_type="dapo", use_vllm=False, _entropy_bonus_enabled=False,
        aux_loss_enabled=False, args=SimpleNamespace(delta=None, use_bias_correction_kl=False),
        model=SimpleNamespace(training=False), current_gradient_accumulation_steps=1,
        accelerator=SimpleNamespace(num_processes=1, reduce=lambda x, reduction: x, gather=lambda x: x),
        _metrics={"eval": defaultdict(list)})
    inputs = {"prompt_ids": torch.zeros(rows, 2, dtype=torch.long),
              "prompt_mask": torch.ones(rows, 2, dtype=torch.long),
              "completion_ids": torch.zeros(rows, length, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    theirs = grpo.GRPOTrainer._compute_loss(stand_in, None, inputs)
    ours = grpo_loss(logp, old, advantages, mask.bool(), eps=eps, beta=beta, ref_logp=ref)
    torch.testing.assert_close(ours, theirs)
    assert stand_in._metrics["eval"]["kl"]                  # (the stand-in ran trl's KL branch)


# -- rollouts and the run, on a tiny GPT -----------------------------------------------------------------
LETTERS = "abcd"


def tiny_model_dir(path):
    """A tiny random GPT with a character vocabulary that spells the default chat template and a few letters."""
    torch.manual_seed(0)
    tokenizer = Tokenizer.train_char(["User: Assistant:\n" + LETTERS])
    model = GPT(preset("gpt-tiny", vocab_size=tokenizer.vocab_size, max_len=48))
    save_model_dir(path, model, tokenizer, generation={"task": "lm"})
    return path


def starts_with_a(prompt, completion, **fields):
    return float(completion.startswith("a"))


def settings_for_toy(tmp_path, **changes):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["a", "b", "c", "d", "ab", "cd"]))
    rewards = tmp_path / "toy_rewards.py"
    rewards.write_text("def starts_with_a(prompt, completion):\n    return float(completion.startswith('a'))\n"
                       "def always_one(prompt, completion):\n    return 1.0\n")
    base = dict(base=str(tiny_model_dir(tmp_path / "base")), data=str(prompts), reward=f"{rewards}:starts_with_a",
                batch_size=4, group=8, max_new_tokens=3, steps=8, lr=3e-2, warmup=0, eval_every=8, eval_questions=6,
                log_every=1, progress=False, device="cpu")
    return RLSettings(**{**base, **changes})


def test_rollouts_mask_advantages_and_skipped_groups(tmp_path):
    settings = settings_for_toy(tmp_path)
    policy = load_policy(settings)
    reward = load_reward(settings.reward)
    data = rl_data(settings, policy, reward)
    stream = Rollouts(policy, data.rows["train"], data.prompts["train"], reward, settings)
    batch = next(stream)
    # the mask covers exactly the completion tokens: after each prompt, up to the row's end
    for row, mask in zip(batch.ids.tolist(), batch.mask.tolist()):
        covered = [row[t + 1] for t in range(len(mask)) if mask[t]]
        assert 1 <= len(covered) <= settings.max_new_tokens
        first = mask.index(True) + 1                      # the first completion token's position
        text = policy.tokenizer.decode(row[:first])
        assert text.endswith("Assistant: ")                # the prompt ends where the completion starts
    assert batch.n_tokens == int(batch.mask.sum())
    # every kept group has rewards that differ: its advantages are not all zero and sum to zero
    groups = batch.advantages.view(-1, settings.group)
    assert (groups.abs().sum(dim=1) > 0).all() and (groups.sum(dim=1).abs() < 1e-4).all()
    figures = batch.figures
    assert 0 <= figures["skipped_groups"] <= 1 and 0 <= figures["reward"] <= 1 and figures["generation_s"] > 0
    assert groups.shape[0] >= 1
    # a reward that is always 1: every group is skipped, the stream says so, and the advantages are zero
    always = load_reward(settings.reward.replace("starts_with_a", "always_one"))
    stream = Rollouts(policy, data.rows["train"], data.prompts["train"], always, settings)
    batch = next(stream)
    assert batch.figures["skipped_groups"] == 1.0 and batch.figures["reward"] == 1.0
    assert (batch.advantages == 0).all() and batch.ids.shape[0] == settings.batch_size * settings.group
    assert stream.draws == Rollouts.DRAWS                 # it drew again before giving up


def test_the_mean_reward_rises_on_a_toy_task(tmp_path):
    """The reward is 1 when the completion starts with "a": a tiny random GPT learns it in a few steps (seeded)."""
    run = train_rl(settings_for_toy(tmp_path), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    rewards = [r["reward"] for r in train]
    assert len(rewards) == 8
    first, last = sum(rewards[:2]) / 2, sum(rewards[-2:]) / 2
    assert last > first + 0.3, rewards
    assert all(key in train[-1] for key in ("correct", "length", "skipped_groups", "generation_s", "update_s"))
    assert (tmp_path / "run" / "best" / "model.safetensors").exists()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["valid"]["reward"] == run.test["reward"]


def test_a_reward_that_fails_during_training_stops_the_command_with_one_line(tmp_path, capsys):
    settings = settings_for_toy(tmp_path)
    (tmp_path / "late.py").write_text("def fails(prompt, completion):\n    return None\n")
    code, _, err = run_cli(capsys, "train", "rl", "--model", settings.base, "--prompts", settings.data,
                           "--reward", f"{tmp_path / 'late.py'}:fails", "--out", tmp_path / "out", "--steps", 2,
                           "--max-new-tokens", 3, "--device", "cpu")
    one_line_error(code, err, "late.py:fails", "returned None")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags,words", [
    (["--max-new-tokens", 40], ["prompts.jsonl line 1: the prompt is 19 tokens", "at most 8 fit in the 48 tokens"]),
    (["--max-len", 22], ["prompts.jsonl line 5: the prompt is 20 tokens", "at most 19 fit in the 22 tokens"]),
    (["--reward", "nowhere_xyz:f"], ["--reward 'nowhere_xyz:f'", "cannot import nowhere_xyz"]),
    (["--group", 1], ["group=1 is invalid", "at least 2"]),
    (["--distributed", "fsdp"], ["--distributed fsdp runs under torchrun"]),   # (FSDP: test_distributed_posttrain)
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, flags, words):
    settings = settings_for_toy(tmp_path)
    given = {"--reward": settings.reward, "--max-new-tokens": 3, **dict(zip(flags[::2], flags[1::2]))}
    code, _, err = run_cli(capsys, "train", "rl", "--model", settings.base, "--prompts", settings.data,
                           "--out", tmp_path / "out", "--device", "cpu", *[x for kv in given.items() for x in kv])
    one_line_error(code, err, *words)
    assert not (tmp_path / "out").exists()


def test_a_prompts_file_needs_a_reward(tmp_path, capsys):
    settings = settings_for_toy(tmp_path)
    code, _, err = run_cli(capsys, "train", "rl", "--model", settings.base, "--prompts", settings.data,
                           "--out", tmp_path / "out")
    one_line_error(code, err, "needs a reward", "--reward module:function")


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8.0}])
def test_the_kl_penalty_reads_the_starting_model(tmp_path, lora):
    """With beta > 0 the reference is the starting model (a frozen copy, or with LoRA the same model with its
    adapters disabled): zero KL before the first update; after updates the policy moves away and the
    reference does not."""
    from glassformer.training.posttrain import token_logprobs
    from glassformer.training.rl import reference_logprobs, rl_loss

    settings = settings_for_toy(tmp_path, beta=0.1, lora=lora, lr=5e-2)
    policy = load_policy(settings)
    reward = load_reward(settings.reward)
    data = rl_data(settings, policy, reward)
    reference = reference_logprobs(policy, settings, "cpu")
    stream = Rollouts(policy, data.rows["train"], data.prompts["train"], reward, settings, reference=reference)
    batch = next(stream)
    torch.testing.assert_close(batch.ref_logp, token_logprobs(policy.model, batch.ids).detach())
    loss = rl_loss(settings)
    assert float(loss(policy.model, batch).figures["kl"]) == pytest.approx(0.0, abs=1e-6)
    optimizer = torch.optim.Adam([p for p in policy.model.parameters() if p.requires_grad], lr=settings.lr)
    for _ in range(3):
        out = loss(policy.model, batch)
        (out.total / out.n_tokens).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert float(loss(policy.model, batch).figures["kl"]) > 1e-4
    torch.testing.assert_close(reference(batch.ids), batch.ref_logp)          # the reference did not move


def test_a_resumed_run_samples_and_learns_as_the_uninterrupted_one(tmp_path, monkeypatch):
    from glassformer.errors import TrainingInterrupted
    from glassformer.training.trainer import Trainer

    whole = train_rl(settings_for_toy(tmp_path, steps=6, eval_every=3), tmp_path / "whole")
    original = Trainer.train_step

    def interrupted_after_3(self, batches):          # as a SIGTERM during the third step
        out = original(self, batches)
        if self.step == 2:
            self._signal = signal.SIGTERM
        return out

    monkeypatch.setattr(Trainer, "train_step", interrupted_after_3)
    with pytest.raises(TrainingInterrupted):
        train_rl(settings_for_toy(tmp_path, steps=6, eval_every=3), tmp_path / "cut")
    monkeypatch.undo()
    resumed = train_rl(None, tmp_path / "cut", resume=True)

    def rewards(run):
        records = [json.loads(line) for line in (run.out_dir / "log.jsonl").read_text().splitlines()]
        return [r["reward"] for r in records if r["kind"] == "train"]

    assert resumed.result.resumed_from == 3
    assert rewards(resumed) == rewards(whole)
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor)


def test_the_numbers_task_rows_and_reward():
    from glassformer.data.instructions import numbers_instructions
    from glassformer.training.rl import exact_answer

    q = numbers_instructions("train", 1)[0]
    assert exact_answer(q.prompt, f" {q.answer}\nmore", answer=q.answer, kind=q.kind) == 1.0
    assert exact_answer(q.prompt, f"{q.answer}0", answer=q.answer, kind=q.kind) == 0.0


def test_train_rl_on_the_built_in_task_from_the_command_line(tmp_path, capsys):
    """--task numbers-instruct: the exact-answer reward, held-out exact match per question type at each evaluation
    and on the test questions in results.json, the figures of every step in log.jsonl."""
    from glassformer.data.instructions import numbers_instructions

    torch.manual_seed(0)
    texts = [q.prompt + q.answer for split in ("train", "valid", "test") for q in numbers_instructions(split, 400)]
    tokenizer = Tokenizer.train_char(["User: Assistant:\n", *texts])
    save_model_dir(tmp_path / "base", GPT(preset("gpt-tiny", vocab_size=tokenizer.vocab_size, max_len=128)), tokenizer,
                   generation={"task": "lm"})
    code, out, err = run_cli(capsys, "train", "rl", "--model", tmp_path / "base", "--task", "numbers-instruct",
                             "--out", tmp_path / "run", "--steps", 2, "--batch-size", 2, "--group", 4,
                             "--max-new-tokens", 8, "--examples", 20, "--eval-questions", 8, "--eval-every", 2,
                             "--log-every", 1, "--device", "cpu")
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.endswith(f"held-out exact match 0.000; model saved to {tmp_path / 'run' / 'best'}"), last
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {"exact", "exact_words", "exact_add", "exact_compare", "exact_german"} <= set(results["test"])
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(r["correct"] == 0.0 and r["reward"] == 0.0 for r in train)   # a random model
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2] and "exact_add" in records[-1]


def test_a_lora_run_saves_adapters_and_resumes(tmp_path, capsys):
    settings = settings_for_toy(tmp_path)
    code, out, err = run_cli(capsys, "train", "rl", "--model", settings.base, "--prompts", settings.data,
                             "--reward", settings.reward, "--out", tmp_path / "run", "--steps", 2, "--eval-every", 2,
                             "--max-new-tokens", 3, "--batch-size", 2, "--lora", "--lora-r", 2, "--beta", 0.1,
                             "--device", "cpu")
    assert code == 0, err
    assert "with LoRA r=2" in out and "KL penalty β 0.1" in out
    assert (tmp_path / "run" / "best" / "adapter_config.json").is_file()
    code, _, err = run_cli(capsys, "train", "rl", "--resume", tmp_path / "run", "--steps", 4, "--extend")
    assert code == 0, err                                   # (resuming exactly: tests/test_posttrain_resume.py)
