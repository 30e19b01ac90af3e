"""``glassformer quickstart post-training``: the whole post-training chain on the built-in numbers task.

Four runs, each a task of the one training recipe, each starting from the model the one before saved::

    base   a small GPT pretrained on the task's training questions and answers as plain text   train lm
    sft    supervised fine-tuning on (question, answer) rows: the loss on the answers only     finetune sft
    dpo    preference optimisation: the right answer against the SFT model's own wrong one     train dpo
    rl     GRPO: sampled answers scored by the exact-answer reward, on the question types
           the model before answers partly right                                                 train rl

After each stage, the model it saved (``best/``) answers the held-out test questions — numbers never
seen in training — by greedy decoding; the exact-match share, over all questions and per question
type (words, add, compare, german), is printed and kept::

    OUT/chain.json          marks the directory as a chain's: its settings, the stages finished so far
    OUT/pretraining.txt     the base model's text
    OUT/base/ sft/ dpo/ rl/ each stage's run directory (its model in best/)
    OUT/dpo-*.jsonl         DPO's pairs: the training and validation questions the SFT model answered wrongly
    OUT/rl-*.jsonl          RL's questions (the types chosen) and its validation questions
    OUT/summary.json        the held-out exact match of every stage's model, with steps and times, and for
                            each stage that did not raise it, a note saying why in its run's figures
    OUT/summary.md          the same as a table

Run again with the same ``OUT``, the chain reuses the base model a previous chain finished (and
continues one that was interrupted) and trains the three post-training stages again: pretraining is
the long part, and the post-training stages are what one changes.  A directory that holds anything
else is refused.

The defaults are sized for 2 CPU cores and about 15 minutes (measured:
``benchmarks/bench_posttrain_chain.py``, ``benchmarks/results/posttrain_chain.json``); each stage also
stops at its share of ``time_budget`` (the recipe's ``time_limit``), a safety net for a slower machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.instructions import KINDS, NUMBERS_INSTRUCT, Instruction, completion_answer, is_correct, numbers_instructions
from ..devices import pick_device
from ..errors import ConfigError, GlassformerError
from ..files import read_json, write_text_atomically
from ..model_dir import load_model_dir
from ..tokenizers.chat import DEFAULT_CHAT_TEMPLATE, chat_template, render
from .checkpoints import existing_run
from .checks import check_positive_int, check_range, check_types
from .dpo import DPOSettings, train_dpo
from .lm import LMSettings, train_lm
from .posttrain import exact_match, greedy_answers
from .rl import RLSettings, train_rl
from .sft import SFTSettings, finetune_sft

STAGES = ("base", "sft", "dpo", "rl")
STAGE_SETTINGS = {"base": LMSettings, "sft": SFTSettings, "dpo": DPOSettings, "rl": RLSettings}
CHAIN_FILE = "chain.json"
CORPUS_FILE = "pretraining.txt"
DEFAULT_OUT = "runs/quickstart-post-training"

# The base model: gpt-mini (4 layers, d_model 128, 4 heads; 0.8 M parameters with a character vocabulary)
# with a context of 160 characters, enough for the longest question with its answer (133).  Characters,
# not BPE: a held-out number is spelled with the same tokens as every other number.  Rotary positions, not
# learned ones: the pretraining windows start anywhere in a conversation, and an answer copies or spells the
# question's digits at a fixed distance back.  Measured (one thread, 2026-12-06): after 100 steps the training
# loss is 0.45 with rotary positions, 0.88 with learned ones (0.57 at step 150).  Yet after 200 steps neither
# base reads the question's digits: it answers "911" to any "which is larger" of two 3-digit numbers (the
# answers' format and length right, their digits not) — hence the long pretraining below.
BASE_MODEL = {"max_len": 160, "positional": "rotary"}

# Each stage's settings besides steps, time limit, seed, device and progress (which the chain sets).
# SFT's learning rate, measured (one thread, 2026-12-06; the base at 600 steps answers 9% of 200 held-out
# questions): after 600 SFT steps at 1e-4, 20%; at 3e-4, 14.5%; at 1e-3, 1% (it forgets what the base knew).
# From that SFT model: 150 DPO steps at 1e-4, 2.5%; at 1e-5, 14.5% (DPO lowers it: pushing the plausible
# wrong answer down moves the right one too); 60 RL steps at 5e-5, 16%; at 1e-5, 20% (unchanged: too few
# steps to move greedy answers).  The quickstart shows each stage as it is measured, helping or not.
# DPO now trains on the SFT model's own wrong answers (self_made_pairs: on-policy pairs, whose rejected answer
# is what greedy decoding says), and RL samples only the question types the model before answers partly right.
# DPO's pairs: its reference log-probabilities are computed for every pair before the first step.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "base": dict(preset="gpt-mini", tokenizer="char", block_size=160, batch_size=32, lr=2e-3, warmup=30,
                 eval_batches=8),
    "sft": dict(batch_size=32, lr=1e-4, warmup=20, examples=8000, eval_questions=100),
    "dpo": dict(batch_size=16, lr=1e-5, warmup=10, beta=0.1, examples=1000, eval_questions=100),
    "rl": dict(examples=2000, batch_size=8, group=8, lr=1e-5, warmup=5, max_new_tokens=52, temperature=1.0, eval_questions=100),
}
# Steps per stage, from runs of each stage timed on this 2-core machine, one thread (two threads of a busy
# machine spin-wait), CPU seconds per step (2026-12-06): base 0.63 (32 windows of 160 characters), SFT 0.21
# (32 examples), DPO 0.42 (16 pairs) + 30 s for the reference log-probabilities and the evaluations around
# training, RL about 0.9 from the SFT model (8 prompts x 8 samples of up to 52 characters; groups whose samples
# all score the same are drawn again).  Two threads of a quiet machine: base 0.37 s a step, SFT 0.13 (the chain
# at 600/600/150/60 steps took 412 s, benchmarks/results/posttrain_chain.json).  The budget of 15 minutes spent:
# base 1,000 steps (about 370 s) and SFT 1,000 (130 s), about 11 minutes for the chain.
STAGE_STEPS = {"base": 1000, "sft": 1000, "dpo": 150, "rl": 60}
# Seconds of training per stage at most, the safety net for a slower machine (the evaluations and the
# work before the first step come on top); --time-budget scales them together.
STAGE_TIME_LIMITS = {"base": 420.0, "sft": 150.0, "dpo": 80.0, "rl": 130.0}
TIME_BUDGET = sum(STAGE_TIME_LIMITS.values())
# The DPO stage's pairs and the RL stage's questions, made with the model of the stage before (OUT/...).
PAIRS_FILES = {"train": "dpo-pairs.jsonl", "valid": "dpo-valid-pairs.jsonl"}
RL_FILES = {"train": "rl-questions.jsonl", "valid": "rl-valid-questions.jsonl"}
RL_PROBE = 400             # training questions the model before RL answers, to choose the kinds RL samples
REWARD = "glassformer.training.rl:exact_answer"
EVALUATIONS = 2            # evaluations per post-training stage (best/ is chosen among them)
TEST_QUESTIONS = 400       # the held-out questions of the summary: those the stages' own results.json answer


@dataclass
class ChainSettings:
    """The chain's settings: steps per stage, the base model, the held-out questions, the time budget.
    ``base``/``sft``/``dpo``/``rl``: settings of that stage over :data:`STAGE_DEFAULTS` (any field of its
    settings class: LMSettings, SFTSettings, DPOSettings, RLSettings)."""

    base_steps: int = STAGE_STEPS["base"]
    sft_steps: int = STAGE_STEPS["sft"]
    dpo_steps: int = STAGE_STEPS["dpo"]
    rl_steps: int = STAGE_STEPS["rl"]
    model: dict = field(default_factory=lambda: dict(BASE_MODEL))   # the base GPT: gpt-mini's fields overridden
    pretraining_questions: int = 20000   # training questions (with answers) in the base model's text
    test_questions: int = TEST_QUESTIONS  # held-out questions every stage's model answers (the summary)
    time_budget: float | None = TIME_BUDGET   # seconds of training over the four stages; None: no limit
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    base: dict = field(default_factory=dict)
    sft: dict = field(default_factory=dict)
    dpo: dict = field(default_factory=dict)
    rl: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self)
        check_positive_int(self, "base_steps", "sft_steps", "dpo_steps", "rl_steps", "pretraining_questions",
                           "test_questions")
        check_range(self, "time_budget", 0, low_open=True, optional=True)
        for stage in STAGES:
            known = {f.name for f in dataclasses.fields(STAGE_SETTINGS[stage])}
            unknown = sorted(set(getattr(self, stage)) - known)
            if unknown:
                raise ConfigError(f"{stage}={getattr(self, stage)} holds unknown {stage} setting(s) {unknown}; "
                                  f"valid ones are the fields of {STAGE_SETTINGS[stage].__name__}")
            # Every stage's settings checked now, not minutes later when the stage starts (the base model
            # of a post-training stage is the stage before's: any directory passes that check here).
            base = {} if stage == "base" else {"base": "."}
            try:
                STAGE_SETTINGS[stage].from_dict(self.stage_settings(stage, **base))
            except ConfigError as e:
                raise ConfigError(f"the {stage} stage: {e}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChainSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown chain setting(s) {unknown}; valid ones are {sorted(known)}")
        return cls(**data)

    def steps(self, stage: str) -> int:
        return getattr(self, f"{stage}_steps")

    def time_limit(self, stage: str) -> float | None:
        """The stage's share of the time budget (its share of :data:`STAGE_TIME_LIMITS`)."""
        if self.time_budget is None:
            return None
        return round(self.time_budget * STAGE_TIME_LIMITS[stage] / TIME_BUDGET, 1)

    def stage_settings(self, stage: str, **extra: Any) -> dict[str, Any]:
        """The settings dict of ``stage``'s run: its defaults, the chain's, the stage's own, ``extra``."""
        chain = {"steps": self.steps(stage), "time_limit": self.time_limit(stage), "seed": self.seed,
                 "device": self.device, "progress": self.progress}
        if stage == "base":
            chain["model"] = dict(self.model)
        else:
            chain["eval_every"] = max(1, -(-self.steps(stage) // EVALUATIONS))
        return {**STAGE_DEFAULTS[stage], **chain, **getattr(self, stage), **extra}


# -- the base model's text ---------------------------------------------------------------------------------
def pretraining_text(n: int, template: str = DEFAULT_CHAT_TEMPLATE) -> str:
    """``n`` training questions of the numbers task with their answers, as the chat template writes a
    conversation ("User: What is 38 + 57?\\nAssistant: 95\\n"), one after the other: plain text from
    which a language model learns the numbers' words and the answer format (held-out numbers never
    appear: the questions are of the training split)."""
    return "".join(render(template, [{"role": "user", "content": q.prompt}, {"role": "assistant", "content": q.answer}],
                          False) for q in numbers_instructions("train", n))


# -- held-out exact match of a saved model -------------------------------------------------------------------
def held_out_accuracy(model_dir: str | Path, questions: Sequence[Instruction], device="cpu") -> dict[str, float]:
    """The share of ``questions`` the model directory's model answers exactly by greedy decoding, prompted by
    its chat template: ``{"all": share, "<kind>": share per question type}``."""
    loaded = load_model_dir(model_dir, device=pick_device(device))
    figures = exact_match(loaded.model, loaded.tokenizer, chat_template(model_dir), questions)
    return {"all": figures["exact"], **{k.removeprefix("exact_"): v for k, v in figures.items() if k != "exact"}}


def model_answers(model_dir: str | Path, questions: Sequence[Instruction], device="cpu") -> list[str]:
    """The answer (the completion's first line) the model directory's model gives each of ``questions`` by
    greedy decoding, prompted by its chat template."""
    loaded = load_model_dir(model_dir, device=pick_device(device))
    texts = greedy_answers(loaded.model, loaded.tokenizer, chat_template(model_dir), questions)
    return [completion_answer(text) for text in texts]


# -- the DPO stage's pairs and the RL stage's questions, made with the model before ------------------------------
def self_made_pairs(model_dir: str | Path, questions: Sequence[Instruction], device="cpu") -> list[dict[str, str]]:
    """Preference pairs from the model's own mistakes (on-policy pairs): each of ``questions`` the model of
    ``model_dir`` answers wrongly by greedy decoding becomes ``{"prompt", "chosen": the right answer,
    "rejected": the model's own answer}``.  The questions it answers right, or with nothing, are left out:
    DPO then pushes down exactly what the model says when it is wrong."""
    answers = model_answers(model_dir, questions, device)
    return [{"prompt": q.prompt, "chosen": q.answer, "rejected": said}
            for q, said in zip(questions, answers) if said.strip() and not is_correct(q.answer, said)]


def partly_right_kinds(model_dir: str | Path, questions: Sequence[Instruction], device="cpu") -> dict[str, float]:
    """The share of ``questions`` of each kind the model of ``model_dir`` answers right by greedy decoding."""
    answers = model_answers(model_dir, questions, device)
    right: dict[str, list[bool]] = {}
    for q, said in zip(questions, answers):
        right.setdefault(q.kind, []).append(is_correct(q.answer, said))
    return {kind: sum(r) / len(r) for kind, r in sorted(right.items(), key=lambda kv: KINDS.index(kv[0]))}


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    write_text_atomically(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


# -- the output directory ------------------------------------------------------------------------------------
def previous_chain(out_dir: Path) -> dict[str, Any] | None:
    """What a previous chain in ``out_dir`` recorded (its chain.json), None for a new or empty directory.
    Anything else there — a file, another run, other files — is refused in one line, before any work."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give the chain a directory")
    marker = out_dir / CHAIN_FILE
    if marker.is_file():
        try:
            saved = read_json(marker, what="chain record")
        except GlassformerError:
            saved = None
        if isinstance(saved, dict) and isinstance(saved.get("stages"), dict):
            return saved
    found = sorted(p.name for p in out_dir.iterdir())
    if not found:
        return None
    run = existing_run(out_dir)
    what = run or f"files of something else ({', '.join(found[:4])}{', ...' if len(found) > 4 else ''})"
    raise ConfigError(f"{out_dir} already holds {what}, not a post-training quickstart's; give another --out "
                      f"(or delete {out_dir})")


def _record(out_dir: Path, settings: ChainSettings, stages: dict[str, Any]) -> None:
    write_text_atomically(out_dir / CHAIN_FILE, json.dumps(
        {"chain": "glassformer quickstart post-training", "settings": dataclasses.asdict(settings),
         "stages": stages}, indent=2) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# -- the chain --------------------------------------------------------------------------------------------------
def run_posttrain_quickstart(out_dir: str | Path = DEFAULT_OUT,
                             settings: ChainSettings | dict[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain (or reuse) the base model, then SFT, DPO and RL, each from the model the stage before saved
    in ``out_dir``; after each, the held-out exact match of its model (all and per question type) is printed.
    Returns what ``out_dir/summary.json`` holds."""
    settings = settings if isinstance(settings, ChainSettings) else ChainSettings.from_dict(settings or {})
    out_dir = Path(out_dir)
    previous = previous_chain(out_dir)
    device = pick_device(settings.device)             # an unknown device is refused before any work
    started = time.perf_counter()
    questions = numbers_instructions("test", settings.test_questions)
    out_dir.mkdir(parents=True, exist_ok=True)
    finished = previous["stages"] if previous else {}
    stages: dict[str, Any] = {"base": finished["base"]} if _base_reusable(out_dir, finished) else {}
    for stage in STAGES[1:]:                           # a previous chain's later stages are trained again
        _remove(out_dir / stage)
    for name in (*PAIRS_FILES.values(), *RL_FILES.values()):
        _remove(out_dir / name)
    _remove(out_dir / "summary.json")
    _remove(out_dir / "summary.md")
    _record(out_dir, settings, stages)

    print(f"Post-training quickstart: base → SFT → DPO → RL on {NUMBERS_INSTRUCT}, {torch.get_num_threads()} "
          f"threads; exact match on {len(questions)} held-out questions (numbers never seen in training) after "
          "each stage", flush=True)
    model_dir = out_dir / "base" / "best"
    for stage in STAGES:
        if stage in stages:
            print(f"\n[base] reusing the base model a previous chain trained ({model_dir}: "
                  f"{stages['base']['steps']} steps); delete {out_dir / 'base'} to train it again", flush=True)
            stages[stage]["reused"] = True
        else:
            print(f"\n[{stage}] {_doing(stage, settings)}", flush=True)
            t0 = time.perf_counter()
            result, data = _train_stage(stage, settings, out_dir, model_dir)
            stages[stage] = {"steps": result.steps, "max_steps": result.max_steps, "resumed_from": result.resumed_from,
                             "time_limited": result.time_limited, "train_seconds": round(result.seconds, 1),
                             "stage_seconds": round(time.perf_counter() - t0, 1), "reused": False, **data}
        model_dir = out_dir / stage / "best"
        t0 = time.perf_counter()
        stages[stage].update(model=str(model_dir.relative_to(out_dir)),
                             exact_match=held_out_accuracy(model_dir, questions, device),
                             eval_seconds=round(time.perf_counter() - t0, 1))
        print(f"[{stage}] held-out exact match {_shares(stages[stage]['exact_match'])}", flush=True)
        _record(out_dir, settings, stages)

    summary = {"task": NUMBERS_INSTRUCT, "test_questions": len(questions), "threads": torch.get_num_threads(),
               "device": str(device), "total_seconds": round(time.perf_counter() - started, 1),
               "settings": dataclasses.asdict(settings), "stages": stages}
    summary["notes"] = stage_notes(summary, out_dir)
    write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomically(out_dir / "summary.md", summary_markdown(summary))
    print("\n" + summary_table(summary))
    for note in summary["notes"]:
        print(note)
    for name, stage in stages.items():
        if stage.get("time_limited") and not stage.get("reused"):
            print(f"The {name} stage was stopped by its time limit after {stage['steps']} of {stage['max_steps']} "
                  "steps (a slow or busy machine): its figures are for that shorter training.")
    print(f"\nModels in {out_dir}/<stage>/best; try: glassformer generate {out_dir / 'rl' / 'best'} "
          "\"$(printf 'User: What is 38 + 57?\\nAssistant: ')\" --temperature 0")
    print(f"Total time {summary['total_seconds']:.0f}s")
    return summary


def _base_reusable(out_dir: Path, finished: dict[str, Any]) -> bool:
    """Whether a previous chain finished the base model in ``out_dir`` (its best/ is there)."""
    return isinstance(finished.get("base"), dict) and (out_dir / "base" / "best" / "config.json").is_file()


def _doing(stage: str, settings: ChainSettings) -> str:
    limit = settings.time_limit(stage)
    budget = f", at most {limit:g} s" if limit else ""
    return {"base": "pretraining a small GPT on the training questions and answers as plain text",
            "sft": "supervised fine-tuning on training questions (loss on the answers)",
            "dpo": "DPO on pairs of the right answer and the SFT model's own wrong one",
            "rl": "GRPO: sampled answers rewarded 1 when exactly right"}[stage] + \
        f" ({settings.steps(stage)} steps{budget})"


def _train_stage(stage: str, settings: ChainSettings, out_dir: Path, previous_model: Path):
    """Train ``stage`` in ``out_dir/stage`` from ``previous_model``; returns its TrainResult."""
    run_dir = out_dir / stage
    if stage == "base":
        if run_dir.is_dir() and existing_run(run_dir):      # an interrupted base run: continue it
            print(f"[base] continuing the interrupted base run in {run_dir}", flush=True)
            resumed = {"time_limit": settings.time_limit("base"), "device": settings.device,
                       "progress": settings.progress}
            return train_lm(None, resumed, run_dir, resume=True).result, {}
        _remove(run_dir)
        corpus = out_dir / CORPUS_FILE
        write_text_atomically(corpus, pretraining_text(settings.pretraining_questions))
        return train_lm(corpus, settings.stage_settings("base"), run_dir).result, {}
    base = str(previous_model)
    if stage == "sft":
        return finetune_sft(NUMBERS_INSTRUCT, settings.stage_settings("sft", base=base), run_dir).result, {}
    if stage == "dpo":
        return _train_dpo(settings, out_dir, previous_model)
    return _train_rl(settings, out_dir, previous_model)


def _train_dpo(settings: ChainSettings, out_dir: Path, previous_model: Path):
    """DPO on the previous model's own mistakes (:func:`self_made_pairs`) on the stage's training and
    validation questions; the task's plausible wrong answers instead should it make none."""
    dpo = settings.stage_settings("dpo", base=str(previous_model))
    device = settings.device
    pairs = {"train": self_made_pairs(previous_model, numbers_instructions("train", dpo["examples"]), device),
             "valid": self_made_pairs(previous_model, numbers_instructions("valid", dpo["eval_questions"]), device)}
    made = {split: len(rows) for split, rows in pairs.items()}
    if not all(made.values()):
        print(f"[dpo] the {previous_model.parent.name} model made {made['train']} training and {made['valid']} "
              "validation mistakes: too few for pairs of its own; the task's plausible wrong answers instead",
              flush=True)
        return train_dpo(NUMBERS_INSTRUCT, dpo, out_dir / "dpo").result, {"pairs": "the task's"}
    print(f"[dpo] {made['train']} of {dpo['examples']} training questions (and {made['valid']} of "
          f"{dpo['eval_questions']} validation ones) answered wrongly by the {previous_model.parent.name} model: "
          "pairs of the right answer over its own", flush=True)
    files = {split: _write_rows(out_dir / PAIRS_FILES[split], rows) for split, rows in pairs.items()}
    result = train_dpo(files["train"], dpo, out_dir / "dpo", valid=files["valid"]).result
    return result, {"pairs": "self-made", "train_pairs": made["train"], "valid_pairs": made["valid"]}


def _train_rl(settings: ChainSettings, out_dir: Path, previous_model: Path):
    """GRPO on the training questions of the kinds the previous model answers partly right
    (:func:`partly_right_kinds`): a group of samples that all score the same teaches nothing."""
    rl = settings.stage_settings("rl", base=str(previous_model))
    questions = numbers_instructions("train", rl["examples"])
    shares = partly_right_kinds(previous_model, questions[:RL_PROBE], settings.device)
    kinds = [kind for kind, share in shares.items() if 0 < share < 1] or list(shares)
    print(f"[rl] the {previous_model.parent.name} model answers " +
          ", ".join(f"{kind} {share:.0%}" for kind, share in shares.items()) +
          f" of {min(RL_PROBE, len(questions))} training questions: sampling {', '.join(kinds)}", flush=True)
    rows = {"train": [q for q in questions if q.kind in kinds],
            "valid": numbers_instructions("valid", rl["eval_questions"])}
    files = {split: _write_rows(out_dir / RL_FILES[split], [{"prompt": q.prompt, "answer": q.answer, "kind": q.kind}
                                                           for q in qs]) for split, qs in rows.items()}
    result = train_rl({**rl, "data": str(files["train"]), "valid": str(files["valid"]), "reward": REWARD},
                      out_dir / "rl").result
    return result, {"kinds": kinds, "probe": shares, "questions": len(rows["train"])}


# -- the report ---------------------------------------------------------------------------------------------------
def _kinds(shares: dict[str, float]) -> list[str]:
    return [k for k in KINDS if k in shares] + sorted(k for k in shares if k not in KINDS and k != "all")


def _shares(shares: dict[str, float]) -> str:
    return f"{shares['all']:.1%} (" + ", ".join(f"{k} {shares[k]:.1%}" for k in _kinds(shares)) + ")"


def _rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    stages = summary["stages"]
    kinds = _kinds(next(iter(stages.values()))["exact_match"])
    header = ["stage", "all", *kinds, "steps", "train s"]
    rows = []
    for name, stage in stages.items():
        shares = stage["exact_match"]
        steps = f"{stage['steps']}" + (" (reused)" if stage.get("reused") else "") + \
            (" (time limit)" if stage.get("time_limited") else "")
        rows.append([name, *(f"{100 * shares[k]:.1f}%" for k in ["all", *kinds]), steps,
                     f"{stage['train_seconds']:.0f}"])
    return header, rows


def summary_table(summary: dict[str, Any]) -> str:
    """The held-out exact match of every stage as aligned text."""
    header, rows = _rows(summary)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"Held-out exact match ({summary['test_questions']} questions, numbers never seen in training):"]
    lines += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in [header, *rows]]
    return "\n".join(lines)


def markdown_table(summary: dict[str, Any]) -> str:
    """The held-out exact match of every stage as a Markdown table."""
    header, rows = _rows(summary)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def stage_notes(summary: dict[str, Any], out_dir: Path) -> list[str]:
    """For each post-training stage that did not raise the held-out exact match over the stage before by at
    least one standard error of that share (sqrt(p (1 - p) / n) over the n questions; a smaller gain may be
    chance): a line saying so, and why in measured terms (the figures of its run in ``out_dir``)."""
    notes, stages, n = [], summary["stages"], summary["test_questions"]
    names = list(stages)
    for before, name in zip(names, names[1:]):
        was, now = stages[before]["exact_match"]["all"], stages[name]["exact_match"]["all"]
        error = math.sqrt(max(was * (1 - was), 1 / n) / n)
        if now - was >= error - 1e-12:
            continue
        if now <= was:
            said = f"{name.upper()} did not raise the held-out exact match ({was:.1%} after {before}, {now:.1%} after it)"
        else:
            said = (f"{name.upper()} raised the held-out exact match by only {round((now - was) * n)} of {n} questions "
                    f"({was:.1%} after {before}, {now:.1%} after it), less than one standard error ({error:.1%})")
        notes.append(f"{said}: {_why(name, stages[name], out_dir / name)}.")
    return notes


def _why(name: str, stage: dict[str, Any], run_dir: Path) -> str:
    """Why a stage did not help, from its run's results.json and log.jsonl."""
    try:
        results = read_json(run_dir / "results.json", what="results")
        log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    except (GlassformerError, OSError, ValueError):
        return "its run left no figures to say why"
    figures = results.get("valid") or results.get("test") or {}
    if name == "dpo" and "chosen_reward" in figures:
        pairs = "its own wrong answers" if stage.get("pairs") == "self-made" else "plausible wrong answers"
        ranked = (f"after {stage['steps']} steps it ranks the right answer over {pairs} in {figures['accuracy']:.0%} "
                  f"of the validation pairs (reward margin {figures['margin']:+.2f})")
        if figures["chosen_reward"] < 0:
            return (f"{ranked}, but the right answers' log-probability fell too (chosen reward "
                    f"{figures['chosen_reward']:+.2f}, rejected {figures['rejected_reward']:+.2f}): the gap grew by "
                    "pushing both answers down, the right one with the wrong")
        return f"{ranked}, yet that margin changed few of the answers greedy decoding picks"
    train = [entry for entry in log if entry.get("kind") == "train"]
    if name == "rl" and train and "skipped_groups" in train[0]:
        skipped = sum(e["skipped_groups"] for e in train) / len(train)
        reward = sum(e["reward"] for e in train) / len(train)
        said = (f"over its {stage['steps']} steps the sampled answers were right {reward:.0%} of the time and "
                f"{skipped:.0%} of the groups scored all alike (all wrong or all right) and taught nothing")
        return said if skipped >= 0.999 else f"{said}; the updates of the rest moved few greedy answers on " \
            "held-out numbers"
    return f"its best validation loss was {results.get('best_valid_loss', float('nan')):.4f} after {stage['steps']} steps"


def summary_markdown(summary: dict[str, Any]) -> str:
    """summary.md: the table, and how it was measured."""
    return "\n".join([
        "# Post-training quickstart: held-out exact match after each stage", "",
        f"{summary['test_questions']} held-out questions of `{summary['task']}` (numbers never seen in training), "
        f"answered by greedy decoding; {summary['threads']} threads on {summary['device']}, "
        f"{summary['total_seconds']:.0f} s in all.", "",
        markdown_table(summary), *(["", *summary["notes"]] if summary.get("notes") else [])]) + "\n"


__all__ = ["ChainSettings", "run_posttrain_quickstart", "pretraining_text", "held_out_accuracy", "previous_chain",
           "model_answers", "self_made_pairs", "partly_right_kinds", "stage_notes", "summary_table", "summary_markdown", "markdown_table", "STAGES", "STAGE_DEFAULTS", "STAGE_STEPS",
           "STAGE_TIME_LIMITS", "TIME_BUDGET", "TEST_QUESTIONS", "BASE_MODEL", "DEFAULT_OUT"]
