"""Quality of LM training: benchmark shape (a) on Tiny Shakespeare characters, several seeds, two variants.

4 layers, 4 heads, d_model 128, block 64, batch 12, lr 1e-3 (cosine to 1e-4 after
100 warm-up steps), 2000 steps, dropout 0 — the small CPU setting for which nanoGPT
documents a validation loss of about 1.88 nats per character; that is the target.

One invocation trains every (variant, seed) pair, one after the other:

* ``default`` — the ``gpt-mini`` preset as it is (biases in linear layers and norms, as GPT-2);
* ``no bias`` — the same without biases in linear layers and LayerNorms (nanoGPT's default ``bias=False``);

for seeds 0, 1 and 2 (``--seeds``), and reports each run and each variant's mean.
The final figure of a run is the mean loss over 200 validation windows (more than
the 20 used while training), drawn with a fixed generator.

    .venv/bin/python benchmarks/lm_quality.py [--seeds 0 1 2] [--variants default "no bias"] [--threads 2]
    .venv/bin/python benchmarks/lm_quality.py --quick --out /tmp/bench     # 40 steps, seed 0: ~1 min

Full run: 6 trainings of about 2 minutes each on 2 quiet cores.  Reads the Tiny Shakespeare
text shipped with glassformer (``--data tiny-shakespeare``; ``--data PATH`` for another text) and
writes lm_quality.json and lm_quality.md under --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import harness
from glassformer.data.lm import BUILTIN_CORPORA
from harness import finish_machine_info, machine_info, machine_line, write_results

NAME = "lm_quality"
DATA = "tiny-shakespeare"                # the built-in corpus (glassformer/data/corpora/)
TARGET = 1.88
TARGET_SOURCE = "nanoGPT's README documents about 1.88 for this CPU setting, its 'baby GPT' on characters"
VARIANTS = {"default": {}, "no bias": {"bias": False, "norm_bias": False}}
SETTING = "4 layers, 4 heads, d_model 128, block 64, batch 12, lr 1e-3 (cosine to 1e-4, 100 warm-up steps), char tokens"
FINAL_WINDOWS = 200


def train_one(data: str, variant: str, seed: int, steps: int, final_windows: int, device: str) -> dict:
    from glassformer.training.lm import LMSettings, evaluate_lm, train_lm

    settings = LMSettings(preset="gpt-mini", model={"max_len": 64, "dropout": 0.0, **VARIANTS[variant]},
                          tokenizer="char", block_size=64, batch_size=12, steps=steps, lr=1e-3, min_lr_ratio=0.1,
                          warmup=min(100, steps // 2), weight_decay=0.1, betas=(0.9, 0.99),
                          eval_every=max(1, steps // 4), eval_batches=20, seed=seed, device=device, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = train_lm(data, settings, Path(tmp) / "run")
        wall = time.perf_counter() - start
        gen = torch.Generator().manual_seed(1234)
        final = evaluate_lm(run.model.eval(), [run.data.batch("val", 12, gen) for _ in range(final_windows)],
                            next(run.model.parameters()).device)
    return {
        "variant": variant, "model_overrides": VARIANTS[variant], "seed": seed, "steps": run.result.steps,
        "vocab_size": run.tokenizer.vocab_size,
        "val_loss": round(final["loss"], 4), "val_ppl": round(final["ppl"], 3),
        "val_loss_during_training": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()}
                                     for h in run.result.history],
        "wall_s": round(wall, 1), "train_s": round(run.result.seconds, 1),
        "train_tokens_per_s": round(run.result.steps * 12 * 64 / run.result.seconds),
        "threads": torch.get_num_threads(),
    }


def summarise(runs: list[dict], target: float) -> dict:
    """Per variant: its seeds and the mean, lowest and highest validation loss."""
    out = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        losses = [r["val_loss"] for r in runs if r["variant"] == variant]
        mean = statistics.fmean(losses)
        out[variant] = {"seeds": [r["seed"] for r in runs if r["variant"] == variant],
                        "val_loss_mean": round(mean, 4), "val_loss_min": min(losses), "val_loss_max": max(losses),
                        "mean_meets_target": mean <= target}
    return out


def markdown(r: dict) -> str:
    met = {True: "met", False: "NOT met"}
    md = [
        "# LM quality: Tiny Shakespeare characters, shape (a)", "",
        f"Setting: {r['setting']}, {r['steps']} steps; vocabulary {r['vocab_size']} "
        f"(the text's characters + 4 special tokens).  Validation loss over {r['final_eval_windows']} windows.  "
        f"Target ≤ {r['target_val_loss']} ({r['target_source']}).", "",
        f"{machine_line(r['machine'])}.", "",
        "| variant | seed | validation loss | perplexity | wall time | training tokens/s | threads |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    md += [f"| {x['variant']} | {x['seed']} | {x['val_loss']:.4f} | {x['val_ppl']:.3f} | {x['wall_s']:.0f} s | "
           f"{x['train_tokens_per_s']:,} | {x['threads']} |" for x in r["runs"]]
    md += ["", "| variant | seeds | mean validation loss | range | target |", "| --- | --- | ---: | --- | --- |"]
    md += [f"| {name} | {', '.join(map(str, v['seeds']))} | **{v['val_loss_mean']:.4f}** | "
           f"{v['val_loss_min']:.4f}–{v['val_loss_max']:.4f} | {met[v['mean_meets_target']]} |"
           for name, v in r["variants"].items()]
    md += ["", "Validation loss during training (20 windows):", ""]
    md += [f"- {x['variant']}, seed {x['seed']}: " + ", ".join(f"step {h['step']}: {h['loss']:.3f}"
                                                              for h in x["val_loss_during_training"])
           for x in r["runs"]]
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(harness.RESULTS), help="results directory (default benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 steps, seed 0, both variants")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda")
    parser.add_argument("--data", default=DATA, help="the text: a built-in corpus name or a file (default tiny-shakespeare)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds = min(args.steps, 40), args.seeds[:1]
    if args.data not in BUILTIN_CORPORA and not Path(args.data).is_file():
        sys.exit(f"lm_quality: no text at {args.data}; pass --data PATH, or a built-in corpus {list(BUILTIN_CORPORA)}")
    torch.set_num_threads(args.threads)
    from glassformer.devices import pick_device

    device = pick_device(args.device)
    info = machine_info(device)
    runs = []
    for variant in args.variants:
        for seed in args.seeds:
            runs.append(train_one(args.data, variant, seed, args.steps,
                                  20 if args.quick else FINAL_WINDOWS, str(device)))
            print(f"{variant}, seed {seed}: validation loss {runs[-1]['val_loss']:.4f} ({runs[-1]['wall_s']:.0f} s)",
                  flush=True)
    result = {
        "benchmark": "LM quality: Tiny Shakespeare characters, shape (a)", "machine": finish_machine_info(info),
        "quick": args.quick, "setting": SETTING, "steps": args.steps, "data": args.data if args.data in BUILTIN_CORPORA else Path(args.data).name,
        "vocab_size": runs[0]["vocab_size"], "final_eval_windows": 20 if args.quick else FINAL_WINDOWS,
        "target_val_loss": TARGET, "target_source": TARGET_SOURCE,
        "runs": runs, "variants": summarise(runs, TARGET),
    }
    write_results(args.out, NAME, result, markdown(result))


if __name__ == "__main__":
    main()
