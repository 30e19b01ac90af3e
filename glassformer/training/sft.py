"""Supervised fine-tuning (SFT): a pretrained decoder learns to answer, on (prompt, response) examples.

Used by ``glassformer finetune sft`` and usable from Python::

    from glassformer.training.sft import SFTSettings, finetune_sft
    run = finetune_sft("numbers-instruct", SFTSettings(base="runs/lm/best", steps=300), "runs/sft")

Each row is rendered by the model's chat template (:mod:`glassformer.tokenizers.chat`) and trained
with the next-token loss on the response tokens only — the assistant's turns and the
end-of-sequence token after each, so the model learns to stop —, summed and divided by the number
of response tokens in the whole step (over every micro-batch and process: the trainer's
:class:`~.trainer.StepLoss`); ``train_on_prompt`` trains on every token::

    tokens   BOS  User: What is 38 + 57?\\n Assistant:  9  5  \\n  EOS
    targets                     .                     x  x  x   x        (loss: mean over the x)

Batches hold examples of similar length (sorted by length, batches in a random order each epoch:
little padding, and no example ever attends to another).  An example longer than ``max_len`` is
cut at the end of its response, and a warning says how many were; one whose prompt alone fills
``max_len`` is refused (its response would be lost).

Evaluation every ``eval_every`` steps: the validation loss on response tokens (``best/`` is the
lowest); on the built-in task also the exact-match share of held-out questions answered by greedy
decoding, per question type.  After training, ``results.json`` holds the same figures of ``best/``
on the test questions (numbers never seen in training).

    run_dir/
      last/          training checkpoint (a model directory, or an adapter directory with LoRA)
      best/          the lowest validation loss: a model directory with the base's tokenizer and the chat
                     template (generation.json), or with LoRA an adapter directory naming the base
      log.jsonl      training and evaluation records
      results.json   the held-out figures of best/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from ..data.batching import Batch, token_budget_batches
from ..data.instructions import NUMBERS_INSTRUCT, Instruction, numbers_instructions, read_sft_rows, where
from ..data.streams import EpochBatches
from ..errors import InputError
from ..tokenizers.chat import encode_example
from .checks import check_positive_int, check_range
from .common import digest, perplexity, summed
from .posttrain import (Policy, PostTrainRun, PostTrainSettings, exact_match, held_out, length_groups, load_policy,
                        policy_saver, right_padded, warn)
from .recipe import Recipe, checked, evaluate_best, settings_for, start_run, train
from .trainer import StepLoss


@dataclass
class SFTSettings(PostTrainSettings):
    """A supervised fine-tuning run's settings (besides the base's and the recipe's: PostTrainSettings)."""

    train_on_prompt: bool = False        # the loss covers every token, not only the responses
    examples: int = 4000                 # numbers-instruct: training questions
    valid_fraction: float = 0.05         # share of a file's rows held out for validation (no valid file given)
    eval_questions: int = 200            # numbers-instruct: held-out questions answered at each evaluation
    test_questions: int = 400            # numbers-instruct: test questions answered by best/ after training
    eval_batch_size: int = 64

    task: ClassVar[str] = "sft"

    def check(self) -> None:
        super().check()
        check_positive_int(self, "examples", "eval_questions", "test_questions", "eval_batch_size")
        check_range(self, "valid_fraction", 0, 1, low_open=True, high_open=True)


# -- examples and batches --------------------------------------------------------------------------
@dataclass
class Example:
    ids: list[int]
    targets: list[bool]                  # ids[t] is a target (predicted from ids[:t])


@dataclass
class SFTBatch(Batch):
    """Right-padded examples, shifted for next-token prediction."""

    tokens: Tensor                       # (batch, seq - 1) the inputs
    labels: Tensor                       # (batch, seq - 1) the next token where it is a target, else -100
    n_tokens: int                        # target tokens
    lengths: tuple[int, ...] | None = None   # each example's length (on the CPU: rows run grouped by length)


def collate(examples: Sequence[Example], pad_id: int) -> SFTBatch:
    """Examples -> one batch.  The labels come from the target mask, never from the ids: an EOS
    target stays a target when the pad id is the same token."""
    ids = right_padded([e.ids for e in examples], pad_id)
    targets = right_padded([e.targets for e in examples], 0).bool()
    labels = ids[:, 1:].masked_fill(~targets[:, 1:], -100)
    return SFTBatch(ids[:, :-1], labels, int(targets[:, 1:].sum()), tuple(len(e.ids) for e in examples))


def encode_rows(rows: Sequence[dict[str, Any]], policy: Policy, *, train_on_prompt: bool = False,
                what: str = "training") -> list[Example]:
    """Each row rendered and tokenized (:func:`~glassformer.tokenizers.chat.encode_example`) and fitted
    to ``policy.max_len``: a longer example is cut inside its response (a warning says how many
    were); one whose prompt alone fills ``max_len`` is refused in one line naming its row."""
    max_len, tokenizer = policy.max_len, policy.tokenizer
    examples, cut, unknown = [], 0, 0
    for i, row in enumerate(rows):
        try:
            ids, targets = encode_example(tokenizer, row, policy.template)
        except InputError as e:
            raise InputError(f"{where(row, i)}: {e}") from None
        prompt = targets.index(True)     # tokens before the first response token
        if prompt >= max_len:
            raise InputError(f"{where(row, i)}: the prompt is {prompt} tokens, and the model reads {max_len} at most "
                             f"(--max-len); no response token would be left to learn from: shorten the prompt")
        if len(ids) > max_len:
            ids, targets, cut = ids[:max_len], targets[:max_len], cut + 1
        if train_on_prompt:
            targets = [t > 0 for t in range(len(ids))]
        unknown += tokenizer.unk_id is not None and tokenizer.unk_id in ids
        examples.append(Example(ids, targets))
    if cut:
        warn(f"{cut} of {len(rows)} {what} examples are longer than {max_len} tokens and were cut inside their "
             "response")
    if unknown:
        warn(f"{unknown} of {len(rows)} {what} examples hold characters the tokenizer does not know; they read "
             "as <unk>")
    return examples


class SFTStream(EpochBatches):
    """Batches of ``batch_size`` examples of similar length, epoch after epoch, in a random order from (seed, epoch)."""

    def __init__(self, examples: list[Example], batch_size: int, pad_id: int, seed: int, *, rank: int = 0,
                 world: int = 1):
        super().__init__(rank=rank, world=world)
        self.examples, self.batch_size, self.pad_id, self.seed = examples, batch_size, pad_id, seed
        self.lengths = [len(e.ids) for e in examples]
        self.budget = batch_size * max(self.lengths)            # never binding: batches are cut by count

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return token_budget_batches(self.lengths, self.budget, seed=self.seed, epoch=epoch,
                                    max_sentences=self.batch_size)

    def collate(self, indices: list[int]) -> SFTBatch:
        return collate([self.examples[i] for i in indices], self.pad_id)


def fixed_batches(examples: list[Example], batch_size: int, pad_id: int) -> list[SFTBatch]:
    """Evaluation batches: the examples by length, ``batch_size`` at a time."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    return [collate([examples[i] for i in order[s:s + batch_size]], pad_id) for s in range(0, len(order), batch_size)]


# -- the loss, the figures -----------------------------------------------------------------------------
# The output layer's share of the work: per token at the targets alone takes 4 matrix products per target
# (the backward pass recomputes its logits), the fused sum over every position 3 per position.
PER_TOKEN_BELOW = 3 / 4


def summed_cross_entropy(model, batch: SFTBatch) -> Tensor:
    """The next-token cross-entropy summed over the batch's targets, through the model's forward and its
    fused output layer (:func:`~glassformer.nn.linear_cross_entropy`): when the targets are few (the
    responses, not the prompts), per token at those positions only — the others never reach the output
    layer —, else summed over every position.  Given the examples' lengths, one forward per group of
    similar length (:func:`~.posttrain.length_groups`), each cut to its longest example."""
    groups = length_groups(batch.lengths) if batch.lengths is not None else []
    pieces = [(batch.tokens, batch.labels)]
    if len(groups) > 1:
        indices = [torch.tensor(group, device=batch.tokens.device) for group in groups]
        widths = [batch.lengths[group[-1]] - 1 for group in groups]          # the inputs: all ids but the last
        pieces = [(batch.tokens[i, :w], batch.labels[i, :w]) for i, w in zip(indices, widths)]
    per_token = batch.n_tokens < PER_TOKEN_BELOW * sum(labels.numel() for _, labels in pieces)
    return sum(model(tokens, labels, reduction="none").sum() if per_token else model(tokens, labels, reduction="sum")
               for tokens, labels in pieces)


def sft_loss(module, batch: SFTBatch) -> StepLoss:
    """The step's loss: the summed cross-entropy of the targets (the trainer divides by their number)."""
    return StepLoss(summed_cross_entropy(module, batch), batch.n_tokens)


def evaluate_sft(model, batches: list[SFTBatch], device, policy: Policy | None = None,
                 questions: Sequence[Instruction] = (), batch_size: int = 64) -> dict[str, float]:
    """The mean cross-entropy per response token of ``batches`` (and its perplexity); with
    ``questions``, their exact-match shares by greedy decoding (:func:`~.posttrain.exact_match`)."""
    sums = summed(batches, device, lambda b: {"loss": float(summed_cross_entropy(model, b)),
                                              "tokens": b.n_tokens})
    figures = {"loss": sums["loss"] / sums["tokens"]}
    figures["ppl"] = perplexity(figures["loss"])
    if questions:
        figures.update(exact_match(model, policy.tokenizer, policy.template, questions, batch_size=batch_size))
    return figures


# -- the data --------------------------------------------------------------------------------------------
@dataclass
class SFTData:
    train: list[dict[str, Any]]
    valid: list[dict[str, Any]]
    test: list[dict[str, Any]]           # empty for a file: results.json holds the validation figures
    valid_questions: list[Instruction]
    test_questions: list[Instruction]


def sft_data(source: str | Path, settings: SFTSettings, valid: str | Path | None = None) -> SFTData:
    """The rows of ``source``: :data:`NUMBERS_INSTRUCT` (its train, valid and test splits, the numbers
    split by the task's own seed, 0, so every post-training stage holds out the same numbers), or a
    JSONL file (validation: ``valid``, else a seeded ``valid_fraction`` of it)."""
    if str(source) == NUMBERS_INSTRUCT:
        def rows(questions):
            return [{"prompt": q.prompt, "response": q.answer} for q in questions]
        test = numbers_instructions("test", settings.test_questions)
        return SFTData(rows(numbers_instructions("train", settings.examples)), rows(numbers_instructions("valid", 200)),
                       rows(test), numbers_instructions("valid", settings.eval_questions), test)
    rows = read_sft_rows(source)
    if valid is not None:
        return SFTData(rows, read_sft_rows(valid), [], [], [])
    if len(rows) < 2:
        raise InputError(f"{source} holds {len(rows)} row; give at least 2 (some are held out for validation) "
                         "or a --valid FILE")
    return SFTData(*held_out(rows, settings.valid_fraction, settings.seed), [], [], [])


# -- the run ---------------------------------------------------------------------------------------------
class SFTRun(PostTrainRun):
    """A fine-tuning run: its model, result, run directory, policy and best/'s held-out figures."""


def finetune_sft(source: str | Path | None, settings: SFTSettings | dict[str, Any] | None, out_dir: str | Path, *,
                 valid: str | Path | None = None, resume: bool = False, extend: bool = False) -> SFTRun:
    """Fine-tune ``settings.base`` on the rows of ``source`` (a JSONL file or "numbers-instruct"); save
    ``out_dir/best`` and ``out_dir/last``.  Resuming: :mod:`.common`."""
    settings, saved = settings_for(SFTSettings, settings, out_dir, resume)
    source = source or saved.get("data", {}).get("source")
    valid = valid or saved.get("data", {}).get("valid")
    if not source:
        raise InputError(f"give the data: a JSONL file of rows or {NUMBERS_INSTRUCT!r}")
    data = sft_data(source, settings, valid)
    run = start_run(settings, out_dir, resume, extend)
    policy = load_policy(settings)
    train_set = encode_rows(data.train, policy, train_on_prompt=settings.train_on_prompt)
    valid_set = encode_rows(data.valid, policy, train_on_prompt=settings.train_on_prompt, what="validation")
    test_set = encode_rows(data.test, policy, train_on_prompt=settings.train_on_prompt, what="test")
    pad = policy.pad_id
    fp = checked(run, settings, policy.model.config, settings.steps, base_weights=policy.base_weights, source=str(source),
                 valid=str(valid) if valid else None,
                 digest=digest(json.dumps(r, sort_keys=True) + "\n" for r in (*data.train, *data.valid)))
    valid_batches = fixed_batches(valid_set, settings.eval_batch_size, pad)
    n_targets = sum(sum(e.targets) for e in train_set)

    def evaluate(model, batches=valid_batches, questions=data.valid_questions) -> dict[str, float]:
        return evaluate_sft(model, batches, run.device, policy, questions, settings.eval_batch_size)

    what = "every token" if settings.train_on_prompt else "response tokens"
    trained = train(run, settings, fp, Recipe(
        policy.model, sft_loss, evaluate, policy_saver(policy),
        SFTStream(train_set, settings.batch_size, pad, settings.seed, rank=run.world.rank, world=run.world.size),
        policy.description,
        data=f"{len(train_set):,} training and {len(valid_set):,} validation examples of {source} "
             f"({n_targets:,} target tokens: {what})",
        batch=f"batch {settings.batch_size} examples × {settings.grad_accum} micro-batches, lr {settings.lr:g}"))
    test_batches = fixed_batches(test_set, settings.eval_batch_size, pad) if test_set else valid_batches
    figures = evaluate_best(run, trained.result, lambda m: evaluate(m, test_batches, data.test_questions),
                            lambda f: {"test" if test_set else "valid": f, "source": str(source)})
    return SFTRun(trained.model, trained.result, run.out_dir, policy, figures)


__all__ = ["SFTSettings", "SFTRun", "SFTBatch", "Example", "finetune_sft", "collate", "encode_rows", "SFTStream",
           "fixed_batches", "sft_loss", "summed_cross_entropy", "evaluate_sft", "sft_data", "SFTData"]
