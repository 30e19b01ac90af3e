"""LoRA training speed: glassformer's adapters vs ``peft``'s on the same converted model, one run.

The same model on both sides: a GPT-2-shaped GPT (6 layers, 6 heads, d_model 384, vocabulary 65)
saved as a glassformer directory and converted with glassformer's own export (``save_hf_directory``)
to the Hugging Face ``GPT2LMHeadModel`` that peft wraps.  The same adapter on both sides: rank 8 on
the queries and values (our ``q``, ``v`` parts of ``qkv_proj``), written by ``save_adapter`` and
loaded by ``PeftModel.from_pretrained(..., is_trainable=True)`` — on GPT-2's fused ``c_attn`` that is
one LoRA of rank 16 with a block-diagonal B, the same two small matrix products ours computes.

Measured: forward + backward (cross-entropy over batch 8 × 128 tokens, dropout 0; gradients reach
the adapters only, the base frozen on both sides), in tokens/s.  Timed with the shared harness
(``benchmarks/harness.py``): the sides interleaved in ABBA order, the same warm-up and timed steps for
both, the median over rounds as the headline (the best round kept beside it).

    .venv/bin/python benchmarks/bench_lora.py [--rounds 8] [--threads 2] [--device auto] [--bf16]
    .venv/bin/python benchmarks/bench_lora.py --quick --out /tmp/bench     # smoke run, under a minute

Writes lora.json and lora.md under --out (default benchmarks/results).  Needs ``transformers`` and ``peft``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import add_common_args, finish_machine_info, interleave, machine_info, machine_line, protocol_line
from harness import setup, twin_gpt2_directories, write_results

from peft import PeftModel  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

from glassformer.interop.peft import save_adapter  # noqa: E402
from glassformer.model_dir import load_model_dir  # noqa: E402
from glassformer.nn.lora import LoRAConfig, add_lora, trainable_parameters  # noqa: E402

NAME = "lora"
SHAPE = dict(n_layers=6, n_heads=6, d_model=384, block=128, batch=8, vocab=65)
LORA = LoRAConfig(r=8, alpha=16.0, targets=("q", "v"))
STEPS_PER_ROUND = 8
TARGET = 1.2                                       # ours / peft, the goal set for this work


def twin_models(folder: Path, device: torch.device):
    """Ours with LoRA and peft's over the Hugging Face conversion of the same base, the same adapter."""
    twin_gpt2_directories(folder, vocab=SHAPE["vocab"], n_layers=SHAPE["n_layers"], n_heads=SHAPE["n_heads"],
                          d_model=SHAPE["d_model"], max_len=SHAPE["block"])
    ours = load_model_dir(folder / "base").model
    add_lora(ours, LORA)
    save_adapter(folder / "adapter", ours, LORA, folder / "base")
    hf = GPT2LMHeadModel.from_pretrained(folder / "hf")
    theirs = PeftModel.from_pretrained(hf, str(folder / "adapter"), is_trainable=True)
    return ours.to(device).train(), theirs.to(device).train()


def bench(args, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        ours, theirs = twin_models(Path(folder), device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, SHAPE["vocab"], (SHAPE["batch"], SHAPE["block"] + 1), generator=g).to(device)
    inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    def step_ours():
        ours.loss(inputs, targets).backward()
        ours.zero_grad(set_to_none=True)

    def step_peft():
        # The usual Hugging Face call: labels = input ids, shifted inside the model.
        theirs(input_ids=inputs, labels=inputs).loss.backward()
        theirs.zero_grad(set_to_none=True)

    with torch.no_grad():                                       # same weights, same targets: same loss
        first = (float(ours.loss(inputs[:, :-1], inputs[:, 1:])), float(theirs(input_ids=inputs, labels=inputs).loss))
    steps = 2 if args.quick else STEPS_PER_ROUND
    timings = interleave({"ours": step_ours, "peft": step_peft}, rounds=args.rounds, warmup=args.warmup,
                         calls_per_round=steps, device=device, bf16=args.bf16)
    tokens = SHAPE["batch"] * SHAPE["block"]
    peft_trainable = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    return {
        "shape": SHAPE, "lora": LORA.to_dict(), "tokens_per_step": tokens,
        "trainable_parameters": {"ours": trainable_parameters(ours)[0], "peft": peft_trainable},
        "protocol": {**timings.protocol.to_dict(), "grad_mode": "forward + backward, no optimizer step"},
        "first_loss": {"ours": round(first[0], 5), "peft": round(first[1], 5)},
        "tokens_per_s": {"ours": timings.rate("ours", tokens, 0), "peft": timings.rate("peft", tokens, 0)},
        "ratio": timings.ratio("ours", "peft"), "target_ratio": TARGET,
    }


def markdown(r: dict) -> str:
    t = r["lora"]
    s, rates, ratio = t["shape"], t["tokens_per_s"], t["ratio"]
    met = "met" if ratio["median"] >= t["target_ratio"] else "**not met**"
    lora = t["lora"]
    return "\n".join([
        "# LoRA: glassformer vs peft", "",
        f"{machine_line(r['machine'])}{', quick smoke run (not a measurement)' if r['quick'] else ''}.", "",
        f"The same GPT-2-shaped model on both sides ({s['n_layers']} layers, {s['n_heads']} heads, d_model "
        f"{s['d_model']}, vocabulary {s['vocab']}), peft's over glassformer's own Hugging Face export; the same "
        f"adapter: r {lora['r']}, alpha {lora['alpha']:g} on {', '.join(lora['targets'])} (peft: one c_attn LoRA of "
        f"rank {2 * lora['r']}, B block-diagonal).  Trainable parameters: ours {t['trainable_parameters']['ours']:,}, "
        f"peft {t['trainable_parameters']['peft']:,} (its B also holds the zero blocks of K).  Loss at the start: "
        f"ours {t['first_loss']['ours']}, peft {t['first_loss']['peft']}.", "",
        f"Timing: {protocol_line(t['protocol'])}.  Ratio = ours / peft.", "",
        f"## Forward + backward, batch {s['batch']} × {s['block']} tokens, tokens/s", "",
        "| ours: median (best) | peft: median (best) | ratio of medians (target) |", "| ---: | ---: | --- |",
        f"| {rates['ours']['median']:,.0f} ({rates['ours']['best']:,.0f}) | {rates['peft']['median']:,.0f} "
        f"({rates['peft']['best']:,.0f}) | {ratio['median']:.2f}× (≥ {t['target_ratio']}×, {met}) |", "",
        "Every round's figure is in the JSON file.", "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, rounds=8, warmup=3)
    args = parser.parse_args()
    device = setup(args)
    info = machine_info(device)
    result = {"benchmark": "LoRA forward + backward: glassformer vs peft on the same converted GPT-2",
              "machine": info, "quick": args.quick}
    result["lora"] = bench(args, device)
    finish_machine_info(info)
    write_results(args.out, NAME, result, markdown(result))


if __name__ == "__main__":
    main()
