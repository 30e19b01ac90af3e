"""The demo's figures: ``make demo`` in a fresh clone, timed, with what its quickstart measured.

Clones this repository (committed work only) into a temporary directory and
runs ``make demo`` there, so the wall time covers what a newcomer waits for:
venv creation, installation (torch first, then glassformer), the corpus,
training and evaluation.  Then reads the run's ``runs/quickstart/results.json``
and writes ``benchmarks/results/quickstart.{json,md}``: wall time, training
time and steps, whether the time limit cut training, exact match / BLEU /
chrF on the held-out test set, exact match per range on numbers seen in
training and on held-out ones, the same on their spoken forms ("hundert" for
"einhundert"), and the machine (CPU, threads, torch, load).

    python benchmarks/bench_quickstart.py              # fresh clone + make demo (the README's figures)
    python benchmarks/bench_quickstart.py --no-clone   # glassformer quickstart in this checkout (a quick check)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import (DEMO_MODEL, RESULTS, ROOT, finish_machine_info, machine_info, machine_line, run_logged,
                     scratch_directory, weights_digest, write_results)


def torch_version(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def markdown(result: dict[str, Any]) -> str:
    q, info = result["quickstart"], result["machine"]
    how = (f"`make demo` in a fresh clone of commit {info['git_commit']} (venv creation, installation, corpus, "
           "training, evaluation)" if result["fresh_clone"]
           else f"`glassformer quickstart` in the checkout at {info['git_commit']} (no installation)")
    limited = (f", **cut by the time limit** after {q['train_steps']} of {q['max_steps']} steps" if q["time_limited"]
               else f" of {q['max_steps']} (not cut by the time limit)")
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    lines = [
        "# The quickstart demo", "",
        f"{how}; {machine_line(info)}; load average {info.get('load_average_start')} before, "
        f"{info.get('load_average_end')} after (the machine is shared: timings are as seen).", "",
        "| | measured |", "| --- | --- |",
        f"| wall time | **{result['wall_seconds']:.0f} s**, of which the quickstart {q['total_seconds']:.0f} s |",
        f"| training | {q['train_steps']} steps{limited}, {q['train_seconds']:.0f} s, {q['threads']} threads |",
        f"| model evaluated (saved as runs/quickstart/best) | {q.get('model', 'lowest validation loss')} |",
        f"| held-out test set ({q['sentences']:,} numbers) | exact match **{q['exact_match']:.2f}%**, "
        f"sacreBLEU {q['bleu']:.2f}, chrF {q['chrf']:.2f} |", "",
        "Exact match by range, on numbers seen in training and on held-out numbers (never in training):", "",
        "| range | seen in training: exact match % | numbers | held out: exact match % | numbers |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    rows = dict(q["by_range"])
    if "spoken_forms" in q:                   # the spoken forms of those numbers, all ranges together
        rows['spoken forms ("hundert" for "einhundert")'] = q["spoken_forms"]
    for label, parts in rows.items():
        seen, held = parts["seen"], parts["held_out"]
        lines.append(f"| {label} | {fmt(seen['exact_match'])} | {seen['n']:,} | {fmt(held['exact_match'])} | "
                     f"{held['n']:,} |")
    return "\n".join(lines)


def keep_model(model: Path, keep: Path) -> None:
    """Copy the model the demo trained to ``keep`` (replacing the previous demo model kept there), so the
    decoding benchmark measures the very model whose figures the demo block shows."""
    if keep.exists():
        shutil.rmtree(keep)
    shutil.copytree(model, keep)
    print(f"the demo's model is kept in {keep}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-clone", action="store_true",
                    help="run glassformer quickstart in this checkout instead of make demo in a fresh clone")
    ap.add_argument("--repo", default=str(ROOT), help="repository to clone (default: this one)")
    ap.add_argument("--out", default=str(RESULTS), help="directory for quickstart.json/.md")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone (its path is printed)")
    ap.add_argument("--keep-model", default=str(DEMO_MODEL),
                    help="where the demo's model is copied for bench_numbers_decoding.py (default: %(default)s)")
    args = ap.parse_args()

    info = machine_info()
    with scratch_directory("glassformer-demo-", args.keep) as work:
        log = work / "demo.log"
        if args.no_clone:
            checkout = ROOT
            run_dir = work / "runs" / "quickstart"
            python = Path(sys.executable)
            cmd = [str(python), "-m", "glassformer", "quickstart", "--out", str(run_dir)]
        else:
            checkout = work / "glassformer"
            subprocess.run(["git", "clone", "--quiet", args.repo, str(checkout)], check=True)
            run_dir = checkout / "runs" / "quickstart"
            python = checkout / ".venv" / "bin" / "python"
            cmd = ["make", "demo"]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True,
                                check=True).stdout.strip()
        env_threads = os.environ.get("OMP_NUM_THREADS")
        wall = run_logged(cmd, log, cwd=checkout)
        quickstart = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        info["torch"] = torch_version(python)          # the demo's torch, not this script's
        info["transformers"] = None                     # not used by the demo
        info["threads"] = quickstart["threads"]
        info["git_commit"] = commit
        keep_model(run_dir / "best", Path(args.keep_model))
        result = {"fresh_clone": not args.no_clone, "command": " ".join(cmd), "wall_seconds": round(wall, 1),
                  "OMP_NUM_THREADS": env_threads, "quickstart": quickstart,
                  "model_sha256": weights_digest(run_dir / "best"), "machine": finish_machine_info(info)}
        write_results(args.out, "quickstart", result, markdown(result))


if __name__ == "__main__":
    main()
