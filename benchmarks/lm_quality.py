"""Quality check of LM training: benchmark shape (a) on Tiny Shakespeare characters.

4 layers, 4 heads, d_model 128, block 64, batch 12, lr 1e-3 (cosine to 1e-4 after
100 warm-up steps), 2000 steps, dropout 0 — the small CPU setting known to reach a
validation loss of about 1.88 nats per character.  The target: <= 1.88.

    .venv/bin/python benchmarks/lm_quality.py [--steps N]

Reads ../shared/data/tinyshakespeare.txt (relative to the repository root; the text
is not part of the project) and writes benchmarks/results/lm_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from glassformer.training.lm import LMSettings, evaluate_lm, train_lm  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
TARGET = 1.88


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="lm_quality", help="results file name (without suffix)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = LMSettings(preset="gpt-mini", model={"max_len": 64, "dropout": 0.0}, tokenizer="char", block_size=64,
                          batch_size=12, steps=args.steps, lr=1e-3, min_lr_ratio=0.1, warmup=100,
                          weight_decay=0.1, betas=(0.9, 0.99), eval_every=500, eval_batches=20, seed=args.seed,
                          device="cpu", progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = train_lm(DATA, settings, Path(tmp) / "run")
        wall = time.perf_counter() - start
        # The final figure over 200 validation windows (more than the 20 used while training).
        gen = torch.Generator().manual_seed(1234)
        final = evaluate_lm(run.model.eval(), [run.data.batch("val", 12, gen) for _ in range(200)], "cpu")
    result = {
        "setting": "4 layers, 4 heads, d_model 128, block 64, batch 12, lr 1e-3, 2000 steps, char tokens",
        "data": "tinyshakespeare.txt", "steps": run.result.steps, "vocab_size": run.tokenizer.vocab_size,
        "val_loss": round(final["loss"], 4), "val_ppl": round(final["ppl"], 3),
        "val_loss_during_training": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()}
                                     for h in run.result.history],
        "target_val_loss": TARGET, "meets_target": final["loss"] <= TARGET,
        "wall_s": round(wall, 1), "train_s": round(run.result.seconds, 1),
        "train_tokens_per_s": round(run.result.steps * 12 * 64 / run.result.seconds),
        "seed": args.seed, "threads": args.threads, "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = [
        "# LM quality: Tiny Shakespeare characters, shape (a)", "",
        f"Setting: {result['setting']} (vocabulary {result['vocab_size']}: 65 characters + 4 special tokens).", "",
        "| metric | value |", "| --- | --- |",
        f"| validation loss (200 windows) | **{result['val_loss']:.4f}** (target <= {TARGET}: "
        f"{'met' if result['meets_target'] else 'NOT met'}) |",
        f"| validation perplexity | {result['val_ppl']:.3f} |",
        f"| wall time | {result['wall_s']:.0f} s (training {result['train_s']:.0f} s, {result['threads']} threads, "
        "CPU shared with other jobs) |",
        f"| training tokens/s | {result['train_tokens_per_s']:,} |", "",
        "Validation loss during training (20 windows): "
        + ", ".join(f"step {h['step']}: {h['loss']:.3f}" for h in result["val_loss_during_training"]), "",
    ]
    (out / f"{args.out}.md").write_text("\n".join(md), encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
