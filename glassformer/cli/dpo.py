"""The command of preference optimisation: ``train dpo``.

    glassformer train dpo --model MODEL_DIR --data FILE.jsonl|numbers-instruct --out runs/dpo
        [--beta 0.1] [--loss sigmoid|ipo] [--lora ...]
"""

from __future__ import annotations

import functools

from .common import (COSINE_FLAGS, add_cosine_schedule_flags, add_run_flags, open_fraction, positive_float,
                     positive_int, run_training, setting_defaults, trained)
from .lora import add_lora_flags, lora_from_flags
from .posttrain import _exact


def register_train(train_subparsers) -> None:
    from ..data.instructions import NUMBERS_INSTRUCT
    from ..training.dpo import LOSSES, DPOSettings

    d = setting_defaults(DPOSettings)
    t = train_subparsers.add_parser("dpo", help="direct preference optimisation of a GPT/Llama model directory on "
                                                "(prompt, chosen, rejected) pairs")
    t.add_argument("--model", dest="base", metavar="MODEL_DIR",
                   help="the model directory to train (ours, or a converted Hugging Face GPT-2 / Llama; usually "
                        "fine-tuned first with `glassformer finetune sft`); with --resume, the run's own")
    t.add_argument("--data", metavar="FILE",
                   help='a JSONL file of {"prompt", "chosen", "rejected"} rows (the prompt a string or a list of '
                        f"messages), or {NUMBERS_INSTRUCT!r} (built in: a right answer against a plausible wrong "
                        "one); with --resume, the run's own")
    t.add_argument("--valid", metavar="FILE",
                   help="validation pairs, in the layout of --data (default: hold out --valid-fraction of --data)")
    t.add_argument("--valid-fraction", type=open_fraction,
                   help=f"share of the --data pairs held out for validation (default: {d['valid_fraction']:g})")
    t.add_argument("--beta", type=positive_float,
                   help=f"how far the model may drift from the reference (default: {d['beta']:g})")
    t.add_argument("--loss", choices=LOSSES,
                   help=f"sigmoid (DPO) or ipo (its log-ratios averaged per answer token) (default: {d['loss']})")
    t.add_argument("--batch-size", type=positive_int,
                   help=f"pairs per micro-batch (default: {d['batch_size']})")
    t.add_argument("--max-len", type=positive_int,
                   help="tokens per prompt and answer; a longer pair is refused (default: the model's context)")
    t.add_argument("--examples", type=positive_int,
                   help=f"{NUMBERS_INSTRUCT}: training pairs (default: {d['examples']})")
    t.add_argument("--eval-questions", type=positive_int,
                   help=f"{NUMBERS_INSTRUCT}: held-out questions answered at each evaluation "
                        f"(default: {d['eval_questions']})")
    t.add_argument("--out", default="runs/dpo", help="run directory (model in OUT/best and OUT/last)")
    t.add_argument("--seed", type=int, help=f"random seed (default: {d['seed']})")
    add_cosine_schedule_flags(t, d)
    add_lora_flags(t)
    add_run_flags(t, d)
    t.set_defaults(func=train_dpo_cmd)


_FLAGS = ("base", "beta", "loss", "batch_size", "max_len", "examples", "eval_questions", "valid_fraction", "seed",
          *COSINE_FLAGS)


def train_dpo_cmd(args) -> int:
    from ..training.dpo import DPOSettings, train_dpo

    out, run = run_training(
        args, _FLAGS, DPOSettings, functools.partial(train_dpo, valid=args.valid), data_flag="data",
        data_key="source", also=lora_from_flags(args),
        missing='give --data: a JSONL file of {"prompt", "chosen", "rejected"} rows, or numbers-instruct')
    if not run.result.main_process:                  # another process of a distributed run: rank 0 reports
        return 0
    print(f"{trained(run.result)}; best (lowest validation loss, step {run.best['step']}): {_figures(run.best)}; "
          f"model saved to {out / 'best'}")
    held = "test pairs (numbers never seen in training)" if "exact" in run.test else "validation pairs"
    print(f"best/ on the {held}: {_figures(run.test)}")
    return 0


def _figures(figures: dict) -> str:
    return (f"preference accuracy {figures['accuracy']:.1%}, reward margin {figures['margin']:.4f} (chosen "
            f"{figures['chosen_reward']:.4f}, rejected {figures['rejected_reward']:.4f}), loss {figures['loss']:.4f}"
            f"{_exact(figures)}")


__all__ = ["register_train", "train_dpo_cmd"]
