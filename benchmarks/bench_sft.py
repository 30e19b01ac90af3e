"""SFT training speed: glassformer's ``finetune sft`` vs ``trl``'s SFTTrainer, same model, same examples, tokens/s.

The same model on both sides: a GPT-2-shaped GPT (6 layers, 6 heads, d_model 384, a character
vocabulary of the examples' text) saved as a glassformer directory and converted with glassformer's
own export (``harness.twin_gpt2_directories``) to the Hugging Face ``GPT2LMHeadModel`` (and its
tokenizer) that trl trains.  The same data: numbers-instruct questions and answers, rendered by our
chat template; trl gets them as a prompt-completion dataset (the rendered prompt ``User: ...\\nAssistant: ``
and the rest of the rendered example; it appends the end-of-sequence token itself), so both sides see
the very same token ids and targets (checked, and the check is recorded): the loss covers the answer
and its end-of-sequence token only (ours by default; trl's ``completion_only_loss``), the mean over
the batch's answer tokens.

The same batches: 16 examples each, formed by our length-bucketed order and given to trl with the same
examples, right-padded, no packing on either side.  trl pads a batch to its longest row (its
padding-free path needs FlashAttention); ours runs a batch as length groups (``posttrain.length_groups``:
rows of similar length in one forward, each group cut to its longest row, one backward), which is
exact under causal attention and is what every ``finetune sft`` run does.  A step on both sides: forward, backward,
gradient clipping at 1.0, AdamW, in fp32 on the CPU (``--bf16``: autocast on both).  Ours is the
trainer's own ``train_step`` over the task's loss; trl's is what its training loop runs per step
(``training_step``, then the clipping and the optimiser step of the Hugging Face Trainer loop) with
its defaults but three, stated: ``bf16`` off (its default is on), ``gradient_checkpointing`` off (its
default is on: ours does not recompute activations) and ``max_length`` None (ours does not truncate
these short examples either).

Tokens counted, the same number on both sides: every token of every example of the batch — prompt,
answer and end-of-sequence token, padding excluded.  Timed with the shared harness
(``benchmarks/harness.py``): ABBA order, the same warm-up and timed steps for each (a round = one pass
over the same batches), the median over rounds as the headline (the best round beside it).

    .venv/bin/python benchmarks/bench_sft.py [--rounds 8] [--threads 2] [--device auto] [--bf16]
    .venv/bin/python benchmarks/bench_sft.py --quick --out /tmp/bench     # smoke run

Writes sft.json and sft.md under --out (default benchmarks/results).  Needs ``transformers`` and ``trl``.
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
from trl import SFTConfig, SFTTrainer  # noqa: E402

from glassformer.data.instructions import numbers_instructions  # noqa: E402
from glassformer.tokenizers.chat import DEFAULT_CHAT_TEMPLATE, render  # noqa: E402
from glassformer.training.optim import adamw  # noqa: E402
from glassformer.training.posttrain import load_policy  # noqa: E402
from glassformer.training.sft import SFTSettings, SFTStream, collate, encode_rows, sft_loss  # noqa: E402
from glassformer.training.trainer import Trainer, TrainerConfig  # noqa: E402

NAME = "sft"
SHAPE = dict(n_layers=6, n_heads=6, d_model=384, max_len=256)
BATCH = 16                                         # examples per step
BATCHES = {"full": 8, "quick": 2}                  # distinct batches: one round is one pass over them
LR = 2e-5                                          # trl's default (the rate does not change a step's time)
TARGET = 1.3                                       # ours / trl, the goal set for this work


def rendered(question) -> tuple[str, str]:
    """(the prompt as the model sees it before its answer, the rest of the rendered example)."""
    prompt = render(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": question.prompt}], True)
    whole = render(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": question.prompt},
                                           {"role": "assistant", "content": question.answer}], False)
    return prompt, whole[len(prompt):]


def prepared(folder: Path, device: torch.device, bf16: bool, n_batches: int):
    """Our trainer and batches, trl's trainer and the same batches, and the batches' token counts."""
    questions = numbers_instructions("train", BATCH * n_batches)
    texts = [p + c for p, c in map(rendered, questions)]
    twin_gpt2_directories(folder, texts=texts, **SHAPE)

    # ours: the task's own pieces, as `finetune sft` assembles them
    settings = SFTSettings(base=str(folder / "base"), lr=LR, batch_size=BATCH)
    policy = load_policy(settings)
    examples = encode_rows([{"prompt": q.prompt, "response": q.answer} for q in questions], policy)
    pad = policy.tokenizer.pad_id if policy.tokenizer.pad_id is not None else policy.tokenizer.eos_id
    groups = SFTStream(examples, BATCH, pad, settings.seed).epoch_batches(0)       # length-bucketed, as training
    ours_batches = [collate([examples[i] for i in group], pad).to(device) for group in groups]
    ours = Trainer(policy.model.to(device), lambda m: adamw(m, LR, 0.0, (0.9, 0.999)), None, sft_loss,
                   lambda m: {"loss": 0.0}, lambda path, m: None,
                   TrainerConfig(max_steps=10**6, eval_every=10**6, clip_norm=1.0, progress=False,
                                 precision="bf16" if bf16 else "fp32"), folder / "run", device)

    # trl: the same examples as prompt-completion rows, in the same batches
    prompts, completions = zip(*map(rendered, questions))
    args = SFTConfig(output_dir=str(folder / "trl"), per_device_train_batch_size=BATCH, learning_rate=LR,
                     max_grad_norm=1.0, weight_decay=0.0, completion_only_loss=True, packing=False,
                     padding_free=False, max_length=None, gradient_checkpointing=False,
                     bf16=bf16,                          # stated: trl's own default is bf16, ours fp32 unless asked
                     report_to=[], use_cpu=device.type == "cpu", dataloader_num_workers=0, disable_tqdm=True,
                     logging_steps=10**9, save_strategy="no", seed=0)
    trainer = SFTTrainer(model=GPT2LMHeadModel.from_pretrained(folder / "hf"), args=args,
                         train_dataset=Dataset.from_dict({"prompt": list(prompts), "completion": list(completions)}),
                         processing_class=AutoTokenizer.from_pretrained(folder / "hf"))
    trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
    trainer.current_gradient_accumulation_steps = 1          # (set by its training loop)
    trainer.model.train()
    theirs_batches = [trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in group]))
                      for group in groups]
    differ = examples_that_differ(examples, groups, trainer.train_dataset)
    tokens = sum(len(examples[i].ids) for group in groups for i in group)
    return ours, ours_batches, trainer, theirs_batches, tokens, differ


def examples_that_differ(examples, groups, dataset) -> int:
    """How many examples differ between the sides in their token ids or their targets (0: the same work);
    trl's labels are the ids where trained, -100 elsewhere."""
    differ = 0
    for i in (i for group in groups for i in group):
        row = dataset[i]
        targets = [label != -100 for label in row["labels"]]
        differ += row["input_ids"] != examples[i].ids or targets != examples[i].targets
    return differ


def cycle(step, batches: list):
    """A runner taking the next of ``batches`` at every call (a round of len(batches) calls is one pass)."""
    position = [0]

    def run() -> None:
        step(batches[position[0] % len(batches)])
        position[0] += 1
    return run


def trl_step(trainer, inputs) -> None:
    """One step of trl's training loop: forward + backward (``training_step``), clipping, the optimiser."""
    trainer.training_step(trainer.model, dict(inputs))
    trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def bench(args, device: torch.device) -> dict:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    n_batches = BATCHES["quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory() as folder:
        ours, ours_batches, trainer, theirs_batches, tokens, differ = prepared(Path(folder), device, args.bf16,
                                                                               n_batches)
        runners = {"ours": cycle(lambda batch: ours.train_step([batch]), ours_batches),
                   "trl": cycle(lambda inputs: trl_step(trainer, inputs), theirs_batches)}
        timings = interleave(runners, rounds=args.rounds, warmup=args.warmup, calls_per_round=n_batches,
                             device=device, bf16=args.bf16)
    padded = sum(int(b.tokens.numel()) + b.tokens.shape[0] for b in ours_batches)
    return {
        "shape": SHAPE, "examples_per_step": BATCH, "steps_per_round": n_batches,
        "tokens_per_round": tokens, "padded_tokens_per_round": padded,
        "answer_tokens_per_round": sum(b.n_tokens for b in ours_batches),
        "examples_that_differ": differ,
        "protocol": {**timings.protocol.to_dict(), "grad_mode": "forward + backward + clip + AdamW step"},
        "tokens_per_s": {name: timings.rate(name, tokens / n_batches, 0) for name in runners},
        "ratio": timings.ratio("ours", "trl"), "target_ratio": TARGET,
    }


def markdown(r: dict) -> str:
    t = r["sft"]
    s, rates, ratio = t["shape"], t["tokens_per_s"], t["ratio"]
    met = "met" if ratio["median"] >= t["target_ratio"] else "**not met**"

    def cell(name):
        return f"{rates[name]['median']:,.0f} ({rates[name]['best']:,.0f})"

    same = ("the very same token ids and targets on both sides (checked)" if t["examples_that_differ"] == 0
            else f"**{t['examples_that_differ']} examples differ in their ids or targets between the sides**")
    return "\n".join([
        "# SFT: glassformer vs trl", "",
        f"{machine_line(r['machine'])}{', quick smoke run (not a measurement)' if r['quick'] else ''}.", "",
        f"The same GPT-2-shaped model on both sides ({s['n_layers']} layers, {s['n_heads']} heads, d_model "
        f"{s['d_model']}, a character vocabulary), trl's over glassformer's own Hugging Face export; the same "
        f"{t['steps_per_round']} batches of {t['examples_per_step']} numbers-instruct examples per round "
        f"({t['tokens_per_round']:,} tokens, {t['padded_tokens_per_round']:,} padded, "
        f"{t['answer_tokens_per_round']:,} answer tokens the loss covers), {same}; no packing; ours in length groups, "
        f"trl padded to the batch's longest row; {'bf16 autocast' if r['bf16'] else 'fp32'}; trl without gradient checkpointing (its default "
        "is on).", "",
        f"Timing: {protocol_line(t['protocol'])}.  Tokens counted: every token of every example (prompt, answer, "
        "end-of-sequence), padding excluded — the same count on both sides.  Ratio = ours / trl.", "",
        "## One step (forward + backward + clipping + AdamW), tokens/s", "",
        "| ours: median (best) | trl SFTTrainer: median (best) | ratio of medians (target) |",
        "| ---: | ---: | --- |",
        f"| {cell('ours')} | {cell('trl')} | {ratio['median']:.2f}× (≥ {t['target_ratio']}×, {met}) |", "",
        "Every round's figure is in the JSON file.", "",
    ])


def main() -> None:
    run_one_benchmark(__doc__, NAME, "sft", "SFT training tokens/s: glassformer vs trl SFTTrainer on the same converted GPT-2", bench, markdown, rounds=8, warmup=2, record_bf16=True)


if __name__ == "__main__":
    main()
