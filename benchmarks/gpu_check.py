"""One GPU check: every GPU path of glassformer, each in its own process, on one CUDA GPU in at most 8 minutes.

    python benchmarks/gpu_check.py                       # on a CUDA machine: results/gpu_check.json and .md
    make gpu-check                                       # the same
    python benchmarks/gpu_check.py --smoke --out /tmp/gc # the same paths on the CPU, as far as a CPU goes
    python benchmarks/gpu_check.py --list                # the paths and their commands, nothing run

The paths, each a command run as a user runs it, in a subprocess with its own timeout:

* ``train-TASK-bf16`` and ``train-TASK-fp16`` for every training task (lm, translation, mlm, classify,
  vit, caption): a tiny preset, 4 optimiser steps of 2 micro-batches, evaluated and saved every 2 steps
  (fp16 with ``--on-nan stop``: the gradient scaler's overflow steps must not stop it);
* ``train-TASK-compile``: the same with ``--compile`` (precision auto: bf16 on the GPU);
* ``train-TASK-ddp`` and ``train-TASK-fsdp``: the same under ``torchrun --standalone --nproc-per-node 1``
  with ``--distributed ddp`` / ``fsdp`` (NCCL on the GPU);
* ``generate-greedy-compiled``, ``generate-beam-compiled``, ``translate-greedy-compiled`` and
  ``translate-beam-compiled``: ``--compile`` decoding (the step captured in CUDA graphs on a GPU) with
  the models that ``train-lm-bf16`` and ``train-translation-bf16`` saved;
* ``bench-gpu-quick``: ``benchmarks/bench_gpu.py --quick``.  Its figures go to the check's scratch
  folder and are not measurements: the other paths share the GPU meanwhile.

Several paths run at once (``--jobs``); the whole check stops at its budget (``--budget``, 480 s on
the GPU), and a path the budget leaves no time for fails, named.  Per path the results file records
the command, the status (ok, failed, or skipped with the reason), the seconds and, on failure, the
line that says what went wrong and the last lines of its output (commands run with ``--debug``, so
that is the traceback).  The exit status is 1 when a path failed, each named on one line of stderr;
2 without a CUDA device (and without ``--smoke``), when nothing was checked.

``--smoke`` runs the same paths on the CPU, as far as a CPU goes: bf16 under CPU autocast, fp16
skipped (glassformer trains in fp16 only on CUDA, where the gradient scaler is), ``--compile``
through inductor (it needs a C++ compiler), gloo instead of NCCL, ``bench_gpu.py --smoke`` instead
of ``--quick``; one path at a time, no budget.  It writes under ``--out`` (default: a new temporary
folder), never benchmarks/results.  ``--only PATTERN`` (repeatable, shell-style: ``'train-lm-*'``)
runs some paths; the others are listed as skipped, not selected.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import RESULTS, ROOT, machine_info, write_results

NAME = "gpu_check"
TASKS = ("lm", "translation", "mlm", "classify", "vit", "caption")
BUDGET_S = 480                                # the whole check on the GPU: 8 minutes
TAIL_LINES = 40                               # of a failed path's output, kept in the results file
# Seconds a path may take, by kind: on the GPU, and on the CPU (--smoke: inductor compiles slowly there).
TIMEOUTS = {"gpu": {"train": 150, "compile": 300, "decode": 300, "bench": 420},
            "smoke": {"train": 300, "compile": 900, "decode": 900, "bench": 600}}
FP16_ON_CPU = "fp16 needs CUDA: glassformer trains in fp16 only with CUDA's gradient scaler"


@dataclass
class Check:
    """One GPU path: the command that runs it and how long it may take."""

    name: str
    command: list[str]
    timeout: float
    needs: str | None = None          # the path whose saved model this one uses
    skip: str | None = None           # why it cannot run here


# ---------------------------------------------------------------------------------------------
# the paths


def glassformer(*args: str) -> list[str]:
    return [sys.executable, "-m", "glassformer", *args, "--debug"]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
            "-m", "glassformer", *args, "--debug"]


# How each task is trained: (variant, launcher, its options, its kind of timeout).
VARIANTS = (("bf16", glassformer, ["--precision", "bf16"], "train"),
            ("fp16", glassformer, ["--precision", "fp16", "--on-nan", "stop"], "train"),
            ("compile", glassformer, ["--compile"], "compile"),
            ("ddp", torchrun, ["--distributed", "ddp"], "train"),
            ("fsdp", torchrun, ["--distributed", "fsdp"], "train"))


def training_args(task: str, data: Path) -> list[str]:
    """A few steps of ``task`` on a tiny preset (the run directory, device and precision aside)."""
    text = str(data / "text.txt")
    every = ["--steps", "4", "--eval-every", "2", "--log-every", "1"]
    accumulate = ["--grad-accum", "2"]
    return {
        "lm": ["train", "lm", "--data", text, "--preset", "gpt-tiny", "--block-size", "16", "--batch-size", "4",
               *accumulate],
        # (translation sets its accumulation in a settings file: it has no --grad-accum)
        "translation": ["train", "translation", "--src", str(data / "pairs.tsv"), "--preset", "vaswani-tiny",
                        "--vocab-size", "60", "--max-tokens", "200", "--config", str(data / "translation.json")],
        "mlm": ["train", "mlm", "--data", text, "--preset", "bert-tiny", "--vocab-size", "100", "--block-size", "16",
                "--batch-size", "4", "--eval-batches", "2", *accumulate],
        "classify": ["finetune", "classify", "--dataset", "number-language", "--model", "bert-tiny",
                     "--vocab-size", "200", "--batch-size", "8", *accumulate],
        "vit": ["train", "vit", "--dataset", "digits", "--preset", "vit-tiny", "--batch-size", "8", *accumulate],
        "caption": ["train", "caption", "--dataset", "digits", "--preset", "caption-tiny", "--batch-size", "8",
                    *accumulate],
    }[task] + every


def plan(smoke: bool, work: Path) -> list[Check]:
    """Every GPU path, in the order the results list them; run directories go under ``work``."""
    device = ["--device", "cpu" if smoke else "cuda"]
    timeout = TIMEOUTS["smoke" if smoke else "gpu"]
    data = work / "data"
    checks = []
    for task in TASKS:
        args = training_args(task, data) + device
        for variant, launch, flags, kind in VARIANTS:
            name = f"train-{task}-{variant}"
            checks.append(Check(name, launch(*args, *flags, "--out", str(work / name)), timeout[kind],
                                skip=FP16_ON_CPU if smoke and variant == "fp16" else None))
    gpt, translator = work / "train-lm-bf16" / "best", work / "train-translation-bf16" / "best"
    for search, beam in (("greedy", "1"), ("beam", "3")):
        checks.append(Check(f"generate-{search}-compiled",
                            glassformer("generate", str(gpt), "the quick brown", "--max-new-tokens", "16",
                                        "--temperature", "0", "--beam", beam, "--compile", *device),
                            timeout["decode"], needs="train-lm-bf16"))
    for search, beam in (("greedy", "1"), ("beam", "3")):
        checks.append(Check(f"translate-{search}-compiled",
                            glassformer("translate", str(translator), "alpha beta gamma", "eta delta",
                                        "--beam", beam, "--compile", *device),
                            timeout["decode"], needs="train-translation-bf16"))
    bench = [sys.executable, str(Path(__file__).with_name("bench_gpu.py")), "--smoke" if smoke else "--quick",
             "--out", str(work / "bench_gpu")]
    checks.append(Check("bench-gpu-quick", bench, timeout["bench"]))
    return checks


def write_data(data: Path) -> None:
    """The training text and the parallel corpus (reversing a list of words) the paths read."""
    data.mkdir(parents=True, exist_ok=True)
    (data / "text.txt").write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n"
                                           for i in range(300)), encoding="utf-8")
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    pairs = [[words[(7 * i + 3 * j) % len(words)] for j in range(2 + i % 5)] for i in range(400)]
    (data / "pairs.tsv").write_text("".join(f"{' '.join(p)}\t{' '.join(reversed(p))}\n" for p in pairs),
                                    encoding="utf-8")
    (data / "translation.json").write_text('{"grad_accum": 2}', encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# running them


def run_check(check: Check, env: dict[str, str], deadline: float | None) -> dict:
    """Run one path in its own process group (torchrun's workers included, all killed at the timeout)."""
    record = {"name": check.name, "command": shlex.join(check.command)}
    timeout = check.timeout if deadline is None else min(check.timeout, deadline - time.monotonic())
    if timeout <= 0:
        return {**record, "status": "failed", "seconds": 0.0, "error": "not started: the check's budget was spent"}
    start = time.monotonic()
    process = subprocess.Popen(check.command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace", start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        error = None
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        error = f"timed out after {timeout:.0f} s" + ("" if timeout == check.timeout else " (the check's budget)")
    record["seconds"] = round(time.monotonic() - start, 1)
    record["returncode"] = process.returncode
    if error is None and process.returncode == 0:
        return {**record, "status": "ok"}
    lines = own_output(output).rstrip().splitlines()
    return {**record, "status": "failed", "error": error or what_went_wrong(lines),
            "output_tail": lines[-TAIL_LINES:]}


def own_output(output: str) -> str:
    """The output without torchrun's own report of a failed worker (the worker's traceback is above it)."""
    report = re.search(r"^.*elastic.*failed \(exitcode", output, flags=re.M)
    return output[:report.start()] if report else output


def what_went_wrong(lines: list[str]) -> str:
    """glassformer's one-line error, else the last exception line, else the last line."""
    lines = [re.sub(r"^\[rank\d+\]:", "", line).strip() for line in lines if line.strip()]  # torchrun's prefix
    for line in reversed(lines):
        if line.startswith("glassformer:") or re.match(r"[\w.]*(Error|Exception|Interrupt)\b", line):
            return line[:400]
    return lines[-1][:400] if lines else "no output"


def run_all(checks: list[Check], env: dict[str, str], jobs: int, budget: float | None) -> dict[str, dict]:
    """Run the checks, ``jobs`` at a time; a path whose model comes from another waits for it."""
    deadline = None if budget is None else time.monotonic() + budget
    futures, lock = {}, threading.Lock()

    def one(check: Check) -> dict:
        if check.skip:
            record = {"name": check.name, "command": shlex.join(check.command), "status": "skipped",
                      "reason": check.skip}
        elif check.needs and (status := futures[check.needs].result()["status"]) != "ok":
            record = {"name": check.name, "command": shlex.join(check.command), "status": "failed",
                      "seconds": 0.0, "error": f"not started: {check.needs}, whose model it decodes, {status}"}
        else:
            record = run_check(check, env, deadline)
        with lock:
            seconds = f"{record['seconds']:6.1f} s" if "seconds" in record else " " * 8
            print(f"{record['status']:8}{seconds}  {check.name}", flush=True)
        return record

    # The longest first, and a path only after the one it needs (so a waiting path never holds up its own model).
    order = sorted(checks, key=lambda c: (c.needs is not None, -c.timeout))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for check in order:
            futures[check.name] = pool.submit(one, check)
    return {name: future.result() for name, future in futures.items()}


def select(checks: list[Check], patterns: list[str]) -> list[Check]:
    """The checks a pattern names, with the ones whose models they need."""
    chosen = {c.name for c in checks if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)}
    chosen |= {c.needs for c in checks if c.name in chosen and c.needs}
    return [c for c in checks if c.name in chosen]


# ---------------------------------------------------------------------------------------------
# report


def markdown(result: dict) -> str:
    lines = [f"# GPU check: every GPU path of glassformer{' (smoke run on the CPU)' if result['smoke'] else ''}", "",
             f"{result['date']}, {result['gpu'] or 'no GPU'}, torch {result['torch']}: "
             f"{sum(p['status'] == 'ok' for p in result['paths'])} of {len(result['paths'])} paths ok, "
             f"{len(result['failed'])} failed, in {result['seconds']:.0f} s.", "",
             "| path | status | seconds | what went wrong |", "| --- | --- | ---: | --- |"]
    for p in result["paths"]:
        why = p.get("error") or p.get("reason") or ""
        seconds = f"{p['seconds']:.1f}" if "seconds" in p else ""
        lines.append(f"| {p['name']} | {p['status']} | {seconds} | {why.replace('|', '/')} |")
    return "\n".join(lines + ["", "The commands, and the output of every failed path, are in the JSON file.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the same paths on the CPU, tiny, one at a time")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results; with --smoke, "
                                                     "a new temporary folder)")
    parser.add_argument("--only", action="append", metavar="PATTERN", default=None,
                        help="run only the paths whose names match (shell-style; repeatable)")
    parser.add_argument("--jobs", type=int, default=None, help="paths run at once (default: 6 on the GPU, 1 smoke)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for the whole check (default: {BUDGET_S} on the GPU, none with --smoke)")
    parser.add_argument("--list", action="store_true", help="print the paths and their commands, run nothing")
    args = parser.parse_args(argv)

    start = time.monotonic()
    budget = args.budget if args.budget is not None else None if args.smoke else BUDGET_S
    jobs = args.jobs or (1 if args.smoke else 6)
    if args.smoke and args.out and Path(args.out).resolve() == RESULTS.resolve():
        parser.error("smoke results never go to benchmarks/results; choose another --out")
    with tempfile.TemporaryDirectory(prefix="gpu_check_work_") as scratch:
        work = Path(scratch)
        checks = plan(args.smoke, work)
        if args.list:
            for check in checks:
                print(f"{check.name}: {shlex.join(check.command)}")
            return 0
        chosen = select(checks, args.only) if args.only else checks
        if not chosen:
            parser.error(f"--only {' '.join(args.only)} names no path; --list shows them")
        if not args.smoke and not torch.cuda.is_available():
            print("gpu_check: no CUDA device, nothing checked (--smoke runs the paths on the CPU)", file=sys.stderr)
            return 2
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
        write_data(work / "data")
        records = run_all(chosen, env, jobs, budget)

    not_selected = f"not selected (--only {' '.join(args.only or [])})"
    paths = [records.get(c.name) or {"name": c.name, "command": shlex.join(c.command), "status": "skipped",
                                     "reason": not_selected} for c in checks]
    failed = [p for p in paths if p["status"] == "failed"]
    device = torch.device("cpu" if args.smoke else "cuda")
    info = machine_info(device)
    result = {"check": "every GPU path of glassformer, each in its own process", "smoke": args.smoke,
              "date": f"{info['date']} {info['time_utc']} UTC", "gpu": info["gpu"], "torch": torch.__version__,
              "cuda": torch.version.cuda, "machine": info, "jobs": jobs, "budget_s": budget,
              "seconds": round(time.monotonic() - start, 1), "failed": [p["name"] for p in failed], "paths": paths}
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_check_")) if args.smoke else RESULTS
    write_results(out, NAME, result, markdown(result))
    print(f"{len(paths) - len(failed)} of {len(paths)} paths ok or skipped, {len(failed)} failed, "
          f"in {result['seconds']:.0f} s")
    for p in failed:
        print(f"gpu_check: {p['name']} failed: {p['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
