"""Reinforcement learning with a verifiable reward: GRPO-style policy gradient for a decoder.

Used by ``glassformer train rl`` and usable from Python::

    from glassformer.training.rl import RLSettings, train_rl
    run = train_rl(RLSettings(base="runs/sft/best", data="numbers-instruct", group=8), "runs/rl")

Each step samples G completions (a *group*, default 8) for each of P prompts with the library's one
batched generation loop (a static KV cache; its step compiled with CUDA graphs on a GPU), scores every
completion with a reward ``reward(prompt, completion) -> float`` (a program that checks the answer), and
moves the policy toward the completions that scored above their group's mean (Shao et al. 2024,
DeepSeekMath §4.1):

    advantage   A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4)        (the division optional)
    ratio       ρ_t = π(o_t | q, o_<t) / π_old(o_t | q, o_<t)
    loss        -Σ_t min(ρ_t A, clip(ρ_t, 1 - ε, 1 + ε) A) + β Σ_t KL_t      over every completion token,
                divided by their number over the whole step (token-level normalisation)
    KL_t        exp(ref_t - logp_t) - (ref_t - logp_t) - 1                  the k3 estimator (Schulman 2020),
                ref_t the reference model's log-probability (β = 0 by default: no reference needed)

The standard deviation is Bessel's (n - 1), and ε = 0.2, β = 0 and the token-level normalisation
are ``trl``'s GRPOTrainer defaults (its ``loss_type="dapo"``).  A group whose rewards are all equal
has advantages of zero: it teaches nothing, so it is dropped before the update and its share
reported; a draw with no group left is drawn again (DAPO's dynamic sampling, Yu et al. 2025, bounded).
Each sampled batch is used for one update, so the policy that sampled it is the one being updated:
the old log-probabilities are the current ones, detached (ρ = 1 in value, its gradient that of
log π), as in ``trl`` with one iteration per generation.

The reference model for the KL penalty costs no copy with LoRA (the same model with its adapters
disabled); without LoRA it is a frozen copy of the starting weights.

Logged per step (log.jsonl's "train" records, the progress line): ``reward`` (mean over every completion
sampled), ``correct`` (share with a reward > 0), ``length`` (completion tokens), ``skipped_groups`` (share
of groups dropped), ``kl`` (β > 0), ``generation_s`` (sampling and scoring) and ``update_s`` (the rest of
the step), per micro-batch.  Evaluation: on the built-in task the exact-match share of greedy answers to
held-out questions, per question type (``best/``: the highest); on a prompts file the mean reward of
greedy completions.

    run_dir/
      last/          training checkpoint (a model directory, or an adapter directory with LoRA)
      best/          the best held-out figure, saved as last/ is
      log.jsonl      training and evaluation records
      results.json   best/'s figures on the test questions (a prompts file: on the validation prompts)
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import math
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor, nn

from ..data.instructions import (NUMBERS_INSTRUCT, Instruction, is_correct, numbers_instructions, read_prompt_rows,
                                 where)
from ..data.batching import Batch
from ..data.streams import DrawnBatches
from ..errors import ConfigError, InputError
from ..generation.decode import ensure_compiled
from ..generation.sampling import TEMPERATURE_RANGE, SamplingOptions, generate
from ..generation.text import text_options
from ..tokenizers.chat import encode_prompt
from .checks import check_positive_int, check_range
from .common import digest
from .posttrain import (Policy, PostTrainRun, PostTrainSettings, exact_match, load_policy, policy_saver, right_padded,
                        token_logprobs)
from .precision import autocast
from .recipe import Recipe, checked, evaluate_best, settings_for, start_run, train
from .trainer import StepLoss

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


def fields(row: dict) -> dict:
    """What a prompt row gives its reward besides the prompt (the built-in task's answer and kind)."""
    return {k: v for k, v in row.items() if k != "prompt"}


def _short(value, n: int = 40) -> str:
    """A value for an error line: its repr, cut to about ``n`` characters."""
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def exact_answer(prompt, completion: str, answer: str, **fields) -> float:
    """The built-in task's reward: 1 when the completion's answer (its first line) is exactly ``answer``, else 0."""
    return float(is_correct(answer, completion))


# -- settings --------------------------------------------------------------------------------------------
@dataclass
class RLSettings(PostTrainSettings):
    """A GRPO run's settings (besides the base's and the recipe's: PostTrainSettings).  ``batch_size`` is
    the number of prompts per micro-batch, each sampled ``group`` times."""

    data: str = NUMBERS_INSTRUCT         # a JSONL file of {"prompt", ...} rows, or the built-in task
    reward: str | None = None            # "module:function"; None: the built-in task's exact answer
    group: int = 8                       # completions sampled per prompt
    epsilon: float = 0.2                 # the ratio's clip range
    beta: float = 0.0                    # the KL penalty's weight (0: no reference model)
    scale_rewards: bool = True           # divide the advantages by the group's standard deviation
    max_new_tokens: int = 64             # tokens per completion at most
    temperature: float = 1.0             # of the sampling
    compile_sampling: bool | None = None # decode through the compiled step (CUDA graphs); None: on a CUDA GPU
    valid: str | None = None             # a JSONL file of held-out prompts (a prompts file's evaluation)
    examples: int = 4000                 # numbers-instruct: training questions
    eval_questions: int = 200            # held-out questions (or prompts) answered greedily at each evaluation
    eval_batch_size: int = 64
    batch_size: int = 8
    steps: int = 200
    lr: float = 1e-5

    task: ClassVar[str] = "rl"

    def check(self) -> None:
        super().check()
        check_positive_int(self, "group", "max_new_tokens", "examples", "eval_questions", "eval_batch_size")
        if self.group < 2:
            raise ConfigError(f"group={self.group} is invalid; the advantages compare completions of the same prompt: "
                              "sample at least 2 (--group)")
        check_range(self, "epsilon", 0, 1, low_open=True, high_open=True)
        check_range(self, "beta", 0)
        check_range(self, "temperature", *TEMPERATURE_RANGE)
        if self.valid is not None and not Path(self.valid).is_file():
            raise ConfigError(f"valid={self.valid!r} is not a JSONL file of prompts")
        if self.data != NUMBERS_INSTRUCT:
            if not Path(self.data).is_file():
                raise ConfigError(f"data={self.data!r} is neither a JSONL file of prompts nor the built-in task "
                                  f"{NUMBERS_INSTRUCT!r}")
            if self.reward is None:
                raise ConfigError("a prompts file needs a reward: give --reward module:function "
                                  "(reward(prompt, completion, **row) -> float)")


# -- rollouts: sample, score, keep the groups that teach ---------------------------------------------------
@dataclass
class RolloutBatch(Batch):
    """Prompt + completion rows of the groups kept, right-padded; what the loss reads.

    ``mask[b, t]``: ids[b, t + 1] is a completion token (EOS included), i.e. it is one of the positions of
    :func:`~.posttrain.token_logprobs`'s output the loss covers."""

    ids: Tensor                          # (rows, seq) long
    mask: Tensor                         # (rows, seq - 1) bool
    advantages: Tensor                   # (rows,)
    ref_logp: Tensor | None              # (rows, seq - 1) the reference's log-probabilities (beta > 0), else None
    n_tokens: int                        # completion tokens (the step's normaliser)
    figures: dict[str, float] = field(default_factory=dict)   # what the step logs about its rollouts


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list[list[int]], options: SamplingOptions, *,
                       streams: Sequence[int] | None = None, compile: bool = False) -> list[list[int]]:
    """The completion of each prompt (token ids) by the library's batched generation loop (one static KV
    cache; ``compile``: the model's compiled decoding step), each ending with its end-of-sequence token when
    the model ended it.  The model decodes in eval mode (no dropout) and is put back as it was."""
    options = text_options(tokenizer, options)
    if compile:
        ensure_compiled(model)
    was_training = model.training
    model.eval()
    try:
        cache, first = model.start_decoding(prompts, options.max_new_tokens, tokenizer.pad_id)
        rows = generate(model, cache, first, options, streams=streams).tolist()
    finally:
        model.train(was_training)
    ends = set(tokenizer.eos_ids)
    return [row[: next((i + 1 for i, t in enumerate(row) if t in ends), len(row))] for row in rows]


def completion_text(tokenizer, completion: list[int]) -> str:
    """A completion's text, without its end-of-sequence token."""
    ends = set(tokenizer.eos_ids)
    return tokenizer.decode(completion[:-1] if completion and completion[-1] in ends else completion)


class Rollouts(DrawnBatches):
    """The training stream: each micro-batch draws ``settings.batch_size`` prompts (at random, from the seed),
    samples ``settings.group`` completions of each, scores them with ``reward``, drops the groups whose
    rewards are all equal and returns the rest as a :class:`RolloutBatch` with their advantages.  Should
    every group of a draw be uninformative, it draws again, up to :attr:`DRAWS` times, then returns the
    last draw's groups, whose advantages are zero (the update then follows the KL penalty alone).

    ``reference``: None, or a function ids (rows, seq) -> the reference's log-probabilities (beta > 0).
    Its figures: mean reward, share correct (a reward > 0), mean completion length in tokens, the share of
    groups skipped, and the seconds spent sampling and scoring, and spent since the previous micro-batch
    was handed out (the update)."""

    DRAWS = 4
    samples_from_model = True            # under FSDP the trainer draws it with the parameters whole

    def __init__(self, policy: Policy, rows: list[dict], prompts: list[list[int]], reward: Reward,
                 settings: RLSettings, *, reference: Callable[[Tensor], Tensor] | None = None,
                 precision: str = "fp32", rank: int = 0, world: int = 1):
        super().__init__(settings.seed, rank=rank, world=world)
        self.policy, self.rows, self.prompts, self.reward, self.settings = policy, rows, prompts, reward, settings
        self.reference, self.precision = reference, precision
        self.options = SamplingOptions(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                       seed=settings.seed)
        self.draws = 0                   # micro-batches drawn so far, over every process (the sampling streams)
        self.compile = settings.compile_sampling
        self._handed_out: float | None = None

    def draw(self) -> list[int]:
        return torch.randint(len(self.rows), (self.settings.batch_size,), generator=self.generator).tolist()

    def __next__(self) -> RolloutBatch:
        start = time.perf_counter()
        update = start - self._handed_out if self._handed_out is not None else float("nan")
        g = self.settings.group
        rewards, lengths, skipped = [], [], 0
        for _ in range(self.DRAWS):
            chosen = [self.draw() for _ in range(self.world)][self.rank]
            sequences, prompt_lengths, scores = self.rollout(chosen, self.draws * self.world + self.rank)
            self.draws += 1
            grouped = torch.tensor(scores).view(len(chosen), g)                # (P, G)
            informative = (grouped != grouped[:, :1]).any(dim=1)               # (P,) rewards that differ
            rewards += scores
            lengths += [len(s) - n for s, n in zip(sequences, prompt_lengths)]
            skipped += int((~informative).sum())
            if informative.any():
                break
        keep = informative.repeat_interleave(g) if informative.any() else torch.ones(len(sequences), dtype=torch.bool)
        advantages = group_advantages(grouped, self.settings.scale_rewards).flatten()[keep]
        rows = keep.nonzero().flatten().tolist()
        batch = self.batch([sequences[i] for i in rows], [prompt_lengths[i] for i in rows], advantages)
        batch.figures = {"reward": sum(rewards) / len(rewards), "correct": sum(r > 0 for r in rewards) / len(rewards),
                         "length": sum(lengths) / len(lengths), "skipped_groups": skipped / (len(rewards) // g),
                         "generation_s": time.perf_counter() - start, "update_s": update}
        self._handed_out = time.perf_counter()
        return batch

    def rollout(self, chosen: list[int], number: int) -> tuple[list[list[int]], list[int], list[float]]:
        """Sample ``group`` completions of each prompt of ``chosen`` (the draw's ``number`` picks its random
        streams) and score them: (prompt + completion ids, prompt lengths, rewards), each prompt's group
        consecutive."""
        g, policy = self.settings.group, self.policy
        prompts = [self.prompts[i] for i in chosen for _ in range(g)]
        device = next(policy.model.parameters()).device
        if self.compile is None:                     # (the model is on its device by the first draw)
            self.compile = device.type == "cuda"
        with autocast(self.precision, device):
            completions = sample_completions(policy.model, policy.tokenizer, prompts, self.options,
                                             streams=range(number * len(prompts), (number + 1) * len(prompts)),
                                             compile=self.compile)
        rows = [self.rows[i] for i in chosen for _ in range(g)]
        texts = [completion_text(policy.tokenizer, c) for c in completions]
        rewards = scored(self.reward, [r["prompt"] for r in rows], texts, [fields(r) for r in rows])
        return [p + c for p, c in zip(prompts, completions)], [len(p) for p in prompts], rewards

    def batch(self, sequences: list[list[int]], prompt_lengths: list[int], advantages: Tensor) -> RolloutBatch:
        """Right-padded rows, the mask of their completion tokens, and the reference's log-probabilities."""
        ids = right_padded(sequences, self.policy.pad_id)
        positions = torch.arange(ids.shape[1] - 1)[None, :]                   # position t predicts ids[t + 1]
        starts = torch.tensor(prompt_lengths)[:, None] - 1
        ends = torch.tensor([len(s) for s in sequences])[:, None] - 1
        mask = (positions >= starts) & (positions < ends)
        ref = None
        if self.reference is not None:
            device = next(self.policy.model.parameters()).device
            with torch.no_grad(), autocast(self.precision, device):
                ref = self.reference(ids.to(device)).float()
        return RolloutBatch(ids, mask, advantages, ref, int(mask.sum()))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "draws": self.draws}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.draws = int(state["draws"])


# -- the loss, the figures ------------------------------------------------------------------------------
def rl_loss(settings: RLSettings) -> Callable[[nn.Module, RolloutBatch], StepLoss]:
    """The step's loss: the policy's log-probabilities of the sampled tokens through the (wrapped) model's
    forward, :func:`grpo_token_losses` summed over the completion tokens (the trainer divides by their
    number over the whole step); each batch is used for one update, so the old log-probabilities are the
    current ones, detached.  The figures: the batch's, and the mean KL to the reference (beta > 0)."""
    def loss(module, batch: RolloutBatch) -> StepLoss:
        logp = token_logprobs(module, batch.ids, batch.mask)       # at the completion tokens only (0 elsewhere)
        per_token, kl = grpo_token_losses(logp, logp.detach(), batch.advantages, eps=settings.epsilon,
                                          beta=settings.beta, ref_logp=batch.ref_logp)
        mask = batch.mask.to(per_token.dtype)
        figures = dict(batch.figures)
        if kl is not None:
            figures["kl"] = (kl.detach() * mask).sum() / mask.sum().clamp_min(1)
        return StepLoss((per_token * mask).sum(), batch.n_tokens, figures)
    return loss


@torch.no_grad()
def greedy_rewards(model, tokenizer, rows: list[dict], prompts: list[list[int]], reward: Reward, *,
                   max_new_tokens: int, batch_size: int = 64) -> dict[str, float]:
    """The mean reward (and share > 0) of greedy completions of ``prompts``: a prompts file's evaluation.
    ``loss`` is minus the mean reward (the trainer keeps the lowest as ``best/``)."""
    options = SamplingOptions(max_new_tokens=max_new_tokens, temperature=0.0)
    texts = [completion_text(tokenizer, c) for s in range(0, len(prompts), batch_size)
             for c in sample_completions(model, tokenizer, prompts[s:s + batch_size], options)]
    rewards = scored(reward, [r["prompt"] for r in rows], texts, [fields(r) for r in rows])
    mean = sum(rewards) / len(rewards)
    return {"loss": -mean, "reward": mean, "correct": sum(r > 0 for r in rewards) / len(rewards)}


def evaluate_rl(model, policy: Policy, data: "RLData", settings: RLSettings, split: str = "valid") -> dict[str, float]:
    """The held-out figures: on the built-in task the exact-match shares of greedy answers, per question type
    (:func:`~.posttrain.exact_match`; ``loss`` = 1 - the share, so ``best/`` is the most exact); on a
    prompts file the greedy completions' mean reward (:func:`greedy_rewards`)."""
    if data.questions:
        questions = data.questions[split]
        figures = exact_match(model, policy.tokenizer, policy.template, questions,
                              batch_size=settings.eval_batch_size)
        return {"loss": 1.0 - figures["exact"], **figures}
    return greedy_rewards(model, policy.tokenizer, data.rows[split], data.prompts[split], data.reward,
                          max_new_tokens=settings.max_new_tokens, batch_size=settings.eval_batch_size)


# -- the data ----------------------------------------------------------------------------------------------
@dataclass
class RLData:
    """The prompt rows of each split ("train", "valid", and the built-in task's "test"), their ids, and the reward."""

    rows: dict[str, list[dict]]
    prompts: dict[str, list[list[int]]]          # each row's prompt as the model reads it (the chat template's)
    reward: Reward
    questions: dict[str, list[Instruction]] = field(default_factory=dict)    # the built-in task's, per split


def rl_data(settings: RLSettings, policy: Policy, reward: Reward) -> RLData:
    """The rows of ``settings.data``: :data:`NUMBERS_INSTRUCT` (its train, valid and test questions, the same
    held-out numbers as every post-training stage) or a JSONL file of prompts (validation: the ``valid``
    file, else the file's first ``eval_questions`` rows, which it also trains on).  A prompt that leaves no
    room for ``max_new_tokens`` in the model's context is refused in one line naming its row."""
    if settings.data == NUMBERS_INSTRUCT:
        questions = {"train": numbers_instructions("train", settings.examples),
                     "valid": numbers_instructions("valid", settings.eval_questions),
                     "test": numbers_instructions("test", 400)}
        rows = {split: [{"prompt": q.prompt, "answer": q.answer, "kind": q.kind} for q in qs]
                for split, qs in questions.items()}
    else:
        questions = {}
        train_rows = read_prompt_rows(settings.data)
        valid_rows = read_prompt_rows(settings.valid) if settings.valid else train_rows[: settings.eval_questions]
        rows = {"train": train_rows, "valid": valid_rows}
    room = policy.max_len - settings.max_new_tokens
    prompts = {}
    for split, split_rows in rows.items():
        prompts[split] = [encode_prompt(policy.tokenizer, row["prompt"], policy.template) for row in split_rows]
        for i, (row, ids) in enumerate(zip(split_rows, prompts[split])):
            if len(ids) > room:
                raise InputError(f"{where(row, i)}: the prompt is {len(ids)} tokens; with {settings.max_new_tokens} "
                                 f"new tokens (--max-new-tokens) at most {max(room, 0)} fit in the {policy.max_len} "
                                 "tokens of a sequence (--max-len; default the model's context): shorten it or "
                                 "generate fewer tokens")
    return RLData(rows, prompts, reward, questions)


def reference_logprobs(policy: Policy, settings: RLSettings, device) -> Callable[[Tensor], Tensor] | None:
    """ids (rows, seq) -> the reference model's token log-probabilities, for the KL penalty (None when beta
    is 0): with LoRA the policy itself with its adapters disabled (no copy), else a frozen copy of the
    starting weights."""
    if not settings.beta:
        return None
    if policy.lora is not None:
        from ..nn.lora import adapters_disabled

        def base(ids: Tensor) -> Tensor:
            with adapters_disabled(policy.model):
                return token_logprobs(policy.model, ids)
        return base
    frozen = copy.deepcopy(policy.model).to(device).eval().requires_grad_(False)
    return lambda ids: token_logprobs(frozen, ids)


# -- the run -------------------------------------------------------------------------------------------------
class RLRun(PostTrainRun):
    """A GRPO run: its model, result, run directory, policy and best/'s held-out figures."""


def train_rl(settings: RLSettings | dict[str, Any] | None, out_dir: str | Path, *, resume: bool = False,
             extend: bool = False) -> RLRun:
    """Train ``settings.base`` by GRPO on the prompts of ``settings.data`` scored by ``settings.reward``; save
    ``out_dir/best`` (the best held-out figure) and ``out_dir/last``.  Resuming: :mod:`.common`."""
    settings, _ = settings_for(RLSettings, settings, out_dir, resume)
    reward = load_reward(settings.reward) if settings.reward else NamedReward(exact_answer, "exact_answer")
    run = start_run(settings, out_dir, resume, extend)
    policy = load_policy(settings)
    data = rl_data(settings, policy, reward)
    fp = checked(run, settings, policy.model.config, settings.steps, base_weights=policy.base_weights,
                 digest=digest(json.dumps(r, sort_keys=True) + "\n"
                               for r in (*data.rows["train"], *data.rows["valid"])))
    stream = Rollouts(policy, data.rows["train"], data.prompts["train"], reward, settings,
                      reference=reference_logprobs(policy, settings, run.device), precision=run.precision,
                      rank=run.world.rank, world=run.world.size)
    kl = f", KL penalty β {settings.beta:g} (k3)" if settings.beta else ""
    trained = train(run, settings, fp, Recipe(
        policy.model, rl_loss(settings), lambda m: evaluate_rl(m, policy, data, settings), policy_saver(policy),
        stream, policy.description,
        data=f"{len(data.rows['train']):,} prompts of {settings.data}, reward {reward_name(reward)}; "
             f"{len(data.rows['valid']):,} {'held-out' if data.questions or settings.valid else 'training'} "
             "prompts answered greedily at each evaluation",
        batch=f"{settings.batch_size} prompts × {settings.group} completions × {settings.grad_accum} micro-batches "
              f"(up to {settings.max_new_tokens} new tokens at temperature {settings.temperature:g}); clip ε "
              f"{settings.epsilon:g}{kl}, advantages {'scaled by' if settings.scale_rewards else 'not divided by'} "
              f"the group's std; lr {settings.lr:g}",
        trainer={"rate_unit": "completion tokens"}))
    split = "test" if data.questions else "valid"
    figures = evaluate_best(run, trained.result, lambda m: evaluate_rl(m, policy, data, settings, split),
                            lambda f: {split: f, "source": settings.data})
    return RLRun(trained.model, trained.result, run.out_dir, policy, figures)


__all__ = ["RLSettings", "RLRun", "RLData", "RolloutBatch", "Rollouts", "train_rl", "rl_data", "rl_loss",
           "evaluate_rl", "greedy_rewards", "sample_completions", "completion_text", "reference_logprobs",
           "group_advantages", "grpo_loss", "grpo_token_losses", "k3_divergence", "load_reward", "scored",
           "exact_answer", "NamedReward", "Reward", "STD_EPS"]
