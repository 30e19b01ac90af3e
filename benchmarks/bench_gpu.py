"""GPU: GPT-2 (124M shape) training and greedy generation, glassformer vs Hugging Face ``GPT2LMHeadModel``.

Measured in one run, on one CUDA device:

* **the bf16 matrix-multiply peak** of this GPU (8192×8192 products, sampled before every
  training round; median and best kept): the denominator of MFU;
* **training tokens/s and MFU** at GPT-2's shape (12 layers, 12 heads, d_model 768,
  vocabulary 50,304, block 1,024, batch 16), bf16 autocast, dropout 0, fused AdamW (decay on
  matrices only, ``glassformer.training.optim.adamw``) and clipping at 1 on both sides:
  ours through ``Trainer.train_step`` (what ``glassformer train lm`` runs; the loss through the
  model's forward with the fused chunked cross-entropy), eager and with the Trainer's
  ``compile`` option; Hugging Face's usual step (``labels=`` loss), eager and ``torch.compile``d.
  The four take turns in ABBA order with the same warm-up (compilation happens in an extra
  first call that every side gets).  MFU = median tokens/s × FLOPs per token / median
  matmul peak, FLOPs per token = 6·N + 12·n_layers·d_model·block, N the parameters without the
  position table (nanoGPT's count; the tied vocabulary matrix counted once);
* **greedy generation tokens/s** at batch 1 and 8 (16-token prompt, exactly 256 new tokens,
  bf16 weights on both sides, under ``torch.inference_mode()``): ours eager
  (``glassformer.generation.generate`` over the KV cache) and with the decoding step compiled
  (``model.compile_decoding(mode="reduce-overhead")``: CUDA graphs); Hugging Face's
  ``generate`` with its default dynamic cache, and with ``cache_implementation="static"``
  (which ``generate`` compiles itself on a GPU).  The generation models share one set of
  weights (Hugging Face's initialisation, ported with ``glassformer.interop.hf_gpt2``); the
  greedy tokens are compared, in float32 (TF32 off) and in bf16.

Goals stated for this work (reported, not asserted): training ≥ 1.2× the compiled Hugging
Face model and ≥ 50% of the measured matmul peak; batch-1 generation ≥ 10× Hugging Face's
cached ``generate``.

    python benchmarks/bench_gpu.py                     # on a CUDA machine: results/gpu.json and gpu.md
    python benchmarks/bench_gpu.py --quick --out /tmp/gpu
    python benchmarks/bench_gpu.py --smoke [--out DIR] # every code path once on the CPU, tiny sizes, no timing claims

Without a CUDA device (and without ``--smoke``) it measures nothing, writes nothing and exits 0.
``--smoke`` uses the ``gpt-tiny`` preset, compiles with the ``eager`` backend (the
``torch.compile`` paths are traced, no code is generated) and writes to a temporary
directory unless ``--out`` names one (never benchmarks/results).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import traceback
from pathlib import Path

import torch

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import MatmulPeak, RESULTS, finish_machine_info, interleave, machine_info, machine_line, protocol_line
from harness import write_results

NAME = "gpu"
FULL = dict(preset="gpt2", vocab=50304, block=1024, batch=16, prompt=16, new_tokens=256, gen_batches=(1, 8),
            peak_n=8192, peak_reps=10, lr=6e-4)
SMOKE = dict(preset="gpt-tiny", vocab=64, block=32, batch=2, prompt=4, new_tokens=8, gen_batches=(1, 2),
             peak_n=128, peak_reps=2, lr=6e-4)
GOALS = {"train_vs_hf_compiled": 1.2, "train_mfu": 0.5, "generate_batch1_vs_hf": 10.0}
FLOPS_FORMULA = "6·N + 12·n_layers·d_model·block per token (N: parameters without the position table)"
CLIP, WEIGHT_DECAY = 1.0, 0.1


# ---------------------------------------------------------------------------------------------
# models


def our_config(s: dict):
    from glassformer.models import preset

    return preset(s["preset"], vocab_size=s["vocab"], dropout=0.0)


def hf_model(config):
    """Hugging Face's GPT-2 with our config's shape, dropout 0, sdpa attention."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.max_len, n_embd=config.d_model, n_layer=config.n_layers,
        n_head=config.n_heads, n_inner=config.d_ff, activation_function="gelu_new",
        layer_norm_epsilon=config.norm_eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=None, eos_token_id=None, attn_implementation="sdpa"))


def twins(s: dict, device: torch.device, seed: int = 0):
    """(ours, Hugging Face's) with the same weights (Hugging Face's initialisation, ported)."""
    from glassformer.interop.hf_gpt2 import state_dict_from_hf_gpt2
    from glassformer.models import build_model

    config = our_config(s)
    torch.manual_seed(seed)
    hf = hf_model(config)
    ours = build_model(config)
    ours.load_state_dict(state_dict_from_hf_gpt2({k: v.detach().clone() for k, v in hf.state_dict().items()},
                                                 config))
    return ours.to(device), hf.to(device)


def flops_per_token(model, config, block: int) -> int:
    n = sum(p.numel() for p in dict.fromkeys(model.parameters()))
    n -= sum(p.numel() for name, p in model.named_parameters() if "position" in name)
    return 6 * n + 12 * config.n_layers * config.d_model * block


# ---------------------------------------------------------------------------------------------
# training


def bench_training(s: dict, args, device: torch.device, peak: MatmulPeak, run_dir: str) -> dict:
    from glassformer.data.batching import to_device
    from glassformer.data.lm import LMBatch
    from glassformer.training.lm import lm_loss
    from glassformer.training.optim import adamw
    from glassformer.training.trainer import Trainer, TrainerConfig

    config = our_config(s)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, s["vocab"], (s["batch"], s["block"] + 1), generator=g)
    batch = LMBatch(data[:, :-1].contiguous(), data[:, 1:].contiguous())   # on the CPU, as a data stream gives it
    if device.type == "cuda":
        batch = LMBatch(batch.x.pin_memory(), batch.y.pin_memory())
    errors: dict[str, str] = {}

    def trainer(compiled: bool) -> Trainer:
        ours, _ = twins(s, "cpu")
        tc = TrainerConfig(max_steps=10 ** 9, eval_every=10 ** 9, clip_norm=CLIP, progress=False, precision="bf16",
                           compile=compiled and not args.smoke)
        t = Trainer(ours, lambda m: adamw(m, s["lr"], WEIGHT_DECAY), None, lm_loss, lambda m: {"loss": 0.0},
                    lambda path, m: None, tc, Path(run_dir) / f"ours-{compiled}", device)
        if compiled and args.smoke:             # what compile=True does, with a backend that generates no code
            t.module = torch.compile(t.module, backend="eager")
        return t

    def hf_step(compiled: bool):
        _, hf = twins(s, device)
        hf.train()
        opt = adamw(hf, s["lr"], WEIGHT_DECAY)
        params = [p for p in dict.fromkeys(hf.parameters()) if p.requires_grad]
        module = torch.compile(hf, **({"backend": "eager"} if args.smoke else {})) if compiled else hf

        def step():
            x = to_device(batch.x, device)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = module(input_ids=x, labels=x).loss       # the usual call: labels shifted inside
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    ours_eager, ours_compiled = trainer(False), trainer(True)
    runners = {"ours_eager": lambda: ours_eager.train_step([batch]),
               "ours_compiled": lambda: ours_compiled.train_step([batch]),
               "hf_eager": hf_step(False), "hf_compiled": hf_step(True)}
    # One extra first call each (compilation for the compiled ones); a side that fails is left out.
    for name in list(runners):
        try:
            runners[name]()
        except Exception as e:                     # noqa: BLE001  (recorded, the rest still measured)
            errors[name] = _error(e)
            del runners[name]
    harness.sync(device)
    steps = 1 if args.smoke else (3 if args.quick else 10)
    timings = interleave(runners, rounds=args.rounds, warmup=args.warmup, calls_per_round=steps, device=device,
                         between_rounds=peak.sample)
    tokens = s["batch"] * s["block"]
    peak_summary = peak.summary()
    fpt = flops_per_token(ours_eager.model, config, s["block"])
    rates = {name: timings.rate(name, tokens, 0) for name in runners}
    mfu = {name: round(r["median"] * fpt / (peak_summary["median_gflops"] * 1e9), 4) for name, r in rates.items()}
    ratios = {f"{a}_vs_{b}": timings.ratio(a, b) for a, b in (("ours_compiled", "hf_compiled"),
                                                               ("ours_eager", "hf_eager"),
                                                               ("ours_compiled", "hf_eager"))
              if a in runners and b in runners}
    protocol = timings.protocol.to_dict()
    protocol.update(bf16=True, grad_mode="training mode, gradients on",
                    extra_first_call="one untimed call per side before the warm-up (compilation)")
    return {"tokens_per_step": tokens, "protocol": protocol, "tokens_per_s": rates, "mfu": mfu,
            "ratios": ratios, "flops_per_token": fpt, "errors": errors,
            "step_ms": {name: round(1e3 * statistics.median(t) / steps, 2) for name, t in timings.seconds.items()}}


# ---------------------------------------------------------------------------------------------
# generation


def bench_generation(s: dict, args, device: torch.device) -> dict:
    from glassformer.generation import SamplingOptions, generate

    ours, hf = twins(s, device, seed=1)
    ours.eval()
    hf.eval()
    agreement = {f"batch_{b}": {} for b in s["gen_batches"]}
    prompts = {b: torch.randint(0, s["vocab"], (b, s["prompt"]), generator=torch.Generator().manual_seed(b))
               .to(device) for b in s["gen_batches"]}
    new = s["new_tokens"]
    options = SamplingOptions(max_new_tokens=new)

    def run_ours(model, prompt):
        cache, first = model.start_decoding(prompt, new)
        return generate(model, cache, first, options)

    def run_hf(model, prompt, **kwargs):
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, use_cache=True, pad_token_id=0, **kwargs)
        return out[:, prompt.shape[1]:]

    # The greedy tokens, same weights: float32 with TF32 off (the same function on both sides) ...
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.inference_mode():
        for b, prompt in prompts.items():
            agreement[f"batch_{b}"]["float32"] = compare(run_ours(ours, prompt), run_hf(hf, prompt))
    torch.backends.cuda.matmul.allow_tf32 = tf32

    # ... then everything timed in bf16 weights.
    ours.to(torch.bfloat16)
    hf.to(torch.bfloat16)
    ours_compiled = copy.deepcopy(ours)
    ours_compiled.compile_decoding(**({"backend": "eager"} if args.smoke else {"mode": "reduce-overhead"}))
    static = {"cache_implementation": "static"}
    if args.smoke:                                 # generate compiles only on accelerators unless told to
        from transformers import CompileConfig

        cc = CompileConfig(backend="eager")
        cc._compile_all_devices = True
        static["compile_config"] = cc

    out: dict[str, dict] = {}
    for b, prompt in prompts.items():
        runners = {"ours_eager": lambda p=prompt: run_ours(ours, p),
                   "ours_compiled": lambda p=prompt: run_ours(ours_compiled, p),
                   "hf_dynamic_cache": lambda p=prompt: run_hf(hf, p),
                   "hf_static_compiled": lambda p=prompt: run_hf(hf, p, **static)}
        errors, tokens = {}, {}
        with torch.inference_mode():
            for name in list(runners):             # an extra first call each (compilation); failures left out
                try:
                    tokens[name] = runners[name]()
                except Exception as e:             # noqa: BLE001
                    errors[name] = _error(e)
                    del runners[name]
        harness.sync(device)
        timings = interleave(runners, rounds=args.gen_rounds, warmup=args.gen_warmup, device=device, inference=True)
        rates = {name: timings.rate(name, b * new, 1) for name in runners}
        ratios = {f"{a}_vs_{bb}": timings.ratio(a, bb) for a, bb in (("ours_compiled", "hf_dynamic_cache"),
                                                                     ("ours_eager", "hf_dynamic_cache"),
                                                                     ("ours_compiled", "hf_static_compiled"))
                  if a in runners and bb in runners}
        bf16 = {}
        if "ours_eager" in tokens and "hf_dynamic_cache" in tokens:
            bf16["ours_eager_vs_hf"] = compare(tokens["ours_eager"], tokens["hf_dynamic_cache"])
        if "ours_eager" in tokens and "ours_compiled" in tokens:
            bf16["ours_compiled_vs_eager"] = compare(tokens["ours_compiled"], tokens["ours_eager"])
        if "hf_static_compiled" in tokens and "hf_dynamic_cache" in tokens:
            bf16["hf_static_vs_dynamic"] = compare(tokens["hf_static_compiled"], tokens["hf_dynamic_cache"])
        agreement[f"batch_{b}"]["bfloat16"] = bf16
        protocol = timings.protocol.to_dict()
        protocol["extra_first_call"] = "one untimed call per side before the warm-up (compilation)"
        out[f"batch_{b}"] = {"batch": b, "prompt_tokens": s["prompt"], "new_tokens": new, "protocol": protocol,
                             "tokens_per_s": rates, "ratios": ratios, "errors": errors,
                             "ms_per_token": {name: round(1e3 / (r["median"] / b), 3) for name, r in rates.items()},
                             "same_greedy_tokens": agreement[f"batch_{b}"]}
    return out


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Whether two (batch, n) token tensors agree; the first column where any row differs."""
    a, b = a.cpu(), b.cpu()
    n = min(a.shape[1], b.shape[1])
    same = (a[:, :n] == b[:, :n]).all(dim=0)
    first = None if bool(same.all()) else int((~same).nonzero()[0])
    return {"identical": first is None and a.shape == b.shape, "first_difference": first,
            "matching_fraction": round(float((a[:, :n] == b[:, :n]).float().mean()), 4), "compared": n}


def _error(e: Exception) -> str:
    text = (str(e).strip().splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {text}"


# ---------------------------------------------------------------------------------------------
# report


def goals(r: dict) -> dict:
    """Each goal's target and measured figure; ``met`` is None in a smoke run (nothing was measured)."""
    t, g = r["train"], r["generate"].get("batch_1", {})
    out = {}
    ratio = t["ratios"].get("ours_compiled_vs_hf_compiled")
    if ratio:
        out["train_vs_hf_compiled"] = {"target": GOALS["train_vs_hf_compiled"], "measured": ratio["median"],
                                       "met": ratio["median"] >= GOALS["train_vs_hf_compiled"]}
    best_ours = max((t["mfu"].get(k, 0.0) for k in ("ours_compiled", "ours_eager")), default=0.0)
    out["train_mfu"] = {"target": GOALS["train_mfu"], "measured": best_ours, "met": best_ours >= GOALS["train_mfu"],
                        "of": "the better of ours eager / compiled"}
    rates = g.get("tokens_per_s", {})
    ours = max((rates[k]["median"] for k in ("ours_compiled", "ours_eager") if k in rates), default=None)
    if ours and "hf_dynamic_cache" in rates:
        ratio = round(ours / rates["hf_dynamic_cache"]["median"], 2)
        out["generate_batch1_vs_hf"] = {"target": GOALS["generate_batch1_vs_hf"], "measured": ratio,
                                        "met": ratio >= GOALS["generate_batch1_vs_hf"],
                                        "of": "the faster of ours eager / compiled vs HF generate, dynamic cache"}
    if r["smoke"]:
        for v in out.values():
            v["met"] = None
    return out


def markdown(r: dict) -> str:
    t, peak, m = r["train"], r["matmul_peak"], r["model"]
    lines = ["# GPU: GPT-2 training and generation, glassformer vs Hugging Face GPT2LMHeadModel", ""]
    if r["smoke"]:
        lines += ["**Smoke run (`--smoke`): tiny model on the CPU, every code path once; not a measurement.**", ""]
    lines += [
        f"{machine_line(r['machine'])}.  Model: {m['layers']} layers, {m['heads']} heads, d_model {m['d_model']}, "
        f"vocabulary {m['vocab']:,}, {m['params']:,} parameters.", "",
        f"bf16 matmul peak ({peak['n']}×{peak['n']}, {len(peak['samples_gflops'])} samples): median "
        f"**{peak['median_gflops'] / 1e3:,.1f} TFLOP/s** (best {peak['best_gflops'] / 1e3:,.1f}).  "
        f"FLOPs per token: {r['flops_formula']} = {t['flops_per_token']:,}.", "",
        f"## Training, batch {r['shapes']['batch']} × block {r['shapes']['block']}, bf16 autocast, fused AdamW", "",
        f"Timing: {protocol_line(t['protocol'])}.", "",
        "| | tokens/s: median (best) | step ms | MFU |", "| --- | ---: | ---: | ---: |",
    ]
    for name, rate in t["tokens_per_s"].items():
        lines.append(f"| {name.replace('_', ' ')} | {rate['median']:,.0f} ({rate['best']:,.0f}) | "
                     f"{t['step_ms'][name]:.1f} | {100 * t['mfu'][name]:.1f}% |")
    lines += ["", "Ratios (medians): " + "; ".join(f"{k.replace('_', ' ')} {v['median']:.2f}×"
                                                   for k, v in t["ratios"].items()) + "."]
    if t["errors"]:
        lines += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in t["errors"].items())]
    for key, g in r["generate"].items():
        lines += ["", f"## Greedy generation, batch {g['batch']}, {g['prompt_tokens']}-token prompt, "
                  f"{g['new_tokens']} new tokens, bf16 weights", "", f"Timing: {protocol_line(g['protocol'])}.", "",
                  "| | tokens/s: median (best) | ms per step |", "| --- | ---: | ---: |"]
        for name, rate in g["tokens_per_s"].items():
            lines.append(f"| {name.replace('_', ' ')} | {rate['median']:,.1f} ({rate['best']:,.1f}) | "
                         f"{g['ms_per_token'][name]:.2f} |")
        lines += ["", "Ratios (medians): " + ("; ".join(f"{k.replace('_', ' ')} {v['median']:.2f}×"
                                                        for k, v in g["ratios"].items()) or "none") + "."]
        same = g["same_greedy_tokens"]
        checks = [("float32, ours vs hf", same["float32"])]
        checks += [(f"bfloat16, {k.replace('_', ' ')}", v) for k, v in same.get("bfloat16", {}).items()]
        lines += ["", "Same greedy tokens: " + "; ".join(
            f"{label}: {'identical' if v['identical'] else 'first difference at token %s' % v['first_difference']}"
            for label, v in checks) + "."]
        if g["errors"]:
            lines += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in g["errors"].items())]
    lines += ["", "## Goals (reported, not asserted)", ""]
    for k, v in r["goals"].items():
        lines.append(f"- {k.replace('_', ' ')}: {v['measured']} (target {v['target']}): "
                     f"{'no verdict (smoke run)' if v['met'] is None else 'met' if v['met'] else 'not met'}")
    lines += ["", "Every round's figure is in the JSON file.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="results directory (default benchmarks/results; with --smoke, "
                                                      "a new temporary directory)")
    parser.add_argument("--smoke", action="store_true", help="every code path once on the CPU, tiny model, no timing")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (the real sizes)")
    parser.add_argument("--rounds", type=int, default=None, help="timed training rounds (default 10; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="training warm-up steps per side (default 3)")
    parser.add_argument("--gen-rounds", type=int, default=None, help="timed generation rounds (default 5; quick 2)")
    parser.add_argument("--gen-warmup", type=int, default=None, help="generation warm-up calls per side (default 1)")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 0
    s = SMOKE if args.smoke else FULL
    defaults = {"rounds": (1, 3, 10), "warmup": (0, 1, 3), "gen_rounds": (1, 2, 5), "gen_warmup": (0, 1, 1)}
    for key, (smoke, quick, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, smoke if args.smoke else quick if args.quick else full)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="bench_gpu_smoke_")) if args.smoke else RESULTS)
    if (args.smoke or args.quick) and out.resolve() == RESULTS.resolve():
        parser.error("smoke and quick figures never go to benchmarks/results; choose another --out")
    device = torch.device("cpu") if args.smoke else torch.device("cuda")
    if args.smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))

    info = machine_info(device)
    config = our_config(s)
    model, _ = twins(s, "cpu")
    result = {"benchmark": "GPT-2 training and greedy generation on a GPU: glassformer vs Hugging Face GPT2LMHeadModel",
              "machine": info, "smoke": args.smoke, "quick": args.quick,
              "model": {"preset": s["preset"], "layers": config.n_layers, "heads": config.n_heads,
                        "d_model": config.d_model, "vocab": config.vocab_size, "max_len": config.max_len,
                        "params": sum(p.numel() for p in dict.fromkeys(model.parameters()))},
              "shapes": {k: v for k, v in s.items() if k in ("block", "batch", "prompt", "new_tokens", "gen_batches")},
              "flops_formula": FLOPS_FORMULA, "goals_stated": GOALS,
              "weights": ("the same on both sides: Hugging Face's initialisation ported into ours with "
                          "glassformer.interop.hf_gpt2 (training: seed 0 for every side; generation: seed 1)")}
    del model
    peak = MatmulPeak(device, torch.bfloat16, n=s["peak_n"], reps=s["peak_reps"])
    peak.sample()
    try:
        result["generate"] = bench_generation(s, args, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        with tempfile.TemporaryDirectory() as run_dir:
            result["train"] = bench_training(s, args, device, peak, run_dir)
    except Exception:
        traceback.print_exc()
        return 1
    result["matmul_peak"] = peak.summary()
    result["goals"] = goals(result)
    finish_machine_info(info)
    write_results(out, NAME, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
