"""Image to text on strips of scikit-learn's digits, as a user runs it: ``glassformer train caption
--dataset digits`` (the defaults but 700 steps, training capped at 4 minutes), timed, with the held-out
exact match the run writes to OUT/results.json.

    python benchmarks/caption_digits.py        # -> benchmarks/results/caption_digits.json and .md

A strip holds 1 to 3 digit images side by side (8 × 24 pixels, blank after the last digit); the caption is
their names ("seven two nine").  The test strips are composed from the held-out 20% of the digit images,
never seen in training; exact match = the greedy caption is the whole caption, nothing more.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import finish_machine_info, machine_info, machine_line, write_results

NAME = "caption_digits"
STEPS = 700                      # what fits 4 minutes on 2 shared CPU cores, so the schedule runs to its end
TIME_LIMIT = 240                 # seconds of training at most, whatever the machine's load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "glassformer", "train", "caption", "--dataset", "digits", "--out", str(run),
               "--device", "cpu", "--steps", str(STEPS), "--time-limit", str(TIME_LIMIT)]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"train caption failed:\n{done.stderr[-2000:]}")
        measured = json.loads((run / "results.json").read_text())
        settings = json.loads((run / "best" / "config.json").read_text())
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    info = finish_machine_info(info)
    history = [{k: v for k, v in r.items() if k != "kind"} for r in records if r["kind"] == "eval"]
    command = f"glassformer train caption --dataset digits --steps {STEPS} --time-limit {TIME_LIMIT}"
    result = {"benchmark": "glassformer train caption --dataset digits (defaults but --steps; training at most "
                           "4 minutes)", "machine": info, "command": command, "model": settings, "validation": history,
              "wall_seconds": round(wall, 1), **measured}
    lo, hi = measured["digits_per_strip"]
    trained = f"{measured['steps']} of {STEPS} steps"
    if measured["steps"] < STEPS:
        trained += " (stopped by the time limit)"
    md = "\n".join([
        "# Image to text: captioning strips of scikit-learn's digits", "",
        machine_line(info) + f"; load average {info.get('load_average_start')} at the start, "
        f"{info.get('load_average_end')} at the end (a shared machine)", "",
        f"`{command}`: preset `caption-digits` (a ViT encoder of 3 layers over 2 × 6 patches of 4×4 pixels, a "
        f"Transformer decoder of 2 layers cross-attending to them; d_model 64), strips of {lo}–{hi} digits, "
        "batch 64, label smoothing 0.1; wall time of the whole command.", "",
        "| | measured |", "| --- | --- |",
        f"| held-out exact match ({measured['test_strips']} strips of the {measured['test_images']} test images, "
        f"never seen) | **{100 * measured['test_exact_match']:.2f}%** |",
        f"| held-out token accuracy (teacher-forced) | {100 * measured['test_token_accuracy']:.2f}% |",
        f"| training | {trained}, {measured['train_seconds']:.0f} s |",
        f"| wall time | {wall:.0f} s |",
    ])
    write_results(args.out, NAME, result, md)


if __name__ == "__main__":
    main()
