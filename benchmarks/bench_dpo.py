"""DPO training speed: one step of glassformer's ``train dpo`` vs ``trl``'s DPOTrainer, same model, same pairs.

The same model on both sides: a GPT-2-shaped GPT (6 layers, 6 heads, d_model 384, a character
vocabulary of the pairs' text) saved as a glassformer directory and converted with glassformer's own
export (``save_hf_directory``) to the Hugging Face ``GPT2LMHeadModel`` (and its tokenizer) that trl
trains.  The same data: one batch of 8 preference pairs of the built-in numbers task, rendered by our
chat template; trl is given the rendered prompt (``User: ...\\nAssistant: ``) and answers and appends
the end-of-sequence token itself, so both sides see the very same token ids (checked: the reference
log-probabilities each side computes for the batch are compared, and reported).

A step on both sides: chosen and rejected rows in one batch (trl: one forward padded to the longest
row; ours: length groups, rows of similar length in one forward each, exact under causal attention and
what every ``train dpo`` run does), the answers' log-probabilities summed,
the sigmoid loss (β 0.1) against reference log-probabilities computed once before training (ours:
``train dpo`` without LoRA; trl: ``precompute_ref_log_probs=True``), backward, gradient clipping at
1.0, AdamW.  Ours is the trainer's own ``train_step`` over the task's loss; trl's is what its
training loop runs per step (``training_step``: forward + backward, then the clipping and the
optimiser step of the Hugging Face Trainer loop).  trl's default — a second copy of the model as the
reference, run at every step — is timed beside it.

Timed with the shared harness (``benchmarks/harness.py``): the sides interleaved in ABBA order, the
same warm-up and timed steps for each, the median over rounds as the headline (the best round beside it).

    .venv/bin/python benchmarks/bench_dpo.py [--rounds 8] [--threads 2] [--device auto] [--bf16]
    .venv/bin/python benchmarks/bench_dpo.py --quick --out /tmp/bench     # smoke run

Writes dpo.json and dpo.md under --out (default benchmarks/results).  Needs ``transformers`` and ``trl``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import interleave, machine_line, protocol_line, run_one_benchmark, twin_gpt2_directories

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
from datasets import Dataset  # noqa: E402
from transformers import AutoTokenizer, GPT2LMHeadModel  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from glassformer.data.instructions import numbers_preferences  # noqa: E402
from glassformer.tokenizers.chat import DEFAULT_CHAT_TEMPLATE, render  # noqa: E402
from glassformer.training.dpo import (DPOSettings, collate_pairs, dpo_step_loss, encode_pairs,  # noqa: E402
                                      reference_logprobs)
from glassformer.training.optim import adamw  # noqa: E402
from glassformer.training.posttrain import load_policy  # noqa: E402
from glassformer.training.trainer import Trainer, TrainerConfig  # noqa: E402

NAME = "dpo"
SHAPE = dict(n_layers=6, n_heads=6, d_model=384, max_len=256, pairs=8)
BETA, LR = 0.1, 1e-6                               # trl's defaults (the rate does not change a step's time)
STEPS_PER_ROUND = 4
TARGET = 1.3                                       # ours / trl, the goal set for this work


def prepared(folder: Path, device: torch.device, bf16: bool):
    """Our policy and trainer, trl's trainers (precomputed reference; reference model) and one batch each."""
    rows = numbers_preferences("train", SHAPE["pairs"])
    texts = [render(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": r["prompt"]},
                                            {"role": "assistant", "content": r[side]}], False)
             for r in rows for side in ("chosen", "rejected")]
    twin_gpt2_directories(folder, texts=texts, n_layers=SHAPE["n_layers"], n_heads=SHAPE["n_heads"],
                          d_model=SHAPE["d_model"], max_len=SHAPE["max_len"])

    # ours: the task's own pieces, as `train dpo` assembles them
    settings = DPOSettings(base=str(folder / "base"), beta=BETA, lr=LR, batch_size=SHAPE["pairs"])
    policy = load_policy(settings)
    pairs = encode_pairs(policy, rows)
    pad = policy.tokenizer.pad_id if policy.tokenizer.pad_id is not None else policy.tokenizer.eos_id
    model = policy.model.to(device)
    reference = reference_logprobs(model, pairs, SHAPE["pairs"], pad, device, "bf16" if bf16 else "fp32")
    batch = collate_pairs(pairs, pad, reference).to(device)
    ours = Trainer(model, lambda m: adamw(m, LR, 0.0, (0.9, 0.999)), None, dpo_step_loss(settings, lora=False),
                   lambda m: {"loss": 0.0}, lambda path, m: None,
                   TrainerConfig(max_steps=10**6, eval_every=10**6, clip_norm=1.0, progress=False,
                                 precision="bf16" if bf16 else "fp32"), folder / "run", device)

    # trl: the rendered prompts and answers (it appends the end-of-sequence token to each answer)
    prompts = [render(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": r["prompt"]}], True) for r in rows]
    answers = {side: [render(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": r["prompt"]},
                                                     {"role": "assistant", "content": r[side]}], False)[len(p):]
                      for r, p in zip(rows, prompts)] for side in ("chosen", "rejected")}
    dataset = Dataset.from_dict({"prompt": prompts, **answers})
    hf_tokenizer = AutoTokenizer.from_pretrained(folder / "hf")

    def trl_trainer(precompute: bool):
        args = DPOConfig(output_dir=str(folder / f"trl-{precompute}"), per_device_train_batch_size=SHAPE["pairs"],
                         learning_rate=LR, beta=BETA, loss_type=["sigmoid"], max_grad_norm=1.0, weight_decay=0.0,
                         precompute_ref_log_probs=precompute, precompute_ref_batch_size=SHAPE["pairs"],
                         max_length=None, report_to=[], use_cpu=device.type == "cpu",
                         bf16=bf16,                      # stated: trl's own default is bf16, ours fp32 unless asked
                         dataloader_num_workers=0, disable_tqdm=True, seed=0)
        model = GPT2LMHeadModel.from_pretrained(folder / "hf")
        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=hf_tokenizer)
        trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
        trainer.current_gradient_accumulation_steps = 1          # (set by its training loop)
        inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        return trainer, inputs

    theirs = {"precomputed": trl_trainer(True), "reference model": trl_trainer(False)}
    return ours, batch, reference, theirs


def trl_step(trainer, inputs) -> None:
    """One step of trl's training loop: forward + backward (``training_step``), clipping, the optimiser."""
    trainer.training_step(trainer.model, inputs)
    trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def same_tokens(reference: torch.Tensor, trainer, inputs) -> float:
    """The largest difference between the reference log-probabilities of the batch on the two sides:
    near 0 only if both read the same ids with the same weights (trl's ``inputs`` come shuffled by its
    sampler: compared as sorted sets)."""
    theirs = torch.stack([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]], 1).float().cpu()
    ours = reference.float().cpu()
    return float((ours[ours[:, 0].argsort()] - theirs[theirs[:, 0].argsort()]).abs().max())


def bench(args, device: torch.device) -> dict:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        ours, batch, reference, theirs = prepared(Path(folder), device, args.bf16)
        gap = same_tokens(reference, *theirs["precomputed"])
        runners = {"ours": lambda: ours.train_step([batch]),
                   "trl": lambda: trl_step(*theirs["precomputed"]),
                   "trl_reference_model": lambda: trl_step(*theirs["reference model"])}
        steps = 1 if args.quick else STEPS_PER_ROUND
        timings = interleave(runners, rounds=args.rounds, warmup=args.warmup, calls_per_round=steps,
                             device=device, bf16=args.bf16)
    pairs = SHAPE["pairs"]
    return {
        "shape": SHAPE, "beta": BETA, "pairs_per_step": pairs, "rows_per_forward": 2 * pairs,
        "tokens_per_step": int(batch.ids.numel()),
        "reference_logprob_gap": gap,
        "protocol": {**timings.protocol.to_dict(), "grad_mode": "forward + backward + clip + AdamW step"},
        "pairs_per_s": {name: timings.rate(name, pairs, 2) for name in runners},
        "ratio": timings.ratio("ours", "trl"), "ratio_vs_reference_model": timings.ratio("ours", "trl_reference_model"),
        "target_ratio": TARGET,
    }


def markdown(r: dict) -> str:
    t = r["dpo"]
    s, rates, ratio = t["shape"], t["pairs_per_s"], t["ratio"]
    met = "met" if ratio["median"] >= t["target_ratio"] else "**not met**"

    def cell(name):
        return f"{rates[name]['median']:,.2f} ({rates[name]['best']:,.2f})"

    return "\n".join([
        "# DPO: glassformer vs trl", "",
        f"{machine_line(r['machine'])}{', quick smoke run (not a measurement)' if r['quick'] else ''}.", "",
        f"The same GPT-2-shaped model on both sides ({s['n_layers']} layers, {s['n_heads']} heads, d_model "
        f"{s['d_model']}, a character vocabulary), trl's over glassformer's own Hugging Face export; the same "
        f"{s['pairs']} preference pairs of the numbers task ({t['rows_per_forward']} rows: trl in one forward of "
        f"{t['tokens_per_step']:,} padded tokens, ours in length groups); sigmoid loss, β {t['beta']}.  The reference log-probabilities the "
        f"two sides compute for the batch differ by at most {t['reference_logprob_gap']:.2g} nats (the same ids, the "
        "same weights).", "",
        f"Timing: {protocol_line(t['protocol'])}.  Ratio = ours / trl.", "",
        "## One step (forward + backward + clipping + AdamW), pairs/s", "",
        "| ours, reference computed once: median (best) | trl, `precompute_ref_log_probs`: median (best) | "
        "ratio of medians (target) | trl, a reference model (its default) | ratio |",
        "| ---: | ---: | --- | ---: | ---: |",
        f"| {cell('ours')} | {cell('trl')} | {ratio['median']:.2f}× (≥ {t['target_ratio']}×, {met}) | "
        f"{cell('trl_reference_model')} | {t['ratio_vs_reference_model']['median']:.2f}× |", "",
        "Every round's figure is in the JSON file.", "",
    ])


def main() -> None:
    run_one_benchmark(__doc__, NAME, "dpo", "DPO step: glassformer vs trl DPOTrainer on the same converted GPT-2", bench, markdown, rounds=8, warmup=2)


if __name__ == "__main__":
    main()
