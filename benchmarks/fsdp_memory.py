"""What FSDP saves in memory: a GPT of 109M parameters trained two steps (AdamW) by one process, by two
processes under DDP and by two under FSDP (torchrun, gloo on the CPU), through the library's Trainer.

The model is built as a training run builds it (``recipe.seeded_model``: on the meta device, its
weights given by the Trainer; under FSDP each process materialises only its own shards).  Per process
it records the bytes of the parameters and of the optimiser state the process holds (under FSDP: its
shards, ``DTensor.to_local()``), its peak resident memory once the model is built and placed (before
any step), its resident memory after the steps and its peak resident memory (``ru_maxrss``, which
also counts the interpreter, torch, the gradients and activations of a step and the communication
buffers); glibc returns every freed large block to the system (``MALLOC_MMAP_THRESHOLD_``).  Each of
FSDP's two processes should hold half of what one process holds; each of DDP's, all of it.

    python benchmarks/fsdp_memory.py            # about a minute on 2 CPU cores; writes
                                                # benchmarks/results/fsdp_memory.json and .md
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402  (puts the checkout on sys.path)

import torch  # noqa: E402

MODEL = {"d_model": 1024, "n_heads": 16, "n_layers": 8, "d_ff": 4096, "vocab_size": 8192, "max_len": 128}
BATCH, BLOCK, STEPS = 2, 64, 2
MB = 2 ** 20


def local_bytes(tensors) -> int:
    """Bytes of the tensors as this process holds them (a DTensor: its shard), each counted once."""
    seen = {id(t): t for t in tensors if isinstance(t, torch.Tensor)}
    return sum((t.to_local() if hasattr(t, "to_local") else t).nbytes for t in seen.values())


def resident_mb() -> float:
    """This process's resident memory now (Linux), after a garbage collection."""
    gc.collect()
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


def worker(kind: str | None, out: Path) -> None:
    """Train STEPS steps as one process of ``kind`` (None, "ddp", "fsdp"); write this process's figures."""
    from glassformer.data.lm import LMBatch
    from glassformer.models import preset
    from glassformer.training import distributed
    from glassformer.training.lm import lm_loss
    from glassformer.training.optim import adamw
    from glassformer.training.recipe import seeded_model
    from glassformer.training.trainer import Trainer, TrainerConfig

    torch.set_num_threads(1)
    world, device = distributed.setup(kind, torch.device("cpu"))
    model = seeded_model(preset("gpt-tiny", **MODEL), 0)
    n_params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, lambda m: adamw(m, 1e-4, 0.1, (0.9, 0.95)), None, lm_loss, lambda m: {"loss": 0.0},
                          lambda path, m: None, TrainerConfig(max_steps=STEPS, eval_every=STEPS, progress=False,
                                                              grad_accum=world.size), run_dir, device, world=world)
        built_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024       # the model built and placed
        g = torch.Generator().manual_seed(world.rank)
        for _ in range(STEPS):
            tokens = torch.randint(0, MODEL["vocab_size"], (BATCH, BLOCK + 1), generator=g)
            loss = trainer.train_step([LMBatch(tokens[:, :-1], tokens[:, 1:])])[0]
        figures = {
            "rank": world.rank, "processes": world.size, "parameters": n_params, "loss": float(loss),
            "parameter_mb": local_bytes(trainer.model.parameters()) / MB,
            "optimizer_state_mb": local_bytes(v for s in trainer.optimizer.state.values() for v in s.values()) / MB,
            "peak_rss_built_mb": built_mb,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,   # KiB on Linux
            "rss_after_mb": resident_mb(),
        }
    distributed.shutdown(world)
    (out / f"{kind or 'one'}-{world.rank}.json").write_text(json.dumps(figures))


def launch(kind: str | None, out: Path) -> list[dict]:
    # glibc gives each large block (over 64 KiB) its own mapping, returned to the system when freed: the
    # resident memory is then what the process holds, not what the allocator kept of freed blocks
    # (by default a freed block raises the threshold to its size and later ones stay in the heap)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    me = [__file__, "--worker", "--kind", kind or "one", "--dir", str(out)]
    if kind is None:
        command = [sys.executable, *me]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        command = [torchrun, "--standalone", "--nproc-per-node", "2", *me]
    subprocess.run(command, check=True, env=env, timeout=300)
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{kind or 'one'}-*.json"))]


def markdown(result: dict) -> str:
    one = result["runs"]["one process"][0]
    lines = ["# FSDP memory: what each process holds", "",
             f"A GPT of {one['parameters']:,} parameters (d_model {MODEL['d_model']}, {MODEL['n_layers']} layers, "
             f"vocabulary {MODEL['vocab_size']:,}), AdamW, {STEPS} steps of {BATCH}×{BLOCK} tokens per process "
             "through the Trainer; torchrun with gloo on the CPU. Parameters and optimiser state: the bytes this "
             "process holds (FSDP: its shards). Peak RSS built: `ru_maxrss` once the model is built and placed, "
             "before any step. RSS after: resident memory once the steps are done. Peak RSS: "
             "`ru_maxrss` (also the interpreter, torch, a step's gradients and activations, the communication "
             "buffers; glibc returns each freed block over 64 KiB to the system: `MALLOC_MMAP_THRESHOLD_=65536`). "
             "The model is built on the meta device; under FSDP each process materialises only its shards.", "",
             "| run | process | parameters (MB) | optimiser state (MB) | both (MB) | share of one process | "
             "peak RSS built (MB) | RSS after (MB) | peak RSS (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    held_one = one["parameter_mb"] + one["optimizer_state_mb"]
    for name, ranks in result["runs"].items():
        for r in ranks:
            held = r["parameter_mb"] + r["optimizer_state_mb"]
            lines.append(f"| {name} | {r['rank']} | {r['parameter_mb']:.1f} | {r['optimizer_state_mb']:.1f} | "
                         f"{held:.1f} | {held / held_one:.2f} | {r['peak_rss_built_mb']:.0f} | {r['rss_after_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    info = result["machine"]
    lines += ["", f"Machine: {harness.machine_line(info)}; load average {info.get('load_average_start')} at the "
              f"start, {info.get('load_average_end')} at the end."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(harness.RESULTS), help="directory for fsdp_memory.json and .md")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kind", default="one", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(None if args.kind == "one" else args.kind, Path(args.dir))
        return
    info = harness.machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: launch(kind, Path(tmp)) for name, kind in
                (("one process", None), ("DDP, 2 processes", "ddp"), ("FSDP, 2 processes", "fsdp"))}
    result = {"benchmark": "fsdp_memory", "model": MODEL, "steps": STEPS, "batch": [BATCH, BLOCK], "runs": runs,
              "machine": harness.finish_machine_info(info)}
    harness.write_results(args.out, "fsdp_memory", result, markdown(result))


if __name__ == "__main__":
    main()
