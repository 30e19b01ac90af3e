"""The timing harness every benchmark here shares, so that every comparison is run the same way.

* **Interleaved, ABBA.**  The implementations being compared take turns, and the order
  reverses every round (ours, theirs, theirs, ours, ...): slow drifts of the machine's
  load fall on both alike, and neither always runs first (first place inherits a warm
  or a cold cache).
* **The same work for both.**  The same number of warm-up calls and of timed calls per
  round, under the same grad mode (``inference=True`` wraps every call of every side in
  ``torch.inference_mode()``) and the same autocast setting.
* **The median is the headline.**  Each round gives one rate per side; the median over
  rounds is what the README shows, the best round is kept beside it, named as such, and
  every round's figure is in the results file.
* **Device aware.**  ``cuda`` is picked when present; timings are bracketed by
  ``torch.cuda.synchronize()`` there, so a measured interval covers the work and not just
  its launch.
* **Where and when.**  Every results file carries :func:`machine_info` (CPU model, threads,
  device, torch/transformers versions, date, git commit, load average) and is written
  together with a Markdown rendering, atomically, under ``--out`` (default
  ``benchmarks/results``).

The fp32 matrix-multiply throughput that MFU is measured against comes from
:class:`MatmulPeak`, sampled between the rounds of the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
# The model the demo benchmark trained (bench_quickstart.py keeps it here; git ignores benchmarks/out/):
# the decoding benchmark measures this one, so the two README blocks are about the same model.
DEMO_MODEL = HERE / "out" / "quickstart-model" / "best"
if str(ROOT) not in sys.path:                      # run as a script from anywhere: import the checkout
    sys.path.insert(0, str(ROOT))

SCHEDULE = "ABBA"                                  # recorded in every results file


# ---------------------------------------------------------------------------------------------
# command line and device


def add_common_args(parser: argparse.ArgumentParser, *, rounds: int, warmup: int) -> None:
    """The options every benchmark takes: where results go, how long to measure, which device."""
    parser.add_argument("--out", default=str(RESULTS),
                        help="directory for the results .json and .md (default: benchmarks/results)")
    parser.add_argument("--quick", action="store_true",
                        help="a fast smoke run: few rounds, little work; write it to a scratch --out")
    parser.add_argument("--rounds", type=int, default=rounds, help=f"timed rounds per side (default {rounds})")
    parser.add_argument("--warmup", type=int, default=warmup,
                        help=f"untimed warm-up calls per side before the rounds (default {warmup})")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides (meant for GPUs)")


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--quick`` (at most 2 rounds after 1 warm-up call) and ``--threads``, and resolve ``--device``."""
    from glassformer.devices import pick_device

    if args.rounds < 1 or args.warmup < 0:
        raise SystemExit("--rounds must be >= 1 and --warmup >= 0")
    if args.quick:
        args.rounds, args.warmup = min(args.rounds, 2), min(args.warmup, 1)
    torch.set_num_threads(args.threads)
    return pick_device(args.device)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock reading means it is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when asked for, else nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# timing


def abba(names: Sequence[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: as given on even rounds, reversed on odd ones.

    >>> [abba(["ours", "hf"], r) for r in range(2)]
    [['ours', 'hf'], ['hf', 'ours']]
    """
    return list(names) if round_index % 2 == 0 else list(reversed(names))


@dataclass
class Protocol:
    """How a comparison was timed; stored in the results next to the figures."""

    rounds: int
    warmup: int                      # untimed calls per side before the first round
    calls_per_round: int             # timed calls per side per round
    inference_mode: bool             # every call of every side under torch.inference_mode()
    bf16: bool = False
    schedule: str = SCHEDULE
    headline: str = "median over rounds"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Timings:
    """Seconds per round for each side (each round = ``calls_per_round`` calls)."""

    protocol: Protocol
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def rate(self, name: str, work_per_call: float, digits: int = 1) -> dict[str, Any]:
        """Work per second (tokens/s, sentences/s, ...): median and best over rounds, and each round."""
        return rate_summary(self.seconds[name], work_per_call * self.protocol.calls_per_round, digits)

    def ratio(self, ours: str, theirs: str) -> dict[str, float]:
        """ours' rate / theirs' rate (same work per call on both sides): of the median rates
        (the headline) and of the best rounds."""
        a = [1 / s for s in self.seconds[ours]]
        b = [1 / s for s in self.seconds[theirs]]
        return {"median": round(statistics.median(a) / statistics.median(b), 3), "best": round(max(a) / max(b), 3)}


def rate_summary(seconds: Sequence[float], work: float, digits: int = 1) -> dict[str, Any]:
    rates = [work / s for s in seconds]
    return {"median": round(statistics.median(rates), digits), "best": round(max(rates), digits),
            "rounds": [round(r, digits) for r in rates]}


def interleave(runners: dict[str, Callable[[], Any]], *, rounds: int, warmup: int, calls_per_round: int = 1,
               device: torch.device = torch.device("cpu"), inference: bool = False, bf16: bool = False,
               between_rounds: Callable[[], Any] | None = None) -> Timings:
    """Time each runner in ABBA order: ``warmup`` untimed calls each, then ``rounds`` rounds of
    ``calls_per_round`` timed calls each.  ``between_rounds`` (e.g. a matmul-peak sample) runs
    before every round, outside the timed intervals."""
    protocol = Protocol(rounds, warmup, calls_per_round, inference, bf16)
    timings = Timings(protocol, {name: [] for name in runners})
    names = list(runners)

    def call(name: str) -> None:
        with (torch.inference_mode() if inference else contextlib.nullcontext()), autocast(device, bf16):
            runners[name]()

    for w in range(warmup):
        for name in abba(names, w):
            call(name)
    sync(device)
    for r in range(rounds):
        if between_rounds is not None:
            between_rounds()
        for name in abba(names, r):
            sync(device)
            start = time.perf_counter()
            for _ in range(calls_per_round):
                call(name)
            sync(device)
            timings.seconds[name].append(time.perf_counter() - start)
    return timings


@contextlib.contextmanager
def stopwatch(device: torch.device) -> Iterator[list[float]]:
    """``with stopwatch(device) as t: ...`` -> t[0] is the seconds taken (device work included)."""
    out: list[float] = []
    sync(device)
    start = time.perf_counter()
    yield out
    sync(device)
    out.append(time.perf_counter() - start)


class MatmulPeak:
    """This machine's matrix-multiply throughput (FLOP/s of an n×n @ n×n product), the
    denominator of MFU.  Sample it between rounds of a benchmark; report median and best."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 5):
        self.device, self.dtype, self.n, self.reps = device, dtype, n, reps
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(n, n, generator=g).to(device, dtype)
        self.b = torch.randn(n, n, generator=g).to(device, dtype)
        self.samples: list[float] = []
        torch.matmul(self.a, self.b)               # first call: kernel selection, page faults

    def sample(self) -> float:
        sync(self.device)
        start = time.perf_counter()
        for _ in range(self.reps):
            torch.matmul(self.a, self.b)
        sync(self.device)
        flops = 2 * self.n ** 3 * self.reps / (time.perf_counter() - start)
        self.samples.append(flops)
        return flops

    def summary(self) -> dict[str, Any]:
        gflops = [s / 1e9 for s in self.samples]
        return {"dtype": str(self.dtype).removeprefix("torch."), "n": self.n, "reps_per_sample": self.reps,
                "median_gflops": round(statistics.median(gflops), 1), "best_gflops": round(max(gflops), 1),
                "samples_gflops": [round(g, 1) for g in gflops]}


# ---------------------------------------------------------------------------------------------
# machine and results


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    """Where and when a benchmark ran: enough to tell two results files' machines apart."""
    try:
        import transformers
        hf_version = transformers.__version__
    except ImportError:
        hf_version = None
    device = device or torch.device("cpu")
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "time_utc": datetime.now(timezone.utc).strftime("%H:%M:%S"),
        "cpu": _cpu_model(), "arch": platform.machine(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "transformers": hf_version, "python": platform.python_version(),
        "git_commit": _git_commit(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def finish_machine_info(info: dict[str, Any]) -> dict[str, Any]:
    """Add the load average at the end of the run (the machine may be shared)."""
    if hasattr(os, "getloadavg"):
        info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return info


def twin_gpt2_directories(folder: str | Path, *, n_layers: int, n_heads: int, d_model: int, max_len: int,
                          texts: Sequence[str] | None = None, vocab: int | None = None) -> tuple[Path, Path]:
    """The same model for both sides of a comparison with Hugging Face libraries: a GPT-2-shaped GPT
    (random weights from seed 0, no dropout; a character tokenizer learnt from ``texts``, or ``vocab``
    entries and no tokenizer) saved as a glassformer directory, and glassformer's own export of it
    (``save_hf_directory``: a ``GPT2LMHeadModel`` with its tokenizer).  -> (``folder/base``, ``folder/hf``)."""
    from glassformer.interop import save_hf_directory
    from glassformer.model_dir import save_model_dir
    from glassformer.models import GPT, GPTConfig
    from glassformer.tokenizers import Tokenizer

    folder = Path(folder)
    tokenizer = Tokenizer.train_char(texts) if texts is not None else None
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size if tokenizer is not None else vocab, n_layers=n_layers,
                          n_heads=n_heads, d_model=d_model, max_len=max_len, dropout=0.0))
    save_model_dir(folder / "base", model, tokenizer)
    save_hf_directory(model, folder / "hf", tokenizer)
    return folder / "base", folder / "hf"



@contextlib.contextmanager
def scratch_directory(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A new temporary directory for a benchmark's runs; removed afterwards, or kept (and named) with ``keep``."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_logged(cmd: list[str], log: Path, *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` in ``cwd`` (with ``env``, else this process's environment), its output shown and kept
    in ``log``; returns the wall seconds.  A non-zero exit stops the benchmark, naming the log."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
        code = proc.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {code} after {seconds:.0f}s; see {log}")
    return seconds

def weights_digest(model_dir: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of a model directory's model.safetensors: which model
    a result measured."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_results(out_dir: str | Path, name: str, result: dict[str, Any], markdown: str) -> list[Path]:
    """Write ``name.json`` and ``name.md`` under ``out_dir`` and say where they went."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    _write_atomic(paths[0], json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    _write_atomic(paths[1], markdown.rstrip("\n") + "\n")
    print(markdown)
    print("results written to " + ", ".join(str(p) for p in paths), flush=True)
    return paths


def run_one_benchmark(doc: str, name: str, key: str, title: str, bench: Callable[[argparse.Namespace, torch.device], dict],
                      markdown: Callable[[dict[str, Any]], str], *, rounds: int, warmup: int,
                      record_bf16: bool = False) -> None:
    """The ``main`` of a benchmark with one measurement: the common arguments (``doc``'s first line as the
    description), the machine before and after, ``bench(args, device)`` stored under ``key``, and
    ``name``.json/.md written."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_common_args(parser, rounds=rounds, warmup=warmup)
    args = parser.parse_args()
    device = setup(args)
    info = machine_info(device)
    result = {"benchmark": title, "machine": info, "quick": args.quick}
    if record_bf16:
        result["bf16"] = args.bf16
    result[key] = bench(args, device)
    finish_machine_info(info)
    write_results(args.out, name, result, markdown(result))


def machine_line(info: dict[str, Any]) -> str:
    """One line describing the machine, for Markdown reports."""
    where = info.get("gpu") or info.get("cpu") or "machine not recorded"
    if not info.get("gpu") and info.get("cpu_count"):
        where += f" ({info['cpu_count']} cores)"
    parts = [info.get("date") or "date not recorded", where]
    if info.get("threads"):
        parts.append(f"{info['threads']} thread{'s' if info['threads'] != 1 else ''}")
    parts += [f"{k} {info[k]}" for k in ("torch", "transformers") if info.get(k)]
    return ", ".join(parts)


def protocol_line(protocol: dict[str, Any]) -> str:
    """How a comparison was timed, in words, for Markdown reports."""
    return (f"{protocol['schedule']} order, {protocol['warmup']} warm-up call(s) and {protocol['rounds']} round(s) "
            f"of {protocol['calls_per_round']} timed call(s) each, "
            f"{'every call under torch.inference_mode(), ' if protocol['inference_mode'] else ''}"
            f"{protocol['grad_mode'] + ', ' if protocol.get('grad_mode') else ''}"
            f"{'bf16 autocast, ' if protocol.get('bf16') else ''}headline: {protocol['headline']}")
