"""Commands of post-training: ``finetune sft`` (and the ``train`` commands of the other post-training
tasks, registered beside it).

    glassformer finetune sft --model MODEL_DIR --data FILE.jsonl|numbers-instruct [--valid FILE.jsonl] \\
        [--out runs/sft] [--train-on-prompt] [--lora [--lora-r 8 ...]]
"""

from __future__ import annotations

import functools
import importlib
import importlib.util

from .common import (COSINE_FLAGS, add_cosine_schedule_flags, add_run_flags, open_fraction, positive_int,
                     run_training, setting_defaults, trained)
from .lora import add_lora_flags, lora_from_flags


def _tasks(subparsers, command: str):
    """The sub-command action of ``command`` (``finetune``, ``train``), registered by another module."""
    parser = subparsers.choices[command]
    return next(a for a in parser._actions if a.dest == "task")


def register(subparsers) -> None:
    from ..data.instructions import NUMBERS_INSTRUCT
    from ..training.sft import SFTSettings

    d = setting_defaults(SFTSettings)
    finetune = _tasks(subparsers, "finetune")
    t = finetune.add_parser("sft", help="supervised fine-tuning of a GPT/Llama model directory on prompts and "
                                        "responses (or chat messages)")
    t.add_argument("--model", dest="base", metavar="MODEL_DIR",
                   help="the model directory to fine-tune: ours (`glassformer train lm`) or a converted Hugging "
                        "Face GPT-2 / Llama directory")
    t.add_argument("--data", metavar="FILE.jsonl|" + NUMBERS_INSTRUCT,
                   help='rows {"prompt", "response"} or {"messages": [{"role", "content"}, ...]}, one JSON object '
                        f"a line; or {NUMBERS_INSTRUCT}: the built-in questions about numbers (made offline)")
    t.add_argument("--valid", metavar="FILE.jsonl",
                   help="validation rows (default: hold out --valid-fraction of --data)")
    t.add_argument("--valid-fraction", type=open_fraction,
                   help=f"share of the rows held out for validation (default: {d['valid_fraction']:g})")
    t.add_argument("--train-on-prompt", action="store_true", default=None,
                   help="the loss covers every token, prompts included (default: the responses only)")
    t.add_argument("--max-len", type=positive_int,
                   help="tokens per example (default: the model's context); longer ones are cut inside the "
                        "response, with a warning")
    t.add_argument("--batch-size", type=positive_int, help=f"examples per micro-batch (default: {d['batch_size']})")
    t.add_argument("--examples", type=positive_int,
                   help=f"{NUMBERS_INSTRUCT}: training questions (default: {d['examples']})")
    t.add_argument("--eval-questions", type=positive_int,
                   help=f"{NUMBERS_INSTRUCT}: held-out questions answered at each evaluation "
                        f"(default: {d['eval_questions']})")
    t.add_argument("--out", default="runs/sft", help="run directory (model in OUT/best and OUT/last)")
    t.add_argument("--seed", type=int, help=f"random seed (default: {d['seed']})")
    add_cosine_schedule_flags(t, d)
    add_lora_flags(t)
    add_run_flags(t, d)
    t.set_defaults(func=finetune_sft_cmd)
    for command in subparsers._choices_actions:     # `glassformer --help` names the tasks
        if command.dest == "finetune":
            command.help = f"fine-tune a model for a task ({', '.join(finetune.choices)})"

    train = _tasks(subparsers, "train")
    for task in ("dpo", "rl"):                      # the other post-training tasks, where they have a command
        if task not in train.choices and importlib.util.find_spec(f"{__package__}.{task}") is not None:
            module = importlib.import_module(f"{__package__}.{task}")
            if hasattr(module, "register_train"):
                module.register_train(train)
    for command in subparsers._choices_actions:
        if command.dest == "train":
            command.help = f"train a model ({', '.join(train.choices)})"


_FLAGS = ("base", "valid_fraction", "train_on_prompt", "max_len", "batch_size", "examples", "eval_questions", "seed",
          *COSINE_FLAGS)


def finetune_sft_cmd(args) -> int:
    from ..training.sft import SFTSettings, finetune_sft

    out, run = run_training(
        args, _FLAGS, SFTSettings, functools.partial(finetune_sft, valid=args.valid), data_flag="data",
        data_key="source", also=lora_from_flags(args),
        missing="give --data FILE.jsonl (rows of prompt and response, or messages) or --data numbers-instruct")
    if not run.result.main_process:                 # another process of a distributed run: rank 0 reports
        return 0
    best = run.best
    print(f"{trained(run.result)}; best validation loss {best['loss']:.4f} per response token (step {best['step']})"
          f"{_exact(best)}; model saved to {out / 'best'}")
    held = "test questions (numbers never seen in training)" if "exact" in run.test else "validation rows"
    print(f"best/ on the {held}: loss {run.test['loss']:.4f}{_exact(run.test)}")
    return 0


def _exact(figures: dict) -> str:
    """", exact match 42.0% (words 10%, add 60%, ...)" when ``figures`` hold the numbers task's shares."""
    if "exact" not in figures:
        return ""
    kinds = ", ".join(f"{k.removeprefix('exact_')} {v:.0%}" for k, v in figures.items() if k.startswith("exact_"))
    return f", exact match {figures['exact']:.1%} ({kinds})"


__all__ = ["register", "finetune_sft_cmd", "lora_from_flags"]
