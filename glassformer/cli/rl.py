"""``glassformer train rl``: GRPO-style reinforcement learning of a decoder with a verifiable reward
(glassformer.training.rl)."""

from __future__ import annotations

import argparse

from .common import (COSINE_FLAGS, add_cosine_schedule_flags, add_run_flags, non_negative_float, positive_float,
                     positive_int, run_training, setting_defaults, trained)
from .lora import add_lora_flags, lora_from_flags


def register_train(train_subparsers) -> None:
    from ..data.instructions import NUMBERS_INSTRUCT
    from ..generation.sampling import TEMPERATURE_RANGE
    from ..training.rl import RLSettings

    d = setting_defaults(RLSettings)
    t = train_subparsers.add_parser(
        "rl", help="reinforcement learning of a GPT/Llama directory with a reward that checks answers (GRPO)")
    t.add_argument("--model", dest="base", metavar="MODEL_DIR",
                   help="the model directory to train: ours, or a converted Hugging Face GPT-2 / Llama")
    data = t.add_mutually_exclusive_group()
    data.add_argument("--task", dest="data", choices=[NUMBERS_INSTRUCT],
                      help=f"a built-in task with its own reward (default: {NUMBERS_INSTRUCT})")
    data.add_argument("--prompts", dest="data", metavar="FILE.jsonl",
                      help='a JSONL file of {"prompt": ..., ...} rows (the other fields go to the reward)')
    t.add_argument("--reward", metavar="MODULE:FUNCTION",
                   help="reward(prompt, completion, **row) -> float: an importable module or a .py file, and a "
                        "function in it (default: the built-in task's exact answer)")
    t.add_argument("--valid", metavar="FILE.jsonl",
                   help="held-out prompts answered greedily at each evaluation (default: the built-in task's "
                        "held-out questions; with --prompts, its first --eval-questions rows)")
    t.add_argument("--group", type=positive_int, help=f"completions sampled per prompt (default: {d['group']})")
    t.add_argument("--batch-size", type=positive_int,
                   help=f"prompts per micro-batch, each sampled --group times (default: {d['batch_size']})")
    t.add_argument("--epsilon", type=positive_float,
                   help=f"clip range of the probability ratio (default: {d['epsilon']:g})")
    t.add_argument("--beta", type=non_negative_float,
                   help=f"weight of the KL penalty to the starting model, k3 estimator (default: {d['beta']:g}: none)")
    t.add_argument("--no-std-scale", dest="scale_rewards", action="store_false", default=None,
                   help="do not divide the advantages by the group's standard deviation (Dr. GRPO)")
    t.add_argument("--max-new-tokens", type=positive_int, metavar="N",
                   help=f"tokens per completion at most (default: {d['max_new_tokens']})")
    t.add_argument("--temperature", type=positive_float,
                   help=f"sampling temperature, {TEMPERATURE_RANGE[0]:g} to {TEMPERATURE_RANGE[1]:g} "
                        f"(default: {d['temperature']:g})")
    t.add_argument("--compile-sampling", action=argparse.BooleanOptionalAction, default=None,
                   help="decode the completions through the compiled step (CUDA graphs) (default: on a CUDA GPU)")
    t.add_argument("--examples", type=positive_int,
                   help=f"training questions of the built-in task (default: {d['examples']})")
    t.add_argument("--eval-questions", type=positive_int,
                   help=f"held-out prompts answered at each evaluation (default: {d['eval_questions']})")
    t.add_argument("--max-len", type=positive_int, help="tokens per sequence at most (default: the model's context)")
    t.add_argument("--out", default="runs/rl", help="run directory (model in OUT/best and OUT/last)")
    t.add_argument("--seed", type=int, help=f"random seed (default: {d['seed']})")
    add_lora_flags(t)
    add_cosine_schedule_flags(t, d)
    add_run_flags(t, d)
    t.set_defaults(func=train_rl_cmd)


_FLAGS = ("base", "data", "reward", "valid", "group", "batch_size", "epsilon", "beta", "scale_rewards",
          "max_new_tokens", "temperature", "compile_sampling", "examples", "eval_questions", "max_len", "seed",
          *COSINE_FLAGS)


def train_rl_cmd(args) -> int:
    from ..training.rl import RLSettings, train_rl

    def train(_, settings, out, **how):             # the data is a setting: --task / --prompts
        return train_rl(settings, out, **how)

    out, run = run_training(args, _FLAGS, RLSettings, train, also=lora_from_flags(args))
    if run.result.main_process:
        if "exact" in run.test:
            figure = f"held-out exact match {run.test['exact']:.3f}"
        else:
            figure = f"mean reward of greedy completions {run.test['reward']:.3f}"
        print(f"{trained(run.result)}; {figure}; model saved to {out / 'best'}")
    return 0


__all__ = ["register_train"]
