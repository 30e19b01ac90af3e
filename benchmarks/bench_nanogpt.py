"""glassformer's ``train lm`` beside nanoGPT's ``train.py``: the "baby GPT" setting nanoGPT documents for a CPU.

4 layers, 4 heads, d_model 128, block 64, batch 12, 2,000 steps on Tiny Shakespeare characters,
lr 1e-3 (100 warm-up steps, cosine to 1e-4), AdamW (β2 0.99, weight decay 0.1), clipping at 1.0,
dropout 0 — nanoGPT's README command for a CPU::

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

Both run as subprocesses of this script, one after the other, with the same number of threads
(OMP_NUM_THREADS / MKL_NUM_THREADS), in ABBA order over ``--repeats`` rounds, each a new process:
what is timed is what a user waits for.  Each side first makes one short untimed run
(``--warmup-steps``), so that the first timed run does not alone pay for reading the libraries
from a cold disk cache.  nanoGPT's files are its own and unmodified, in a
scratch folder (``--nanogpt``, default /tmp/nanogpt: its ``train.py``, ``model.py``,
``configurator.py`` and ``config/train_shakespeare_char.py``); this script only writes its data
there, ``data/shakespeare_char/{train,val}.bin`` and ``meta.pkl``, as nanoGPT's ``prepare.py`` does
(the first 90% of the characters train, uint16 ids of the sorted character set), from the Tiny
Shakespeare text that ships with glassformer.

The model is the same on both sides by default: glassformer's ``gpt-mini`` preset with 64
positions made into nanoGPT's model (no biases, ``bias=False``, and the exact erf GELU of its
``nn.GELU()``; variant "nanoGPT's model").  ``--variants`` adds others, each a glassformer side
of its own: "default" is ``gpt-mini`` as it is, GPT-2's model (biases, and the tanh GELU, which
PyTorch computes about 5× slower than the erf one on this project's CPU, so that its steps are
about 10% slower; measured 2026-12-06).
Each side evaluates every ``--eval-every`` steps (nanoGPT on 20 training and 20 validation
batches, from step 0 and for its ``max_iters`` + 1 steps; glassformer on 20 fixed validation
batches, saving ``best/`` and ``last/`` each time) and reports its own final validation loss; to
compare them, each side's final model is also scored the same way, on the whole validation text
(:func:`common_val_loss`).  The training recipe is nanoGPT's on both sides, weight decay on the
embeddings included (glassformer's ``decay_embeddings``; by default it decays only the other matrices).
Per run the results hold the wall time and the CPU time, the training rate in steps/s read
from each side's own log (the median over log intervals without an evaluation in them, so
start-up and evaluation are left out), the final validation loss and the load average before
and after.

    .venv/bin/python benchmarks/bench_nanogpt.py                         # 2 rounds: ~8 minutes on 2 quiet cores
    .venv/bin/python benchmarks/bench_nanogpt.py --steps 50 --repeats 1 --out /tmp/bench    # a trial

Writes nanogpt_cpu.json and nanogpt_cpu.md under --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import harness
from harness import abba, finish_machine_info, machine_info, machine_line, write_results
from lm_quality import VARIANTS as QUALITY_VARIANTS

NAME = "nanogpt_cpu"
NANOGPT = "nanoGPT"
# glassformer's model: gpt-mini's fields overridden (besides 64 positions and no dropout).
NANOGPT_MODEL = "nanoGPT's model"
VARIANTS = {NANOGPT_MODEL: {**QUALITY_VARIANTS["no bias"], "activation": "gelu"}, **QUALITY_VARIANTS}
NANOGPT_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")
TEXT = harness.ROOT / "glassformer" / "data" / "corpora" / "tinyshakespeare.txt"
SETTING = ("4 layers, 4 heads, d_model 128, block 64, batch 12, lr 1e-3 (cosine to 1e-4, 100 warm-up steps), "
           "AdamW β2 0.99, weight decay 0.1 (embeddings too), clip 1.0, dropout 0, Tiny Shakespeare characters")
BLOCK, BATCH, LAYERS, HEADS, D_MODEL, EVAL_BATCHES = 64, 12, 4, 4, 128, 20


# -- nanoGPT's side -----------------------------------------------------------------------------
def check_nanogpt(folder: Path) -> None:
    missing = [name for name in NANOGPT_FILES if not (folder / name).is_file()]
    if missing:
        sys.exit(f"bench_nanogpt: {folder} lacks nanoGPT's {', '.join(missing)}; put an unmodified copy of "
                 f"https://github.com/karpathy/nanoGPT there (git clone) or pass --nanogpt DIR")


def prepare_shakespeare_char(folder: Path, text: str) -> dict:
    """Write ``folder/data/shakespeare_char/{train,val}.bin`` and ``meta.pkl`` as nanoGPT's
    ``data/shakespeare_char/prepare.py`` does: ids of the sorted character set, uint16, the first
    90% of the text for training."""
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    split = int(len(text) * 0.9)
    out = folder / "data" / "shakespeare_char"
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.bin", text[:split]), ("val.bin", text[split:])):
        np.array([stoi[c] for c in part], dtype=np.uint16).tofile(out / name)
    with open(out / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    return {"characters": len(text), "vocab_size": len(chars), "train_tokens": split, "val_tokens": len(text) - split}


def nanogpt_command(steps: int, warmup: int, eval_every: int, out_dir: Path) -> list[str]:
    """nanoGPT's README command for a CPU, with the run's length, warm-up and evaluation interval."""
    return [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
            f"--eval_iters={EVAL_BATCHES}", "--log_interval=1", f"--block_size={BLOCK}", f"--batch_size={BATCH}",
            f"--n_layer={LAYERS}", f"--n_head={HEADS}", f"--n_embd={D_MODEL}", f"--max_iters={steps}",
            f"--lr_decay_iters={steps}", "--dropout=0.0", f"--warmup_iters={warmup}",
            f"--eval_interval={eval_every}", f"--out_dir={out_dir}", "--always_save_checkpoint=True"]


def read_nanogpt_log(output: str, eval_every: int) -> dict:
    """Its final validation loss and training rate, from what train.py prints: one
    "iter N: loss L, time T ms" line per step, whose time includes the evaluation (and the
    checkpoint) that starts every ``eval_every``-th step, step 0 included."""
    times = {int(i): float(t) / 1000 for i, t in re.findall(r"^iter (\d+): loss \S+, time ([\d.]+)ms", output, re.M)}
    evals = re.findall(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", output, re.M)
    if not times or not evals:
        raise RuntimeError("nanoGPT printed no steps or no evaluation:\n" + output[-2000:])
    plain = [t for i, t in times.items() if i % eval_every]
    return {"steps": max(times) + 1, "val_loss": float(evals[-1][2]), "val_loss_at_step": int(evals[-1][0]),
            "loop_s": sum(times.values()), "steps_per_s": 1 / statistics.median(plain), "evaluations": len(evals)}


# -- glassformer's side -------------------------------------------------------------------------
def glassformer_command(steps: int, warmup: int, eval_every: int, variant: str, out_dir: Path,
                        config: Path) -> list[str]:
    """``glassformer train lm`` with the same setting (the rest of it in ``config``)."""
    config.write_text(json.dumps({
        "model": {"max_len": BLOCK, "dropout": 0.0, **VARIANTS[variant]},
        "betas": [0.9, 0.99], "min_lr_ratio": 0.1, "weight_decay": 0.1, "decay_embeddings": True, "clip_norm": 1.0,
        "eval_batches": EVAL_BATCHES}))
    return [sys.executable, "-m", "glassformer", "train", "lm", "--data", str(TEXT), "--tokenizer", "char",
            "--preset", "gpt-mini", "--config", str(config), "--block-size", str(BLOCK), "--batch-size", str(BATCH),
            "--steps", str(steps), "--lr", "1e-3", "--warmup", str(warmup), "--eval-every", str(eval_every),
            "--device", "cpu", "--precision", "fp32", "--seed", "0", "--out", str(out_dir)]


def read_glassformer_log(run_dir: Path) -> dict:
    """Its final validation loss and training rate, from ``log.jsonl``: one "train" record per log
    interval (tokens/s over the steps after the previous record) and one "eval" record per
    evaluation, made after the step's own record.  An interval holding an evaluation and its
    save, and the first one (the first steps are slow), are left out."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    previous = [0] + [r["step"] for r in train[:-1]]
    plain = [r["tokens_per_s"] / (BATCH * BLOCK) for r, before in zip(train, previous)
             if before > 0 and not any(before <= e["step"] < r["step"] for e in evals)]
    if not plain:                                 # a run too short for a clean interval
        plain = [r["tokens_per_s"] / (BATCH * BLOCK) for r in train]
    return {"steps": train[-1]["step"], "val_loss": evals[-1]["loss"], "val_loss_at_step": evals[-1]["step"],
            "loop_s": train[-1]["elapsed"], "steps_per_s": statistics.median(plain), "evaluations": len(evals)}


# -- one measure for both ---------------------------------------------------------------------
def windows(ids: list[int]) -> tuple:
    """The validation characters as consecutive, non-overlapping windows of BLOCK inputs and their
    next characters: x, y of shape (windows, BLOCK)."""
    import torch
    n = (len(ids) - 1) // BLOCK
    ids = torch.tensor(ids[: n * BLOCK + 1])
    return ids[:-1].view(n, BLOCK), ids[1:].view(n, BLOCK)


def common_val_loss(side: str, out_dir: Path, nanogpt: Path) -> float:
    """The final model's mean next-character loss (nats) over the whole validation part (the last
    10% of the text, as both sides split it), in windows of BLOCK: the same measure for both sides,
    unlike each side's own report (which samples 20 batches).  nanoGPT's model is its own
    ``model.py`` with the weights of its last ``ckpt.pt`` (the checkpoint holds only tensors and
    numbers, so it loads with ``weights_only=True``)."""
    import torch
    text = TEXT.read_text(encoding="utf-8")
    val = text[int(len(text) * 0.9):]
    with torch.no_grad():
        if side == NANOGPT:
            sys.path.insert(0, str(nanogpt))
            from model import GPT, GPTConfig                      # nanoGPT's own module
            sys.path.pop(0)
            checkpoint = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=True)
            model = GPT(GPTConfig(**checkpoint["model_args"])).eval()
            model.load_state_dict(checkpoint["model"])
            stoi = {c: i for i, c in enumerate(sorted(set(text)))}
            x, y = windows([stoi[c] for c in val])
            losses = [model(xb, yb)[1] * yb.numel() for xb, yb in zip(x.split(256), y.split(256))]
        else:
            from glassformer.model_dir import load_model_dir
            loaded = load_model_dir(out_dir / "last")
            x, y = windows(loaded.tokenizer.encode(val))
            losses = [loaded.model(xb, yb, reduction="sum") for xb, yb in zip(x.split(256), y.split(256))]
    return float(sum(losses)) / y.numel()


# -- running ------------------------------------------------------------------------------------
def glassformer_side(variant: str) -> str:
    return f"glassformer ({variant})"


def run_side(side: str, args, scratch: Path, round_index: int) -> dict:
    out_dir = scratch / f"run-{round_index}-{len(list(scratch.iterdir()))}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(harness.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if side == NANOGPT:
        command, cwd = nanogpt_command(args.steps, args.warmup, args.eval_every, out_dir), args.nanogpt
    else:
        variant = next(v for v in args.variants if glassformer_side(v) == side)
        command = glassformer_command(args.steps, args.warmup, args.eval_every, variant, out_dir,
                                      scratch / "glassformer.json")
        cwd = scratch
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    load_after = os.getloadavg()[0]
    if done.returncode:
        sys.exit(f"bench_nanogpt: {side} failed (exit {done.returncode}): "
                 f"{(done.stderr.strip() or done.stdout.strip()).splitlines()[-1]}")
    log = read_nanogpt_log(done.stdout, args.eval_every) if side == NANOGPT else \
        read_glassformer_log(out_dir)
    record = {"side": side, "round": round_index, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
              "steps": log["steps"], "steps_per_s": round(log["steps_per_s"], 2),
              "train_only_s": round(log["steps"] / log["steps_per_s"], 2),
              "loop_s": round(log["loop_s"], 2), "other_s": round(wall - log["steps"] / log["steps_per_s"], 2),
              "val_loss": round(log["val_loss"], 4), "val_loss_at_step": log["val_loss_at_step"],
              "full_val_loss": round(common_val_loss(side, out_dir, args.nanogpt), 4),
              "evaluations": log["evaluations"],
              "load_before": round(load_before, 2), "load_after": round(load_after, 2)}
    print(f"round {round_index} {side}: {wall:.1f} s wall, {record['steps_per_s']:.2f} steps/s, "
          f"validation loss {record['val_loss']:.4f} (its own), {record['full_val_loss']:.4f} (all of it) (load {load_before:.2f} -> {load_after:.2f})", flush=True)
    return record


def summarise(runs: list[dict]) -> dict:
    """Per side: the median over rounds of each figure; per glassformer side, nanoGPT's time over
    its own (> 1: glassformer is faster)."""
    sides = {}
    for side in dict.fromkeys(r["side"] for r in runs):
        mine = [r for r in runs if r["side"] == side]
        sides[side] = {k: round(statistics.median(r[k] for r in mine), 4 if "loss" in k else 2)
                       for k in ("wall_s", "cpu_s", "steps_per_s", "train_only_s", "other_s", "val_loss", "full_val_loss")}
    n = sides[NANOGPT]
    speed = {side: {"wall": round(n["wall_s"] / g["wall_s"], 3), "steps": round(g["steps_per_s"] / n["steps_per_s"], 3)}
             for side, g in sides.items() if side != NANOGPT}
    return {"sides": sides, "speed_vs_nanogpt": speed}


def markdown(r: dict) -> str:
    s = r["summary"]
    md = [
        "# glassformer beside nanoGPT: the baby GPT on a CPU", "",
        f"Setting: {r['setting']}; {r['steps']} steps, evaluation every {r['eval_every']}.  glassformer "
        f"`train lm` and nanoGPT's unmodified `train.py` with its README overrides for a CPU, each a fresh process "
        f"at {r['threads']} threads, {r['schedule']} order over {r['repeats']} round(s); medians over rounds.  "
        "glassformer's model: " + "; ".join(f"{name}: gpt-mini with {json.dumps(VARIANTS[name]) if VARIANTS[name] else 'its own fields'}"
                                            for name in r["variants"]) + ".", "",
        f"{machine_line(r['machine'])}; load average {r['machine'].get('load_average_start')} at the start, "
        f"{r['machine'].get('load_average_end')} at the end.", "",
        "| side | wall time | CPU time | training steps/s | training alone | start-up, evaluation, saving | "
        "validation loss |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    md += [f"| {side} | {v['wall_s']:.1f} s | {v['cpu_s']:.1f} s | {v['steps_per_s']:.2f} | {v['train_only_s']:.1f} s | "
           f"{v['other_s']:.1f} s | {v['val_loss']:.4f} |" for side, v in s["sides"].items()]
    md += [""] + [f"**{side}: nanoGPT's wall time / its own: {x['wall']:.2f}×** (training steps/s alone: "
                  f"{x['steps']:.2f}×; above 1 glassformer is faster)." for side, x in s["speed_vs_nanogpt"].items()]
    md += ["", "Each side reports its own validation loss: nanoGPT the mean of 20 random validation batches, "
               "glassformer of 20 fixed ones.  Steps/s is the median over log intervals without an evaluation; "
               "CPU time is the process's user + system time (both threads).", "",
           "| round | side | wall | CPU | steps/s | validation loss | load before → after |",
           "| ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    md += [f"| {x['round']} | {x['side']} | {x['wall_s']:.1f} s | {x['cpu_s']:.1f} s | {x['steps_per_s']:.2f} | "
           f"{x['val_loss']:.4f} | {x['load_before']:.2f} → {x['load_after']:.2f} |" for x in r["runs"]]
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, default=Path("/tmp/nanogpt"),
                        help="folder holding nanoGPT's unmodified files (default /tmp/nanogpt)")
    parser.add_argument("--out", default=str(harness.RESULTS), help="results directory (default benchmarks/results)")
    parser.add_argument("--steps", type=int, default=2000, help="training steps (default 2000; fewer for a trial)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds, in ABBA order (default 2)")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations (default 250)")
    parser.add_argument("--warmup-steps", type=int, default=20,
                        help="steps of the untimed warm-up run each side makes first (default 20; 0: none)")
    parser.add_argument("--threads", type=int, default=2, help="threads of each side (default 2)")
    parser.add_argument("--variants", nargs="+", default=[NANOGPT_MODEL], choices=list(VARIANTS),
                        help="glassformer's model(s), each a side of its own: \"nanoGPT's model\" (the default: "
                             "no biases, erf GELU), 'default' (gpt-mini as it is: GPT-2's), 'no bias'")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1 or args.eval_every < 1 or args.threads < 1 or args.warmup_steps < 0:
        sys.exit("bench_nanogpt: --steps, --repeats, --eval-every and --threads must be >= 1, --warmup-steps >= 0")
    args.nanogpt = args.nanogpt.resolve()
    check_nanogpt(args.nanogpt)
    args.warmup = min(100, args.steps // 2)
    data = prepare_shakespeare_char(args.nanogpt, TEXT.read_text(encoding="utf-8"))
    info = machine_info()
    info["threads"] = args.threads
    runs = []
    sides = [glassformer_side(v) for v in dict.fromkeys(args.variants)] + [NANOGPT]
    with tempfile.TemporaryDirectory(prefix="bench_nanogpt-") as scratch:
        if args.warmup_steps:      # equal warm-up: each side once, untimed, so that neither pays for a cold disk cache
            warm = argparse.Namespace(**{**vars(args), "steps": args.warmup_steps, "eval_every": args.warmup_steps,
                                         "warmup": min(100, args.warmup_steps // 2)})
            for side in sides:
                run_side(side, warm, Path(scratch), -1)
        for r in range(args.repeats):
            for side in abba(sides, r):
                runs.append(run_side(side, args, Path(scratch), r))
    result = {
        "benchmark": "glassformer train lm beside nanoGPT train.py, baby GPT on a CPU",
        "machine": finish_machine_info(info), "setting": SETTING, "steps": args.steps, "warmup": args.warmup,
        "eval_every": args.eval_every, "eval_batches": EVAL_BATCHES, "warmup_run_steps": args.warmup_steps,
        "variants": list(dict.fromkeys(args.variants)), "model_overrides": {v: VARIANTS[v] for v in args.variants},
        "threads": args.threads, "repeats": args.repeats, "schedule": harness.SCHEDULE, "data": data,
        "nanogpt_command": " ".join(nanogpt_command(args.steps, args.warmup, args.eval_every, Path("OUT"))[1:]),
        "runs": runs, "summary": summarise(runs),
    }
    write_results(args.out, NAME, result, markdown(result))


if __name__ == "__main__":
    main()
