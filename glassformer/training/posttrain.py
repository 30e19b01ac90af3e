"""What post-training shares (supervised fine-tuning, DPO, RL): a loaded decoder to train — the policy —,
its log-probabilities of given tokens, and how a trained one is saved.

Every post-training task starts from a model directory (``settings.base``): one of ours trained by
``glassformer train lm`` or a converted Hugging Face GPT-2 / Llama directory.  :func:`load_policy`
loads it with its tokenizer and chat template and, with ``settings.lora``, wraps its projections in
low-rank adapters (``glassformer.nn.lora``: the base weights frozen).  :func:`policy_saver` writes
what the run saves: an adapter directory with LoRA, else a model directory with the base's
tokenizer, generation settings and the chat template it was trained with.

The log-probability of a response (DPO's and RL's quantity) is one forward over right-padded rows,
with the output layer applied at the target positions only (the prompt's never reach it)::

    ids      BOS  User: ...  Assistant:  9   5   \\n  EOS  pad pad
    targets   .       .           .      x   x   x    x    .   .
    log p(ids[t+1] | ids[:t+1])  summed where targets[t+1]      -> (batch,)

Right padding changes nothing for the real tokens: attention is causal, so a token never sees the
pads after it.  Nor does cutting it: given the rows' lengths, rows of similar length run together,
each group padded to its own longest row only (:func:`length_groups`) — a batch of short and long
answers (DPO's) spends much of one right-padded forward on padding.
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor, nn

from ..data.instructions import KINDS, is_correct
from ..errors import CheckpointError, ConfigError
from ..model_dir import ModelDir, load_model_dir, save_model_dir
from ..models import GPT
from ..tokenizers import Tokenizer
from ..tokenizers.chat import chat_template, encode_prompt
from .checks import check_positive_int
from .recipe import RecipeSettings, Trained


@dataclass
class PostTrainSettings(RecipeSettings):
    """What every post-training task reads besides its data (and the recipe's settings: RecipeSettings).
    The defaults are a fine-tuning's: a small learning rate, short warm-up, no weight decay (trl's)."""

    base: str = ""                       # the model directory trained from (ours or a converted HF GPT-2/Llama)
    lora: dict | None = None             # LoRAConfig fields (glassformer.nn.lora); None: every weight trains
    max_len: int | None = None           # tokens per example; None: the model's context
    batch_size: int = 16
    steps: int = 300
    lr: float = 1e-4
    warmup: int = 10
    weight_decay: float = 0.0
    eval_every: int = 50

    setting_name: ClassVar[str] = "post-training setting"

    def check(self) -> None:
        check_positive_int(self, "batch_size", "grad_accum", "steps", "eval_every")
        check_positive_int(self, "max_len", optional=True)
        if not self.base:
            raise ConfigError("base is missing: give the model directory to fine-tune (--model MODEL_DIR)")
        if not Path(self.base).is_dir():
            raise ConfigError(f"base={self.base!r} is not a model directory; give one written by `glassformer "
                              "train lm` or a converted Hugging Face GPT-2 / Llama directory")
        if self.lora is not None:
            lora_config(self.lora)           # a bad field is refused now, before anything is loaded


def lora_config(fields: dict[str, Any]):
    """The :class:`~glassformer.nn.lora.LoRAConfig` of a settings dict (ConfigError on a bad field)."""
    from ..nn.lora import LoRAConfig

    return LoRAConfig.from_dict(fields)


@dataclass
class Policy:
    """The decoder a post-training run trains, and what it reads text with."""

    model: GPT
    tokenizer: Tokenizer
    template: str                        # the chat template (glassformer.tokenizers.chat)
    loaded: ModelDir                     # the base directory as loaded (its config, generation settings)
    lora: Any = None                     # the LoRAConfig applied, or None
    base: Path | None = None             # the base directory
    max_len: int = 0                     # tokens per example

    @property
    def description(self) -> str:
        """What is trained, for the summary line a run starts with."""
        if self.lora is None:
            return "gpt"
        from ..nn.lora import trainable_parameters

        trained, total = trainable_parameters(self.model)
        return (f"gpt with LoRA r={self.lora.r}, alpha {self.lora.alpha:g} on {', '.join(self.lora.targets)}: "
                f"{trained:,} of {total:,} parameters trainable ({100 * trained / total:.2f}%)")

    @property
    def base_weights(self) -> str:
        """A digest of the base directory's weight files: a resumed run must start from the same weights,
        not only the same path."""
        h = hashlib.sha256()
        for path in sorted(self.base.glob("*.safetensors")):
            h.update(path.name.encode())
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
        return h.hexdigest()[:16]

    @property
    def pad_id(self) -> int:
        """What rows are right-padded with: the tokenizer's pad token, else its end-of-sequence token."""
        return self.tokenizer.pad_id if self.tokenizer.pad_id is not None else self.tokenizer.eos_id


def load_policy(settings: PostTrainSettings) -> Policy:
    """The base model of ``settings`` (on the CPU; the trainer places it) with its tokenizer and chat
    template, adapted by LoRA if ``settings.lora``.  A directory without a GPT-family decoder, or
    without a tokenizer that ends texts, is refused."""
    loaded = load_model_dir(settings.base)
    model = loaded.model
    if not isinstance(model, GPT):
        raise CheckpointError(f"{settings.base} holds a {getattr(loaded.config, 'family', type(model).__name__)!r} "
                              "model; post-training needs a decoder-only GPT or Llama model directory")
    tokenizer = loaded.tokenizer
    if tokenizer is None or tokenizer.eos_id is None:
        raise CheckpointError(f"{settings.base} has no tokenizer with an end-of-sequence token (tokenizer.json); "
                              "post-training needs the one the model was trained with")
    context = model.config.max_len
    if settings.max_len is not None and settings.max_len > context:
        raise ConfigError(f"max_len={settings.max_len} is more than the model's context of {context} tokens; "
                          f"use --max-len <= {context}")
    lora = None
    if settings.lora is not None:
        from ..nn.lora import add_lora

        lora = lora_config(settings.lora)
        torch.manual_seed(settings.seed)         # A drawn from the run's seed: the same in a rerun and in every process
        add_lora(model, lora)
    model.train()
    return Policy(model, tokenizer, chat_template(settings.base), loaded, lora, Path(settings.base),
                  settings.max_len or context)


@dataclass
class PostTrainRun(Trained):
    """A post-training run: the trained model, the trainer's result, the run directory, the policy
    trained and ``best/``'s held-out figures (``results.json``)."""

    policy: Policy
    test: dict[str, float]

    @property
    def best(self) -> dict[str, float]:
        """The validation figures of the saved ``best/`` model (the lowest validation loss)."""
        return min(self.result.history, key=lambda m: m["loss"])


def held_out(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """``rows`` (at least 2) split into (training, validation) rows: a seeded ``fraction`` of them held
    out, at least one and never all, each side in the file's order."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:min(len(rows) - 1, max(1, round(fraction * len(rows))))])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


# -- log-probabilities of given tokens -----------------------------------------------------------------
IGNORE = -100                            # the target of a position whose log-probability is not wanted


def right_padded(seqs: list[list[int]], pad_id: int) -> Tensor:
    """Rows of ids, right-padded with ``pad_id`` to the longest: (batch, longest) long."""
    width = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)


def token_logprobs(model: nn.Module, ids: Tensor, mask: Tensor | None = None) -> Tensor:
    """ids (batch, seq) -> log p(ids[:, t+1] | ids[:, :t+1]) (batch, seq - 1), in float32, one forward;
    with ``mask`` (batch, seq - 1) bool, only where it is set (0 elsewhere).

    It goes through the model's own forward with the next tokens as targets (so that wrappers — DDP,
    FSDP, ``torch.compile`` — see the whole computation), per token (``reduction="none"``): the fused
    output layer and cross-entropy (:func:`~glassformer.nn.linear_cross_entropy`) run at the masked
    positions only, a chunk at a time, and the (batch, seq, vocab) logits are never formed."""
    targets = ids[:, 1:] if mask is None else ids[:, 1:].masked_fill(~mask, IGNORE)
    return -model(ids[:, :-1], targets, reduction="none", ignore_index=IGNORE)


# A group of rows is one more forward; it is charged this share of the whole batch's padded tokens, so
# rows are split off only where that saves more than the share (a batch of rows of similar length, as
# fine-tuning's length-bucketed ones, stays whole).
GROUP_CHARGE = 0.1


def length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """The rows (by index) in groups of similar length: of the rows sorted by length, the contiguous
    groups with the fewest padded tokens (each group's rows × its longest, summed) plus ``GROUP_CHARGE``
    of ``len(lengths) × max(lengths)`` per group.  Each group in ascending length."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sizes = [lengths[i] for i in order]
    charge = GROUP_CHARGE * len(sizes) * sizes[-1]
    cost, start = [0.0] + [math.inf] * len(sizes), [0] * (len(sizes) + 1)     # of the first j sorted rows
    for j in range(1, len(sizes) + 1):
        for i in range(j):                                   # the last group: sorted rows i .. j-1
            total = cost[i] + (j - i) * sizes[j - 1] + charge
            if total < cost[j]:
                cost[j], start[j] = total, i
    groups, j = [], len(sizes)
    while j:
        groups.append(order[start[j]:j])
        j = start[j]
    return groups[::-1]


def response_logprob_sums(model: nn.Module, ids: Tensor, targets: Tensor, lengths: Sequence[int] | None = None) -> Tensor:
    """ids, targets (batch, seq) (targets bool: the response tokens) -> (batch,) each row's summed
    log-probability of its target tokens (computed at those tokens only).  Given the rows' unpadded
    ``lengths`` (host integers), one forward per :func:`length_groups` group, cut to its longest row:
    the same sums with less padding."""
    groups = length_groups(lengths) if lengths is not None else []
    if len(groups) <= 1:
        return token_logprobs(model, ids, targets[:, 1:]).sum(-1)
    sums, rows = [], []
    for group in groups:
        width = lengths[group[-1]]
        index = torch.tensor(group, device=ids.device)
        sums.append(token_logprobs(model, ids[index, :width], targets[index, 1:width]).sum(-1))
        rows += group
    place = [0] * len(rows)                                  # where each row's sum is in the groups' order
    for position, row in enumerate(rows):
        place[row] = position
    return torch.cat(sums)[torch.tensor(place, device=ids.device)]


# -- held-out exact match (the numbers task) ------------------------------------------------------------
@torch.no_grad()
def greedy_answers(model: nn.Module, tokenizer: Tokenizer, template: str, questions: Sequence, *,
                   batch_size: int = 64) -> list[str]:
    """The model's greedy completion of each of ``questions`` (:class:`~glassformer.data.instructions.Instruction`),
    prompted by the chat ``template``, at most as long as the longest answer and its end allow.  The model is
    put in eval mode and back."""
    from ..generation import SamplingOptions
    from ..generation.text import complete_batch

    prompts = [encode_prompt(tokenizer, q.prompt, template) for q in questions]
    room = model.config.max_len - max(len(p) for p in prompts)
    longest = max(len(tokenizer.encode(q.answer)) for q in questions) + 2      # the answer, a newline, EOS
    options = SamplingOptions(max_new_tokens=max(1, min(longest, room)), temperature=0.0)
    was_training = model.training
    model.eval()
    try:
        answers = [text for start in range(0, len(prompts), batch_size)
                   for text in complete_batch(model, tokenizer, prompts[start:start + batch_size], options)]
    finally:
        model.train(was_training)
    return answers


def exact_match(model: nn.Module, tokenizer: Tokenizer, template: str, questions: Sequence, *,
                batch_size: int = 64) -> dict[str, float]:
    """The share of ``questions`` (:class:`~glassformer.data.instructions.Instruction`) answered exactly
    (:func:`~glassformer.data.instructions.is_correct`) by greedy decoding (:func:`greedy_answers`):
    ``{"exact": all, "exact_<kind>": per kind}``."""
    answers = greedy_answers(model, tokenizer, template, questions, batch_size=batch_size)
    right: dict[str, list[bool]] = {}
    for q, text in zip(questions, answers):
        right.setdefault(q.kind, []).append(is_correct(q.answer, text))
    every = [r for rs in right.values() for r in rs]
    return {"exact": sum(every) / len(every),
            **{f"exact_{kind}": sum(right[kind]) / len(right[kind]) for kind in sorted(right, key=_kind_order)}}


def _kind_order(kind: str) -> tuple[int, str]:
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), kind)


# -- saving --------------------------------------------------------------------------------------------
def policy_saver(policy: Policy) -> Callable[[Path, nn.Module], None]:
    """The trainer's ``save``: with LoRA, an adapter directory (peft's layout, naming the base directory);
    else a model directory with the base's tokenizer and generation settings, and the chat template
    (in ``generation.json``) so the saved model is prompted as it was trained."""
    if policy.lora is not None:
        from ..interop.peft import save_adapter

        def save_adapter_dir(path: Path, model: nn.Module) -> None:
            save_adapter(path, model, policy.lora, policy.base.resolve())
        return save_adapter_dir
    generation = {**policy.loaded.generation, "chat_template": policy.template}

    def save(path: Path, model: nn.Module) -> None:
        save_model_dir(path, model, policy.tokenizer, generation=generation)
    return save


def warn(message: str) -> None:
    """A warning line on stderr (the main process's only: the caller checks)."""
    print(f"glassformer: warning: {message}", file=sys.stderr, flush=True)


__all__ = ["PostTrainSettings", "Policy", "PostTrainRun", "held_out", "load_policy", "lora_config", "right_padded",
           "token_logprobs", "response_logprob_sums", "length_groups", "greedy_answers", "exact_match", "policy_saver", "warn"]
