"""Direct Preference Optimisation (Rafailov et al. 2023): a decoder trained toward the answers people prefer,
with no reward model and no sampling.

For a prompt x, a preferred answer y_c ("chosen") and a worse one y_r ("rejected"), the policy π is
pushed to raise the log-probability of y_c relative to a frozen reference π_ref (the model it
started from) more than that of y_r.  The implicit reward of an answer is

    r(x, y) = β · (log π(y | x) − log π_ref(y | x))          log-probabilities summed over the answer's tokens

and the losses (per pair; the step's loss is their mean):

    sigmoid (DPO, eq. 7)   −log σ(r(x, y_c) − r(x, y_r))
    ipo (Azar et al. 2023, eq. 17)   (h − 1/(2β))²,  h = (log π/π_ref)(y_c)/|y_c| − (log π/π_ref)(y_r)/|y_r|

IPO's log-ratios are averaged over each answer's tokens (|y|), as trl does and as the IPO authors
confirmed their results were computed: with sums, the fixed target margin 1/(2β) would ask as much
of a one-token answer as of a long one.  The rewards (and the sigmoid loss) use the sums.

β (0.1 by default, as in the paper and trl) says how far the policy may drift from the reference.

Used by ``glassformer train dpo`` and usable from Python::

    from glassformer.training.dpo import DPOSettings, train_dpo
    run = train_dpo("numbers-instruct", DPOSettings(base="runs/sft/best", steps=200), "runs/dpo")

The data: JSONL rows ``{"prompt", "chosen", "rejected"}`` (the prompt a string or a list of messages),
or the built-in ``numbers-instruct`` pairs (a right answer against a plausible wrong one).  Each
answer is encoded as supervised fine-tuning encodes a response (``tokenizers.chat.encode_example``:
the model's chat template, the end-of-sequence token after the answer a target), and its
log-probability is summed over the answer's tokens only.  A step's chosen and rejected rows form one
batch (chosen rows first)::

    ids      [ prompt₁ chosen₁ ; prompt₂ chosen₂ ; prompt₁ rejected₁ ; prompt₂ rejected₂ ]   right-padded
    log π    summed over each row's answer tokens -> (2·pairs,) -> chunk: chosen (pairs,), rejected (pairs,)

which runs as one forward per group of rows of similar length, each cut to its longest row
(``posttrain.length_groups``): prompts and answers of very different lengths would otherwise spend
much of the forward on padding.

The reference π_ref is the base model, never a second copy of it in memory:

* with LoRA, the same model with its adapters switched off (``nn.lora.adapters_disabled``): one
  more forward per step, under ``no_grad``;
* otherwise its log-probabilities of every pair, computed once before the first step and saved in
  ``reference.safetensors`` (a resumed run reads them back, so it trains against the very numbers
  the run started with, whatever device or precision it resumes on).

Each evaluation reports, on the validation pairs: the loss, the preference accuracy (the share of
pairs whose chosen answer gets the higher reward), the mean reward margin, and the mean chosen and
rejected rewards.

    run_dir/
      reference.safetensors   the reference's summed log-probabilities, (pairs, 2) for train and valid
      last/                   training checkpoint (a model directory, or an adapter directory with LoRA)
      best/                   the model with the lowest validation loss
      log.jsonl               training and evaluation records
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import Batch
from ..data.instructions import (NUMBERS_INSTRUCT, Instruction, numbers_instructions, numbers_preferences,
                                 read_preference_rows, where)
from ..data.streams import EpochBatches
from ..errors import ConfigError, InputError
from ..files import write_bytes_atomically
from ..tokenizers.chat import encode_example
from .checks import check_positive_int, check_range
from .common import digest
from .posttrain import (Policy, PostTrainRun, PostTrainSettings, exact_match, held_out, load_policy, policy_saver,
                        response_logprob_sums, right_padded)
from .precision import autocast
from .recipe import Recipe, checked, evaluate_best, settings_for, start_run, train, written_once
from .trainer import StepLoss

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


# -- settings --------------------------------------------------------------------------------------
@dataclass
class DPOSettings(PostTrainSettings):
    """A preference-optimisation run (and what every post-training run reads: PostTrainSettings)."""

    beta: float = 0.1                    # how far the policy may drift from the reference (trl's default)
    loss: str = "sigmoid"                # sigmoid (DPO) | ipo
    batch_size: int = 8                  # pairs per micro-batch: twice as many rows in the forward
    examples: int = 2000                 # numbers-instruct: training pairs
    valid_fraction: float = 0.05         # pairs of a --data file held out for validation (no --valid file)
    eval_questions: int = 200            # numbers-instruct: held-out questions answered at each evaluation
    eval_batch_size: int = 64

    setting_name: ClassVar[str] = "preference-optimisation setting"
    task: ClassVar[str] = "dpo"

    def check(self) -> None:
        super().check()
        check_positive_int(self, "examples", "eval_questions", "eval_batch_size")
        check_range(self, "beta", 0, low_open=True)
        check_range(self, "valid_fraction", 0, 1, low_open=True, high_open=True)
        if self.loss not in LOSSES:
            raise ConfigError(f"loss={self.loss!r} is invalid; choose one of {list(LOSSES)}")


class DPORun(PostTrainRun):
    """A preference-optimisation run: its model, result, run directory, policy and best/'s held-out figures."""


# -- the data: preference pairs as token ids ---------------------------------------------------------
REFERENCE = "reference.safetensors"
TEST_PAIRS = 400                                  # numbers-instruct: test pairs and questions (results.json)


@dataclass
class PreferenceData:
    train: list[dict[str, Any]]
    valid: list[dict[str, Any]]
    test: list[dict[str, Any]]           # empty for a file: results.json holds the validation figures
    valid_questions: list[Instruction]   # numbers-instruct: answered by greedy decoding at each evaluation
    test_questions: list[Instruction]


def preference_data(source: str | Path, settings: DPOSettings, valid: str | Path | None = None) -> PreferenceData:
    """The pairs of ``source``: :data:`NUMBERS_INSTRUCT`'s (its train, valid and test numbers, split by the
    task's own seed as every post-training stage splits them), or a JSONL file's (validation: ``valid``,
    else a seeded ``valid_fraction`` of its rows, at least one)."""
    if str(source) == NUMBERS_INSTRUCT:
        if valid:
            raise InputError(f"{NUMBERS_INSTRUCT} brings its own validation pairs; leave out --valid")
        n_valid = max(settings.eval_questions, 200)
        return PreferenceData(numbers_preferences("train", settings.examples), numbers_preferences("valid", n_valid),
                              numbers_preferences("test", TEST_PAIRS),
                              numbers_instructions("valid", n_valid)[:settings.eval_questions],
                              numbers_instructions("test", TEST_PAIRS))
    rows = read_preference_rows(source)
    if valid:
        return PreferenceData(rows, read_preference_rows(valid), [], [], [])
    if len(rows) < 2:
        raise InputError(f"{source} holds {len(rows)} pair; give at least two (some are held out for validation), "
                         "or a --valid FILE")
    return PreferenceData(*held_out(rows, settings.valid_fraction, settings.seed), [], [], [])


class Pair(NamedTuple):
    chosen: list[int]                # the prompt and the chosen answer (and its EOS) as ids
    chosen_targets: list[bool]       # which of them are the answer's
    rejected: list[int]
    rejected_targets: list[bool]


def encode_pairs(policy: Policy, rows: Sequence[dict]) -> list[Pair]:
    """Each row's two sequences, encoded by the policy's chat template as fine-tuning encodes a response.
    A row whose sequence is longer than the policy's ``max_len``, whose answer has no tokens, or whose
    two answers are the same tokens is refused, naming the row."""
    pairs = []
    for i, row in enumerate(rows):
        sides = []
        for side in ("chosen", "rejected"):
            try:
                ids, targets = encode_example(policy.tokenizer, {"prompt": row["prompt"], "response": row[side]},
                                              policy.template)
            except InputError as e:
                raise InputError(f"{where(row, i)}: {side}: {e}") from None
            if len(ids) > policy.max_len:
                raise InputError(f"{where(row, i)}: the prompt and its {side} answer are {len(ids)} tokens, more than "
                                 f"the {policy.max_len} a sequence may have; shorten it, or raise --max-len up to "
                                 "the model's context")
            sides.append((ids, targets))
        (chosen, chosen_targets), (rejected, rejected_targets) = sides
        if chosen == rejected:
            raise InputError(f"{where(row, i)}: 'chosen' and 'rejected' are the same tokens for this model (characters "
                             "it cannot spell are dropped); a preference pair needs two different answers")
        pairs.append(Pair(chosen, chosen_targets, rejected, rejected_targets))
    return pairs


@dataclass
class PairBatch(Batch):
    """Pairs as one batch of rows: the chosen sequences, then the rejected ones."""

    ids: Tensor                  # (2·pairs, seq) right-padded
    targets: Tensor              # (2·pairs, seq) bool: the answers' tokens
    reference: Tensor | None     # (2·pairs,) the reference's summed log-probabilities, or None (computed: LoRA)
    n_tokens: int                # pairs (the loss normaliser; counted on the CPU)
    lengths: tuple[int, ...] | None = None   # each row's unpadded length (on the CPU: rows run grouped by length)


def collate_pairs(pairs: Sequence[Pair], pad_id: int, reference: Tensor | None = None) -> PairBatch:
    """``pairs`` as a :class:`PairBatch`; ``reference`` (pairs, 2): their reference log-probabilities."""
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    targets = [p.chosen_targets for p in pairs] + [p.rejected_targets for p in pairs]
    ref = None if reference is None else reference.t().reshape(-1)        # chosen column, then rejected
    return PairBatch(right_padded(rows, pad_id), right_padded(targets, False).bool(), ref, len(pairs),
                     tuple(len(row) for row in rows))


class PairStream(EpochBatches):
    """Micro-batches of ``batch_size`` pairs, epoch after epoch, each epoch shuffled from (seed, epoch)."""

    def __init__(self, pairs: Sequence[Pair], batch_size: int, seed: int, pad_id: int,
                 reference: Tensor | None = None, *, rank: int = 0, world: int = 1):
        super().__init__(rank=rank, world=world)
        self.pairs, self.batch_size, self.seed, self.pad_id, self.reference = pairs, batch_size, seed, pad_id, reference

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.pairs)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def collate(self, indices: list[int]) -> PairBatch:
        reference = None if self.reference is None else self.reference[indices]
        return collate_pairs([self.pairs[i] for i in indices], self.pad_id, reference)


def in_order(pairs: Sequence[Pair], batch_size: int, pad_id: int, reference: Tensor | None = None) -> list[PairBatch]:
    """``pairs`` in batches of ``batch_size``, in order (validation; the reference computed once)."""
    return [collate_pairs(pairs[i:i + batch_size], pad_id, None if reference is None else reference[i:i + batch_size])
            for i in range(0, len(pairs), batch_size)]


# -- the reference ------------------------------------------------------------------------------------
@torch.no_grad()
def reference_logprobs(model: nn.Module, pairs: Sequence[Pair], batch_size: int, pad_id: int, device,
                       precision: str = "fp32") -> Tensor:
    """The summed log-probabilities (pairs, 2) of each pair's chosen and rejected answer under ``model``
    (the base: before any step), computed as training computes the policy's (``precision``'s autocast)."""
    was_training = model.training
    model.eval()
    sums = []
    for batch in in_order(pairs, batch_size, pad_id):
        batch = batch.to(device)
        with autocast(precision, device):
            chosen, rejected = response_logprob_sums(model, batch.ids, batch.targets, batch.lengths).chunk(2)
        sums.append(torch.stack([chosen, rejected], dim=1).cpu())
    model.train(was_training)
    return torch.cat(sums) if sums else torch.zeros(0, 2)


def saved_reference(run, model: nn.Module, splits: dict[str, Sequence[Pair]], batch_size: int,
                    pad_id: int) -> dict[str, Tensor]:
    """The reference log-probabilities of each split's pairs: read from the run's ``reference.safetensors``
    when it is resumed, else computed by the main process and written there (the others read them)."""
    from safetensors.torch import load_file, save

    path = run.out_dir / REFERENCE

    def compute() -> dict[str, Tensor]:
        sums = {name: reference_logprobs(model, pairs, batch_size, pad_id, run.device, run.precision)
                for name, pairs in splits.items()}
        write_bytes_atomically(path, save(sums))
        return sums

    def read() -> dict[str, Tensor]:
        sums = load_file(str(path))
        wrong = [name for name, pairs in splits.items() if name not in sums or sums[name].shape != (len(pairs), 2)]
        if wrong:
            raise ConfigError(f"{path} does not hold the reference of this run's {' and '.join(wrong)} pairs; "
                              "the run's data changed")
        return {name: sums[name] for name in splits}

    if run.resume and path.is_file():
        return read()
    return written_once(run, compute, read)


# -- the loss, the figures ----------------------------------------------------------------------------
def pair_logprobs(module: nn.Module, batch: PairBatch, lora: bool) -> tuple[Tensor, Tensor]:
    """The policy's and the reference's summed log-probabilities of the batch's rows, (2·pairs,) each:
    the reference's as stored, or (``lora``) the same model's with its adapters off."""
    if batch.reference is not None:
        reference = batch.reference
    else:
        from ..nn.lora import adapters_disabled

        with torch.no_grad(), adapters_disabled(module):
            reference = response_logprob_sums(module, batch.ids, batch.targets, batch.lengths)
    return response_logprob_sums(module, batch.ids, batch.targets, batch.lengths), reference


def batch_loss(policy: Tensor, reference: Tensor, batch: PairBatch, settings: DPOSettings) -> PreferenceLoss:
    """:func:`dpo_loss` of a batch from its rows' summed log-probabilities (chosen rows first)."""
    lengths = batch.targets.sum(1).chunk(2)
    return dpo_loss(*policy.chunk(2), *reference.chunk(2), beta=settings.beta, kind=settings.loss, lengths=lengths)


def dpo_step_loss(settings: DPOSettings, lora: bool):
    """The trainer's loss: a micro-batch's summed preference loss, normalised by its pairs."""
    def loss(module: nn.Module, batch: PairBatch) -> StepLoss:
        return StepLoss(batch_loss(*pair_logprobs(module, batch, lora), batch, settings).loss.sum(), batch.n_tokens)
    return loss


@torch.no_grad()
def evaluate_preferences(model: nn.Module, batches: Sequence[PairBatch], settings: DPOSettings, lora: bool,
                         device, policy: Policy | None = None, questions: Sequence[Instruction] = ()) -> dict[str, float]:
    """The mean loss over ``batches`` and :func:`preference_figures` of their rewards; with ``questions``,
    their exact-match shares by greedy decoding (:func:`~.posttrain.exact_match`)."""
    losses, chosen, rejected = [], [], []
    for batch in batches:
        batch = batch.to(device)
        out = batch_loss(*pair_logprobs(model, batch, lora), batch, settings)
        losses.append(out.loss.float())
        chosen.append(out.chosen_rewards.float())
        rejected.append(out.rejected_rewards.float())
    figures = {"loss": float(torch.cat(losses).double().mean()),
               **preference_figures(torch.cat(chosen).cpu(), torch.cat(rejected).cpu())}
    if questions:
        figures.update(exact_match(model, policy.tokenizer, policy.template, questions,
                                   batch_size=settings.eval_batch_size))
    return figures


# -- the run ------------------------------------------------------------------------------------------
def train_dpo(source: str | Path | None, settings: DPOSettings | dict[str, Any] | None, out_dir: str | Path, *,
              valid: str | Path | None = None, resume: bool = False, extend: bool = False) -> DPORun:
    """Train ``settings.base`` toward the chosen answers of ``source``'s pairs (a JSONL file or
    :data:`NUMBERS_INSTRUCT`; ``valid``: a file of validation pairs) and save ``out_dir/best`` and
    ``out_dir/last``; ``results.json`` holds ``best/``'s figures on the test pairs (the validation
    pairs for a file).  Resuming: :mod:`.common`."""
    settings, saved = settings_for(DPOSettings, settings, out_dir, resume)
    source = source or saved.get("data", {}).get("source")
    valid = valid or saved.get("data", {}).get("valid")
    if not source:
        raise InputError('give the preference pairs: a JSONL file of {"prompt", "chosen", "rejected"} rows, or '
                         f"{NUMBERS_INSTRUCT!r}")
    data = preference_data(source, settings, valid)
    run = start_run(settings, out_dir, resume, extend)
    policy = load_policy(settings)
    splits = {"train": encode_pairs(policy, data.train), "valid": encode_pairs(policy, data.valid)}
    if data.test:
        splits["test"] = encode_pairs(policy, data.test)
    fp = checked(run, settings, policy.model.config, settings.steps, base_weights=policy.base_weights, source=str(source),
                 valid=str(valid) if valid else None,
                 digest=digest(f"{p.chosen}\t{p.rejected}\n" for p in (*splits["train"], *splits["valid"])))
    pad_id = policy.pad_id
    lora = policy.lora is not None
    if lora:                                       # the reference: the same model, its adapters off
        reference = dict.fromkeys(splits)
    else:                                          # the reference: computed once, before the first step
        policy.model.to(run.device)
        reference = saved_reference(run, policy.model, splits, settings.eval_batch_size, pad_id)
    batches = {name: in_order(pairs, settings.eval_batch_size, pad_id, reference[name])
               for name, pairs in splits.items() if name != "train"}

    def evaluate(model, split="valid", questions=data.valid_questions) -> dict[str, float]:
        return evaluate_preferences(model, batches[split], settings, lora, run.device, policy, questions)

    trained = train(run, settings, fp, Recipe(
        policy.model, dpo_step_loss(settings, lora), evaluate, policy_saver(policy),
        PairStream(splits["train"], settings.batch_size, settings.seed, pad_id, reference["train"],
                   rank=run.world.rank, world=run.world.size),
        policy.description, data=f"{len(splits['train']):,} training and {len(splits['valid']):,} validation "
                                 f"preference pairs of {source}",
        batch=f"batch {settings.batch_size} pairs × {settings.grad_accum} micro-batches, lr {settings.lr:g}; "
              f"{settings.loss} loss, beta {settings.beta:g}; reference: "
              + ("the base (adapters off)" if lora else "the base's log-probabilities, computed once"),
        trainer={"rate_unit": "pairs"}))
    split = "test" if data.test else "valid"
    figures = evaluate_best(run, trained.result, lambda m: evaluate(m, split, data.test_questions),
                            lambda f: {split: f, "source": str(source)})
    return DPORun(trained.model, trained.result, run.out_dir, policy, figures)


__all__ = ["dpo_loss", "PreferenceLoss", "preference_figures", "LOSSES", "DPOSettings", "DPORun", "train_dpo",
           "preference_data", "PreferenceData", "encode_pairs", "Pair", "PairBatch", "collate_pairs", "PairStream", "in_order",
           "reference_logprobs", "saved_reference", "pair_logprobs", "batch_loss", "dpo_step_loss",
           "evaluate_preferences", "REFERENCE", "TEST_PAIRS"]
