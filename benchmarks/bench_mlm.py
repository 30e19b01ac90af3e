"""Masked-LM pre-training speed: glassformer's ``Bert`` (head "mlm") vs Hugging Face ``BertForMaskedLM``.

The same shape, the same weights (Hugging Face's, copied into ours), the same masked batch
on both sides: a bert-small-like encoder (4 layers, d_model 256, 4 heads, d_ff 1024,
vocabulary 8,000, dropout 0.1 as the config says), batch 32 × 128 tokens with 15% of the
tokens selected (BERT's 80/10/10 masking, ``glassformer.data.mlm``), fp32.  One training
step is forward + backward + gradient clipping at 1.0 + AdamW (glassformer's groups, the
fused kernel) on both sides:

* ours: ``Trainer.train_step`` — the training loop ``glassformer train mlm`` runs, where only
  the selected positions go through the masked-LM head and the vocabulary projection
  (a fused, chunked linear + cross-entropy);
* Hugging Face: ``BertForMaskedLM(input_ids, attention_mask, labels).loss`` with
  ``attn_implementation="sdpa"``: its head projects every position to the vocabulary and the
  cross-entropy ignores the unselected ones.

Timed with the shared harness (``benchmarks/harness.py``): the two sides interleaved in ABBA
order, the same warm-up and timed steps for both, the median over rounds as the headline
(the best round beside it).  Tokens/s counts every input token (batch × block).

    .venv/bin/python benchmarks/bench_mlm.py [--rounds 8] [--threads 2] [--device auto]
    .venv/bin/python benchmarks/bench_mlm.py --quick --out /tmp/bench     # smoke run, well under a minute

Writes mlm.json and mlm.md (mlm_cuda.* on a GPU) under --out (default benchmarks/results).  Needs ``transformers``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import add_common_args, finish_machine_info, interleave, machine_info, machine_line, protocol_line
from harness import setup, write_results

from transformers import BertConfig as HFBertConfig, BertForMaskedLM  # noqa: E402

from glassformer.data.mlm import Masking  # noqa: E402
from glassformer.interop.hf_bert import state_dict_from_hf_bert  # noqa: E402
from glassformer.models import Bert, BertConfig, num_parameters  # noqa: E402
from glassformer.training.mlm import mlm_loss  # noqa: E402
from glassformer.training.optim import adamw  # noqa: E402
from glassformer.training.trainer import Trainer, TrainerConfig  # noqa: E402

NAME = "mlm"
SHAPE = dict(n_layers=4, n_heads=4, d_model=256, d_ff=1024, vocab=8000, block=128, batch=32, mask_prob=0.15,
             dropout=0.1)
QUICK = dict(SHAPE, batch=8)
TARGET = 1.2                                       # ours / Hugging Face, the goal set for this work
STEPS_PER_ROUND = 1                                # a step of batch 32 × 128 takes seconds on 2 CPU cores
N_SPECIAL = 5                                      # [PAD] [CLS] [SEP] [UNK] [MASK] = ids 0..4
PAD, CLS, SEP, MASK = 0, 1, 2, 4


def twin_models(shape: dict, device: torch.device) -> tuple[Bert, BertForMaskedLM]:
    """Ours and Hugging Face's with the same shape and weights (Hugging Face's initialisation)."""
    torch.manual_seed(0)
    hf = BertForMaskedLM(HFBertConfig(
        vocab_size=shape["vocab"], hidden_size=shape["d_model"], num_hidden_layers=shape["n_layers"],
        num_attention_heads=shape["n_heads"], intermediate_size=shape["d_ff"], max_position_embeddings=shape["block"],
        hidden_dropout_prob=shape["dropout"], attention_probs_dropout_prob=shape["dropout"], pad_token_id=PAD,
        attn_implementation="sdpa"))
    assert hf.config._attn_implementation == "sdpa", hf.config._attn_implementation
    config = BertConfig(vocab_size=shape["vocab"], n_layers=shape["n_layers"], n_heads=shape["n_heads"],
                        d_model=shape["d_model"], d_ff=shape["d_ff"], max_len=shape["block"],
                        dropout=shape["dropout"], attention_dropout=shape["dropout"], pad_id=PAD, head="mlm",
                        pooler=False)                       # BertForMaskedLM has no pooler
    ours = Bert(config)
    ours.load_state_dict(state_dict_from_hf_bert(hf.state_dict(), config))
    return ours.to(device), hf.to(device)


def masked_batch(shape: dict):
    """Random words framed [CLS] ... [SEP], masked as in training (15%: 80% [MASK], 10% random, 10% kept)."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(N_SPECIAL, shape["vocab"], (shape["batch"], shape["block"]), generator=g)
    tokens[:, 0], tokens[:, -1] = CLS, SEP
    special = torch.zeros(shape["vocab"], dtype=torch.bool)
    special[:N_SPECIAL] = True
    masking = Masking(MASK, special, torch.zeros_like(special), mask_prob=shape["mask_prob"])
    return masking.mask(tokens, g)


def bench(args, device: torch.device) -> dict:
    shape = QUICK if args.quick else SHAPE
    ours, hf = twin_models(shape, device)
    batch = masked_batch(shape)
    on_device = batch.to(device)
    attention = torch.ones_like(on_device.tokens)

    with torch.no_grad():                             # same weights, same batch: the same loss (dropout off)
        ours.eval(), hf.eval()
        first = (float(ours(on_device.tokens, targets=on_device.targets)),
                 float(hf(input_ids=on_device.tokens, attention_mask=attention, labels=on_device.targets).loss))
    ours.train(), hf.train()

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(ours, lambda m: adamw(m, 1e-4, 0.01, (0.9, 0.999)), None, mlm_loss, lambda m: {},
                          lambda path, m: None, TrainerConfig(max_steps=10**9, eval_every=10**9, clip_norm=1.0,
                                                              progress=False), run_dir, device)
        opt_hf = adamw(hf, 1e-4, 0.01, (0.9, 0.999))
        hf_params = [p for p in hf.parameters() if p.requires_grad]

        def step_ours():
            trainer.train_step([batch])

        def step_hf():
            loss = hf(input_ids=on_device.tokens, attention_mask=attention, labels=on_device.targets).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hf_params, 1.0)
            opt_hf.step()
            opt_hf.zero_grad(set_to_none=True)

        steps = STEPS_PER_ROUND
        timings = interleave({"ours": step_ours, "hf": step_hf}, rounds=args.rounds, warmup=args.warmup,
                             calls_per_round=steps, device=device, bf16=args.bf16)
    tokens = shape["batch"] * shape["block"]
    return {
        "shape": shape, "params": num_parameters(ours), "tokens_per_step": tokens,
        "selected_per_step": batch.n_tokens, "selected_share": round(batch.n_tokens / tokens, 4),
        "protocol": {**timings.protocol.to_dict(), "grad_mode": "training steps (dropout on, as configured)"},
        "first_loss": {"ours": round(first[0], 5), "hf": round(first[1], 5)},
        "tokens_per_s": {"ours": timings.rate("ours", tokens, 0), "hf": timings.rate("hf", tokens, 0)},
        "ratio": timings.ratio("ours", "hf"), "target_ratio": TARGET,
    }


def markdown(r: dict) -> str:
    t = r["train"]
    s = t["shape"]

    def rate(x):
        return f"{x['median']:,.0f} ({x['best']:,.0f})"

    met = "met" if t["ratio"]["median"] >= t["target_ratio"] else "**not met**"
    lines = [
        "# Masked-LM pre-training: glassformer Bert vs Hugging Face BertForMaskedLM", "",
        f"{machine_line(r['machine'])}; load average {r['machine'].get('load_average_start')} at the start, "
        f"{r['machine'].get('load_average_end')} at the end (the machine may be shared).", "",
        f"Shape: {s['n_layers']} layers, {s['n_heads']} heads, d_model {s['d_model']}, d_ff {s['d_ff']}, vocabulary "
        f"{s['vocab']:,}, dropout {s['dropout']}; batch {s['batch']} × {s['block']} tokens, "
        f"{t['selected_per_step']:,} selected ({t['selected_share']:.1%}); {t['params']:,} parameters; fp32.  The same weights and the same "
        f"masked batch on both sides (first loss, dropout off: ours {t['first_loss']['ours']}, "
        f"HF {t['first_loss']['hf']}).", "",
        "A step: forward + backward + clipping at 1.0 + AdamW (glassformer's groups, fused kernel).  Ours: "
        "`Trainer.train_step`, only the selected positions projected to the vocabulary; HF: `BertForMaskedLM` "
        "(sdpa attention) with `labels`, every position projected.", "",
        f"Timing: {protocol_line(t['protocol'])}.  Tokens/s counts every input token.", "",
        "| | tokens/s: median (best) |", "| --- | ---: |",
        f"| glassformer `Bert` (head mlm) | {rate(t['tokens_per_s']['ours'])} |",
        f"| Hugging Face `BertForMaskedLM` | {rate(t['tokens_per_s']['hf'])} |", "",
        f"Ours / Hugging Face: **{t['ratio']['median']:.2f}×** (best rounds: {t['ratio']['best']:.2f}×; "
        f"target ≥ {t['target_ratio']}×: {met}).", "",
        "Every round's figure is in the JSON file.",
    ]
    m = r["machine"]
    busy = max((m.get("load_average_start") or [0])[0], (m.get("load_average_end") or [0])[0])
    if m.get("cpu_count") and busy > m["cpu_count"]:
        lines += ["", f"*The machine was busy with other work (load average up to {busy:g} on {m['cpu_count']} cores): "
                      "the two sides, interleaved, saw the same load, so the ratio holds; the absolute figures are "
                      "lower than on an idle machine.*"]
    if r["quick"]:
        lines += ["", "*A --quick smoke run (batch 8, 2 rounds): not the README's figures.*"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, rounds=8, warmup=1)
    args = parser.parse_args()
    device = setup(args)
    info = machine_info(device)
    result = {"benchmark": "masked-LM pre-training: glassformer Bert (head mlm) vs Hugging Face BertForMaskedLM",
              "machine": info, "quick": args.quick}
    result["train"] = bench(args, device)
    finish_machine_info(info)
    name = NAME if device.type == "cpu" else f"{NAME}_{device.type}"
    write_results(args.out, name, result, markdown(result))


if __name__ == "__main__":
    main()
