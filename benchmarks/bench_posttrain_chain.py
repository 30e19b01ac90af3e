"""The post-training quickstart's figures: ``glassformer quickstart post-training`` at its defaults, timed.

Runs the command in this checkout (a subprocess with ``OMP_NUM_THREADS`` = ``--threads``, default 2) into
a fresh scratch directory — so the base model is trained, not reused — and writes
``benchmarks/results/posttrain_chain.{json,md}``: the wall time; each stage's steps (and whether its
time limit cut it), training, whole-stage and evaluation seconds; the exact match of each stage's model
on the held-out questions (numbers never seen in training), over all and per question type; the
machine (CPU, threads, torch, load average before and after: on a shared machine timings are as seen).

    python benchmarks/bench_posttrain_chain.py                      # the README's figures (about 15 min on 2 cores)
    python benchmarks/bench_posttrain_chain.py --quick --out /tmp/b  # a tiny chain in seconds: checks the script only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from harness import (RESULTS, finish_machine_info, machine_info, machine_line, run_logged, scratch_directory,
                     weights_digest, write_results)

# --quick: a one-layer GPT with d_model 32 and a few steps per stage (what tests/test_posttrain_quickstart.py runs).
QUICK_CONFIG = {"model": {"max_len": 160, "n_layers": 1, "d_model": 32, "n_heads": 2}, "pretraining_questions": 200,
                "base": {"batch_size": 4, "eval_batches": 2},
                "sft": {"examples": 32, "eval_questions": 8, "test_questions": 8, "batch_size": 8},
                "dpo": {"examples": 16, "eval_questions": 8, "batch_size": 4},
                "rl": {"examples": 16, "eval_questions": 8, "batch_size": 2, "group": 2, "max_new_tokens": 8}}
QUICK_FLAGS = ["--base-steps", "3", "--sft-steps", "2", "--dpo-steps", "2", "--rl-steps", "2", "--test-questions", "24"]


def markdown(result: dict[str, Any]) -> str:
    from glassformer.training.posttrain_quickstart import markdown_table

    summary, info = result["summary"], result["machine"]
    lines = [
        "# The post-training quickstart" + (" (--quick: a tiny chain, not a measurement)" if result["quick"] else ""),
        "",
        f"`{result['command']}` in the checkout at {info['git_commit']}, from an empty run directory (the base model "
        f"trained, not reused); {machine_line(info)}; OMP_NUM_THREADS={result['OMP_NUM_THREADS']}; load average "
        f"{info.get('load_average_start')} before, {info.get('load_average_end')} after (timings are as seen).", "",
        f"Wall time **{result['wall_seconds']:.0f} s** (the chain's own count: {summary['total_seconds']:.0f} s).", "",
        f"Held-out exact match after each stage, {summary['test_questions']} questions of numbers-instruct whose "
        "numbers never occur in training, greedy decoding:", "",
        markdown_table(summary), "",
        *[f"{note}\n" for note in summary.get("notes", [])],
        "| stage | steps | time limit (s) | training (s) | whole stage (s) | exact-match evaluation (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    limits = result["time_limits"]
    for name, stage in summary["stages"].items():
        steps = f"{stage['steps']} of {stage['max_steps']}" + (" (cut by the time limit)" if stage["time_limited"]
                                                             else "")
        lines.append(f"| {name} | {steps} | {limits[name]} | {stage['train_seconds']:.0f} | "
                     f"{stage['stage_seconds']:.0f} | {stage['eval_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(RESULTS), help="directory for posttrain_chain.json/.md")
    ap.add_argument("--quick", action="store_true",
                    help="a tiny chain (seconds) to check the script; write it to a scratch --out")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the command (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (its path is printed)")
    ap.add_argument("--time-budget", type=float, help="the chain's --time-budget (default: its own); a trial on a "
                    "busy machine, where the default limits would cut the stages short")
    args = ap.parse_args()
    if args.quick and Path(args.out).resolve() == RESULTS.resolve():
        raise SystemExit("--quick measures nothing: give it a scratch --out, not benchmarks/results")

    from glassformer.training.posttrain_quickstart import ChainSettings

    info = machine_info()
    with scratch_directory("glassformer-posttrain-chain-", args.keep) as work:
        run_dir = work / "run"
        cmd = [sys.executable, "-m", "glassformer", "quickstart", "post-training", "--out", str(run_dir)]
        settings = ChainSettings()
        if args.time_budget:
            cmd += ["--time-budget", f"{args.time_budget:g}"]
            settings = ChainSettings(time_budget=args.time_budget)
        if args.quick:
            config = work / "quick.json"
            config.write_text(json.dumps(QUICK_CONFIG), encoding="utf-8")
            cmd += ["--config", str(config), *QUICK_FLAGS]
            settings = ChainSettings.from_dict({**QUICK_CONFIG, "time_budget": settings.time_budget})
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        wall = run_logged(cmd, work / "chain.log", env=env)
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        info["threads"] = summary["threads"]          # the command's, not this script's
        result = {"quick": args.quick, "command": " ".join(["glassformer", *cmd[3:]]).replace(str(work), "SCRATCH"),
                  "wall_seconds": round(wall, 1), "OMP_NUM_THREADS": args.threads, "summary": summary,
                  "time_limits": {stage: settings.time_limit(stage) for stage in summary["stages"]},
                  "model_sha256": {stage: weights_digest(run_dir / stage / "best") for stage in summary["stages"]},
                  "machine": finish_machine_info(info)}
        write_results(args.out, "posttrain_chain", result, markdown(result))


if __name__ == "__main__":
    main()
