"""Run every benchmark, one after the other, each in its own process; say where the results went.

    python benchmarks/run_all.py                      # everything, into benchmarks/results (`make bench`)
    python benchmarks/run_all.py --quick              # smoke run of everything, into benchmarks/out/quick
    python benchmarks/run_all.py --only gpt beam      # some of them
    python benchmarks/run_all.py --skip-demo          # all but the demo (5-10 minutes on 2 cores)
    python benchmarks/run_all.py --only gpu           # the GPU benchmark (GPU only; never in the default set)

``decoding`` evaluates the quickstart model at runs/quickstart/best; when there is none,
it is trained first with ``glassformer quickstart`` in this checkout (a few minutes; in
a quick run, a 20-step toy model in the quick output directory).  Quick runs never
write to benchmarks/results.  Afterwards the README's result blocks are compared
with the results (``benchmarks/readme_tables.py``); ``--write-readme`` rewrites them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
QUICK_OUT = HERE / "out" / "quick"                 # ignored by git

# name -> (script, what it measures, options it takes from here)
BENCHMARKS = {
    "params": ("param_counts.py", "parameter counts of the presets", ()),
    "demo": ("bench_quickstart.py", "the demo, `make demo` end to end", None),      # None: ask the script
    "decoding": ("bench_numbers_decoding.py", "greedy / beam / MBR on the quickstart model",
                 ("--threads", "--device")),
    "gpt": ("bench_gpt.py", "GPT training and generation vs Hugging Face", ("--threads", "--device")),
    "beam": ("bench_beam.py", "beam search vs Hugging Face Marian", ("--threads", "--device")),
    "train_translation": ("bench_train_translation.py", "translation training step vs Hugging Face Marian",
                          ("--threads", "--device")),
    "lm_quality": ("lm_quality.py", "Tiny Shakespeare validation loss, seeds and variants", ("--threads", "--device")),
    "lora": ("bench_lora.py", "LoRA forward + backward vs peft", None),
    "sft": ("bench_sft.py", "SFT training step vs trl's SFTTrainer", None),
    "dpo": ("bench_dpo.py", "DPO training step vs trl's DPOTrainer", None),
    "grpo": ("bench_grpo.py", "one GRPO step vs trl's GRPOTrainer", None),
    "lstm_step": ("bench_lstm_step.py", "LSTM-attention training step vs the same model in plain PyTorch",
                  ("--threads", "--device")),
    "compare_numbers": ("compare_numbers.py", "Transformer vs attention LSTM for the same wall time; long-range probe",
                        ("--threads", "--device")),
}
# GPU-only: not in the default set (on a CPU they measure nothing); run with --only where CUDA is present.
GPU_ONLY = {
    "gpu": ("bench_gpu.py", "GPT-2 training (MFU) and generation vs Hugging Face, on a CUDA GPU", ()),
}
QUICKSTART_MODEL = ROOT / "runs" / "quickstart" / "best"
DEMO_MODEL = HERE / "out" / "quickstart-model" / "best"          # kept by bench_quickstart.py (harness.DEMO_MODEL)


def script_options(script: Path) -> str:
    """The script's --help text (to see which options it takes)."""
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout


def command(name: str, args: argparse.Namespace, out: Path) -> list[str] | str:
    """The command line for one benchmark, or the reason it is skipped."""
    script, _, options = {**BENCHMARKS, **GPU_ONLY}[name]
    path = HERE / script
    if not path.is_file():
        return f"{path.relative_to(ROOT)} does not exist"
    if options is None:                            # not ours: pass only what it says it takes
        text = script_options(path)
        options = tuple(o for o in ("--threads", "--device") if o in text)
        takes_out, takes_quick = "--out" in text, "--quick" in text
    else:
        takes_out = takes_quick = True
    if not takes_out and out != RESULTS:
        return f"{script} has no --out option, and results may only go to {out}"
    if args.quick and not takes_quick:
        return f"{script} has no --quick option"
    cmd = [sys.executable, str(path)]
    if name == "decoding":
        cmd += ["--model", str(quickstart_model(args, out))]
    if takes_out:
        cmd += ["--out", str(out)]
    if args.quick:
        cmd.append("--quick")
    for option in options:
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is not None:
            cmd += [option, str(value)]
    return cmd


def quickstart_model(args: argparse.Namespace, out: Path) -> Path:
    """The demo benchmark's model (so the decoding block measures the demo block's model), else
    runs/quickstart/best if it exists, else where :func:`train_quickstart` puts one."""
    for model in ([] if args.quick else [DEMO_MODEL]) + [QUICKSTART_MODEL]:
        if (model / "config.json").is_file():
            return model
    return (out / "quickstart-model" if args.quick else QUICKSTART_MODEL.parent) / "best"


def train_quickstart(args: argparse.Namespace, out: Path) -> int:
    """Train the model ``decoding`` evaluates, with the quickstart's own command."""
    model = quickstart_model(args, out)
    if (model / "config.json").is_file():
        return 0
    cmd = [sys.executable, "-m", "glassformer", "quickstart", "--out", str(model.parent)]
    if args.quick:
        cmd += ["--steps", "20", "--n-test", "50"]
    print(f"no quickstart model at {model}; training one first\n$ {' '.join(cmd)}", flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke run, into {QUICK_OUT.relative_to(ROOT)} "
                                                             "unless --out says otherwise")
    parser.add_argument("--only", nargs="+", choices=[*BENCHMARKS, *GPU_ONLY], metavar="NAME",
                        help=f"run only these: {', '.join(BENCHMARKS)}; GPU only, never run by default: "
                             f"{', '.join(GPU_ONLY)}")
    parser.add_argument("--skip-demo", action="store_true", help="leave out the demo (5-10 minutes)")
    parser.add_argument("--out", type=Path, help="results directory (default benchmarks/results)")
    parser.add_argument("--threads", type=int, help="torch CPU threads for every benchmark (their default: 2)")
    parser.add_argument("--device", help="auto, cpu or cuda for every benchmark (their default: auto)")
    parser.add_argument("--write-readme", action="store_true",
                        help="afterwards, rewrite the README's result blocks from the results")
    args = parser.parse_args(argv)
    out = (args.out or (QUICK_OUT if args.quick else RESULTS)).resolve()
    if args.quick and out == RESULTS.resolve():
        parser.error("quick figures never go to benchmarks/results; leave out --out or choose another directory")
    if args.write_readme and out != RESULTS.resolve():
        parser.error("--write-readme renders from benchmarks/results; it cannot be used with --quick or --out")
    names = [n for n in (args.only or BENCHMARKS) if not (args.skip_demo and n == "demo")]

    summary = []
    for name in names:
        cmd = command(name, args, out)
        if isinstance(cmd, str):
            print(f"\n=== {name}: skipped: {cmd}", flush=True)
            summary.append((name, "skipped", 0.0, cmd))
            continue
        print(f"\n=== {name}: {({**BENCHMARKS, **GPU_ONLY})[name][1]}\n$ {' '.join(cmd)}", flush=True)
        start = time.time()
        code = train_quickstart(args, out) if name == "decoding" else 0
        if code == 0:
            code = subprocess.run(cmd, cwd=ROOT).returncode
        took = time.time() - start
        written = sorted(p.name for p in out.glob("*") if p.is_file() and p.stat().st_mtime >= start - 1)
        summary.append((name, "ok" if code == 0 else f"FAILED (exit {code})", took, ", ".join(written) or "nothing"))

    print(f"\nResults in {out}:")
    width = max(len(n) for n, *_ in summary) if summary else 0
    for name, status, took, detail in summary:
        print(f"  {name:<{width}}  {status:<18} {took:6.0f} s  {detail}")
    failed = [n for n, status, *_ in summary if status.startswith("FAILED")]

    if out == RESULTS.resolve():
        sys.path.insert(0, str(HERE))
        import readme_tables

        if args.write_readme:
            readme_tables.main(["--write"])
        problems = readme_tables.check()
        print("README results: " + ("up to date with benchmarks/results" if not problems else
                                    f"{len(problems)} difference(s); run `python benchmarks/readme_tables.py --write`"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
