"""The ViT on scikit-learn's digits, as a user runs it: ``glassformer train vit --dataset digits``
(the defaults), timed, with the held-out test accuracy the run writes to OUT/results.json.

    python benchmarks/vit_digits.py            # -> benchmarks/results/vit_digits.json and .md

The goal the project set: at least 97% on the held-out 20% in under 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import machine_info, machine_line, write_results

NAME = "vit_digits"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "glassformer", "train", "vit", "--dataset", "digits", "--out", str(run),
               "--device", "cpu"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"train vit failed:\n{done.stderr[-2000:]}")
        measured = json.loads((run / "results.json").read_text())
    info = machine_info()
    result = {"benchmark": "glassformer train vit --dataset digits (defaults)", "machine": info,
              "command": "glassformer train vit --dataset digits", "wall_seconds": round(wall, 1), **measured}
    md = "\n".join([
        "# ViT on scikit-learn's digits", "", machine_line(info), "",
        "`glassformer train vit --dataset digits` with its defaults (preset `vit-digits`: 16 patches of 2×2 pixels, "
        "4 layers of 64; 1,500 steps of 64 images), wall time of the whole command.", "",
        "| | measured |", "| --- | --- |",
        f"| held-out test accuracy ({measured['test_images']} images, 20%, never seen) | "
        f"**{100 * measured['test_accuracy']:.2f}%** |",
        f"| training | {measured['steps']} steps, {measured['train_seconds']:.0f} s |",
        f"| wall time | {wall:.0f} s |",
    ])
    write_results(args.out, NAME, result, md)


if __name__ == "__main__":
    main()
