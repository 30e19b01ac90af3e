"""Beam search: glassformer vs Hugging Face ``MarianMTModel.generate(num_beams=4)``.

Same weights (a random Marian of the quickstart's shape, ported with
``glassformer.interop.hf_marian``), same inputs, same work: 8 sources of 20
tokens, beam 4, exactly 30 new tokens on both sides (EOS forbidden before 30 and
the length capped at 30), length penalty 0.6 in Hugging Face's form on both sides
so the outputs can be compared token for token.

Speed: sentences per second, timed with the shared harness (``benchmarks/harness.py``):
the two interleaved in ABBA order, the same warm-up and timed calls for both, both
under ``torch.inference_mode()``; the median over rounds is the headline, the best
round is kept beside it.  The timing is repeated at 1 thread as well (on a shared
2-core machine, 2-thread runs suffer most from other load).

Memory on CPU: the peak resident-set growth of one ``generate`` call, in a fresh
child process per implementation: the child loads the model, runs a small warm-up
(1 source, 2 tokens: loads kernels and lazy state), resets the kernel's RSS
high-water mark (``/proc/self/clear_refs``), runs the measured call and reports
``VmHWM`` minus the RSS just before it.  glibc is told to return freed memory at
once (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), so the high-water
mark follows live memory rather than the allocator's cache.  ``tracemalloc`` is
not used: it sees only Python objects, not tensor storage.  On CUDA: the growth of
``torch.cuda.max_memory_allocated`` over one call.

    python benchmarks/bench_beam.py [--rounds 10] [--threads 2] [--device auto]
    python benchmarks/bench_beam.py --quick --out /tmp/bench        # smoke run, ~30 s on 2 cores

Writes beam_cpu.json and beam_cpu.md (beam_cuda.* on a GPU) under --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import add_common_args, finish_machine_info, interleave, machine_info, machine_line, protocol_line
from harness import setup, stopwatch, write_results

NAME = "beam"                                     # results: beam_<device>.json
VOCAB, PAD, EOS = 8000, 7999, 0
BATCH, SRC_LEN, NEW, BEAM, ALPHA = 8, 20, 30, 4, 0.6
TARGET_RATIO = 2.0                                # the goal set for this benchmark: ours / Hugging Face
MEMORY_METHOD = {
    "cpu": ("peak RSS growth of one generate call in a fresh child process per implementation, after a small "
            "warm-up: the high-water mark VmHWM (reset through /proc/self/clear_refs just before the call) minus "
            "the RSS just before the call, with glibc returning freed memory at once "
            "(MALLOC_MMAP_THRESHOLD_=65536, MALLOC_TRIM_THRESHOLD_=0)"),
    "cuda": "growth of torch.cuda.max_memory_allocated over one generate call, after a small warm-up",
}


def hf_config():
    from transformers import MarianConfig

    return MarianConfig(
        vocab_size=VOCAB, d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, activation_function="swish",
        scale_embedding=True, pad_token_id=PAD, decoder_start_token_id=PAD, eos_token_id=EOS,
        forced_eos_token_id=None, max_position_embeddings=512, dropout=0.0)


def sources(batch: int = BATCH, length: int = SRC_LEN, device: torch.device | str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    src = torch.randint(2, PAD, (batch, length), generator=g)
    src[:, -1] = EOS                              # Marian sources end with </s>
    return src.to(device)


# The callers put both under torch.inference_mode() (the harness does, for the timed calls).
def run_hf(model, src: torch.Tensor, new: int = NEW) -> torch.Tensor:
    out = model.generate(input_ids=src, attention_mask=torch.ones_like(src), num_beams=BEAM,
                         max_new_tokens=new, min_new_tokens=new, length_penalty=ALPHA,
                         early_stopping=False, do_sample=False)
    return out[:, 1:]                             # drop the decoder start token


def run_ours(model, src: torch.Tensor, new: int = NEW) -> torch.Tensor:
    from glassformer.generation import BeamOptions, beam_search

    options = BeamOptions(beam=BEAM, alpha=ALPHA, length_penalty_kind="hf", stopping="heuristic",
                          max_new_tokens=new, min_new_tokens=new, eos_id=EOS, pad_id=PAD)
    cache, first = model.start_decoding(src, new)
    return beam_search(model, cache, first, options).tokens[:, 0]


RUNNERS = {"ours": run_ours, "hf": run_hf}


def load(which: str, model_dir: str, device: torch.device | str = "cpu"):
    if which == "hf":
        from transformers import MarianMTModel

        return MarianMTModel.from_pretrained(model_dir).to(device).eval()
    from glassformer.interop.hf_marian import load_hf_marian

    return load_hf_marian(model_dir).to(device).eval()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """VmHWM: the resident-set high-water mark (since start or the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@torch.inference_mode()
def child_memory(which: str, model_dir: str, threads: int) -> None:
    """Run in a fresh process: print the peak RSS growth (bytes) of one generate call."""
    torch.set_num_threads(threads)
    model = load(which, model_dir)
    run = RUNNERS[which]
    run(model, sources(1), 2)                      # warm-up with a different, small shape
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    before = _rss_bytes()
    run(model, sources())
    print(json.dumps({"peak_growth_bytes": max(_peak_rss_bytes() - before, 0), "before_bytes": before}))


def measure_memory_cpu(which: str, model_dir: str, threads: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, __file__, "--child-memory", which, "--model-dir", model_dir,
                          "--threads", str(threads)], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@torch.inference_mode()
def measure_memory_cuda(which: str, model, device: torch.device) -> dict:
    run = RUNNERS[which]
    run(model, sources(1, device=device), 2)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run(model, sources(device=device))
    torch.cuda.synchronize(device)
    return {"peak_growth_bytes": torch.cuda.max_memory_allocated(device) - before, "before_bytes": before}


def breakdown(models: dict, runners: dict, device: torch.device) -> dict[str, dict[str, float]]:
    """Seconds inside the model's per-step call vs everything else (median of 3 runs)."""
    parts = {}
    for name, attr in (("hf", "forward"), ("ours", "decode_step")):
        owner = models[name]
        inner = getattr(owner, attr)
        spent = [0.0]

        def wrapped(*a, _inner=inner, _spent=spent, **k):
            start = time.perf_counter()
            out = _inner(*a, **k)
            _spent[0] += time.perf_counter() - start
            return out

        setattr(owner, attr, wrapped)
        runs = []
        try:
            for _ in range(3):
                spent[0] = 0.0
                with torch.inference_mode(), stopwatch(device) as took:
                    runners[name]()
                runs.append((took[0], spent[0]))
        finally:
            delattr(owner, attr)                   # back to the class's method
        total, model = sorted(runs)[1]
        parts[name] = {"total_s": round(total, 4), "model_step_s": round(model, 4), "rest_s": round(total - model, 4)}
    return parts


def markdown(r: dict) -> str:
    s, mem, parts = r["sentences_per_s"], r["memory"], r["time_breakdown"]
    md = [
        "# Beam search: glassformer vs Hugging Face Marian", "",
        f"{r['benchmark']}; {r['model']}.", "",
        f"{machine_line(r['machine'])}.  Timing: {protocol_line(r['protocol'])}.", "",
        "| | sentences/s (median) | sentences/s (best round) | peak memory growth |",
        "| --- | ---: | ---: | ---: |",
        f"| Hugging Face `generate(num_beams=4)` | {s['hf']['median']:.1f} | {s['hf']['best']:.1f} | "
        f"{mem['hf']['peak_growth_mib']:.1f} MiB |",
        f"| glassformer `beam_search` | {s['ours']['median']:.1f} | {s['ours']['best']:.1f} | "
        f"{mem['ours']['peak_growth_mib']:.1f} MiB |",
        f"| ours / Hugging Face | {r['ratio']['median']:.2f}× | {r['ratio']['best']:.2f}× | |", "",
        f"Target: at least {r['target_ratio']:.1f}× Hugging Face's sentences/s (median) — "
        f"**{'met' if r['ratio']['median'] >= r['target_ratio'] else 'not met'}**.", "",
        *[f"At {t} thread(s): Hugging Face {o['sentences_per_s']['hf']['median']:.1f} sentences/s, glassformer "
          f"{o['sentences_per_s']['ours']['median']:.1f} (medians; ours / Hugging Face {o['ratio']['median']:.2f}×, "
          f"best rounds {o['ratio']['best']:.2f}×)." for t, o in r["other_thread_counts"].items()],
        "",
        f"Where the time goes (median of 3 runs): Hugging Face {parts['hf']['model_step_s'] * 1e3:.0f} ms in the "
        f"decoder forward calls + {parts['hf']['rest_s'] * 1e3:.0f} ms else; glassformer "
        f"{parts['ours']['model_step_s'] * 1e3:.0f} ms in `decode_step` + {parts['ours']['rest_s'] * 1e3:.0f} ms else "
        "(encoder, search, cache reordering).", "",
        f"Memory after loading the model: Hugging Face {mem['hf']['after_load_mib']:.0f} MiB, "
        f"glassformer {mem['ours']['after_load_mib']:.0f} MiB.", "",
        f"Identical token sequences: **{'yes' if r['identical_tokens'] else 'NO'}**.", "",
        f"Memory: {mem['method']}.", "",
    ]
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, rounds=10, warmup=2)
    parser.add_argument("--also-threads", type=int, nargs="*", default=[1], help="further thread counts to time")
    parser.add_argument("--child-memory", choices=["hf", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(args.child_memory, args.model_dir, args.threads)
        return
    if args.quick:
        args.also_threads = []

    from transformers import MarianMTModel

    from glassformer.interop.hf_marian import transformer_from_hf_marian

    device = setup(args)
    info = machine_info(device)
    torch.manual_seed(0)
    hf = MarianMTModel(hf_config()).eval()
    ours = transformer_from_hf_marian(hf.config.to_dict(), hf.state_dict()).to(device).eval()
    hf = hf.to(device)
    src = sources(device=device)

    with torch.inference_mode():
        theirs_tokens, our_tokens = run_hf(hf, src).cpu(), run_ours(ours, src).cpu()
    identical = theirs_tokens.shape == our_tokens.shape and bool(torch.equal(theirs_tokens, our_tokens))

    runners = {"ours": lambda: run_ours(ours, src), "hf": lambda: run_hf(hf, src)}

    def timed(threads: int) -> dict:
        torch.set_num_threads(threads)
        t = interleave(runners, rounds=args.rounds, warmup=args.warmup, device=device, inference=True,
                       bf16=args.bf16)
        return {"protocol": t.protocol.to_dict(),
                "sentences_per_s": {name: t.rate(name, BATCH) for name in runners},
                "ratio": t.ratio("ours", "hf")}

    main_timing = timed(args.threads)
    parts = breakdown({"ours": ours, "hf": hf}, runners, device)
    extra = {str(t): timed(t) for t in args.also_threads if t != args.threads}
    torch.set_num_threads(args.threads)

    if device.type == "cuda":
        memory = {name: measure_memory_cuda(name, model, device) for name, model in (("hf", hf), ("ours", ours))}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            hf.save_pretrained(tmp)
            memory = {name: measure_memory_cpu(name, tmp, args.threads) for name in ("hf", "ours")}

    result = {
        "benchmark": f"beam search, batch {BATCH} x {SRC_LEN} source tokens, beam {BEAM}, exactly {NEW} new tokens",
        "model": "random MarianMTModel: d_model 256, 3+3 layers, 4 heads, d_ff 1024, vocab 8000 (same weights both)",
        "setup": {"batch": BATCH, "source_tokens": SRC_LEN, "new_tokens": NEW, "beam": BEAM, "alpha": ALPHA,
                  "length_penalty_kind": "hf"},
        "machine": info, "quick": args.quick,
        "protocol": main_timing["protocol"],
        "identical_tokens": identical,
        "sentences_per_s": main_timing["sentences_per_s"],
        "ratio": main_timing["ratio"], "target_ratio": TARGET_RATIO,
        "memory": {"method": MEMORY_METHOD[device.type if device.type == "cuda" else "cpu"],
                   **{name: {"peak_growth_mib": round(m["peak_growth_bytes"] / 2**20, 2),
                             "after_load_mib": round(m["before_bytes"] / 2**20, 1)} for name, m in memory.items()}},
        "time_breakdown": {
            "what": "time inside the per-step model call (HF: MarianMTModel.forward; ours: Transformer.decode_step) "
                    "vs the rest (encoder, search bookkeeping, cache reordering), median of 3 runs",
            **parts},
        "other_thread_counts": extra,
    }
    finish_machine_info(info)
    write_results(args.out, f"{NAME}_{device.type}", result, markdown(result))


if __name__ == "__main__":
    main()
