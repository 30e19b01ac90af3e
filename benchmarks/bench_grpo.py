"""One GRPO step: glassformer's ``train rl`` against trl's GRPOTrainer, same model, same prompts, one run.

A step on each side is the whole of what an RL step costs: sample a group of completions for each
prompt, score them, compute the advantages, then the clipped-ratio loss through the model's forward,
its backward, gradient clipping at 1.0 and an AdamW step.  The work is the same on both sides:

* **the model**: one GPT-2-shaped Hugging Face ``GPT2LMHeadModel`` (124M: 12 layers, 12 heads, d_model 768,
  vocabulary 50,257; with ``--quick`` 2 layers, d_model 128), random weights from a seed, saved as a
  Hugging Face directory; trl trains it as it is, glassformer reads the same directory through its
  converter (``load_model_dir``);
* **the prompts**: the built-in numbers-instruct questions rendered by the default chat template (the same
  text on both sides), 8 prompts × a group of 8 completions, up to 64 new tokens each (``--quick``: 16),
  sampled at temperature 1 (no top-k / top-p);
* **the reward**: the number of distinct characters of the completion / 100 — a reward that differs
  between the completions of a group, so that, as in a run that learns, no group is skipped (a random
  model answers no question right: the exact-answer reward would give glassformer empty steps);
* **the update**: β = 0 (no reference model), ε = 0.2, token-level normalisation, lr 1e-5, clipping 1.0,
  fp32 (``--bf16``: autocast on both sides).  trl: ``GRPOTrainer.training_step`` (its generation through
  ``transformers``' ``generate`` with a growing cache, scoring, loss, backward) then the optimiser step;
  glassformer: ``Rollouts`` (one static KV cache, compiled with CUDA graphs on a GPU unless
  ``--no-compile``) then ``Trainer.train_step``.

Timed with the shared harness (ABBA order, equal warm-up, the median over rounds as the headline).
Also recorded: glassformer's seconds in sampling and scoring vs in the update (from its step figures).

    .venv/bin/python benchmarks/bench_grpo.py [--rounds 5] [--device auto] [--bf16]
    .venv/bin/python benchmarks/bench_grpo.py --quick --out /tmp/bench      # smoke run on the CPU

Writes grpo_<device>.json and .md under --out (default benchmarks/results).  Needs ``trl`` (the dev extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import add_common_args, finish_machine_info, interleave, machine_info, machine_line, protocol_line
from harness import setup, sync, write_results

NAME = "grpo"
TARGET = 3.0                                    # ours / trl, the goal set for this work
PROMPTS, GROUP = 8, 8
SHAPES = {"gpt2": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024),
          "quick": dict(n_layer=2, n_head=4, n_embd=128, n_positions=256)}
VOCAB = 50257


def distinct_characters(prompt, completion: str, **fields) -> float:
    """The benchmark's reward: distinct characters of the completion / 100 (it differs within a group)."""
    return len(set(completion)) / 100


def model_directory(path: Path, shape: dict, questions: list[str]) -> Path:
    """A GPT-2-shaped Hugging Face directory: random weights (seed 0) and a byte-level BPE tokenizer
    learnt from the questions, filled up to GPT-2's 50,257 entries with extra tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(questions, trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(VOCAB - len(tokenizer))])
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, **shape, bos_token_id=eos, eos_token_id=eos,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def ours_step(model_dir: Path, new_tokens: int, device: torch.device, compile_decoding: bool, bf16: bool):
    """glassformer's step as ``train rl`` runs it: (the step, a list its calls add their seconds in sampling and
    scoring and in the update to)."""
    from glassformer.training.optim import adamw
    from glassformer.training.rl import NamedReward, RLSettings, Rollouts, rl_data, rl_loss
    from glassformer.training.posttrain import load_policy
    from glassformer.training.trainer import Trainer, TrainerConfig

    settings = RLSettings(base=str(model_dir), batch_size=PROMPTS, group=GROUP, max_new_tokens=new_tokens, lr=1e-5,
                          clip_norm=1.0, compile_sampling=compile_decoding, device=str(device), progress=False)
    policy = load_policy(settings)
    reward = NamedReward(distinct_characters, "distinct_characters")
    data = rl_data(settings, policy, reward)
    precision = "bf16" if bf16 else "fp32"
    stream = Rollouts(policy, data.rows["train"], data.prompts["train"], reward, settings, precision=precision)
    trainer = Trainer(policy.model, lambda m: adamw(m, settings.lr, 0.0), None, rl_loss(settings),
                      lambda m: {"loss": 0.0}, lambda path, m: None,
                      TrainerConfig(max_steps=10 ** 9, eval_every=10 ** 9, clip_norm=1.0, precision=precision),
                      tempfile.mkdtemp(), device)
    seconds: list[dict] = []

    def step() -> None:
        start = time.perf_counter()
        batch = next(stream)                         # (its completions are read back: the device is done)
        sampled = time.perf_counter()
        trainer.train_step([batch])
        sync(device)
        seconds.append({"generation": sampled - start, "update": time.perf_counter() - sampled,
                        "length": batch.figures["length"]})
    return step, seconds


def trl_step(model_dir: Path, new_tokens: int, device: torch.device, bf16: bool):
    """trl's step: ``GRPOTrainer.training_step`` on the next batch of its own dataloader, then the optimiser."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from glassformer.data.instructions import numbers_instructions
    from glassformer.tokenizers.chat import DEFAULT_CHAT_TEMPLATE, render

    questions = numbers_instructions("train", 4000)
    rows = [{"prompt": render(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": q.prompt}], True)} for q in questions]

    def reward(prompts, completions, **kwargs):
        return [distinct_characters(p, c) for p, c in zip(prompts, completions)]

    config = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=PROMPTS * GROUP,
                        num_generations=GROUP, max_completion_length=new_tokens, temperature=1.0, learning_rate=1e-5,
                        beta=0.0, epsilon=0.2, max_grad_norm=1.0, weight_decay=0.0, bf16=bf16,
                        use_cpu=device.type == "cpu", report_to="none", logging_steps=10 ** 9, save_strategy="no",
                        max_steps=10 ** 6, seed=0, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=reward, args=config,
                          train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(model_dir))
    trainer.create_optimizer_and_scheduler(num_training_steps=10 ** 6)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    batches = iter(trainer.get_train_dataloader())

    def step() -> None:
        trainer.training_step(trainer.model, next(batches), None)
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    return step


def markdown(r: dict) -> str:
    t, split = r["steps_per_s"], r["ours_split_s"]
    met = "met" if r["ratio"]["median"] >= r["target_ratio"] else "**not met**"
    return "\n".join([
        "# One GRPO step: glassformer `train rl` vs trl GRPOTrainer", "",
        f"{machine_line(r['machine'])}.  Model: {r['model']}.  {PROMPTS} prompts × a group of {GROUP}, up to "
        f"{r['new_tokens']} new tokens at temperature 1; β 0, ε 0.2, token-level loss, AdamW lr 1e-5, clipping 1.0; "
        f"{'bf16 autocast' if r['bf16'] else 'fp32'}; glassformer's decoding step "
        f"{'compiled (CUDA graphs)' if r['compiled_decoding'] else 'not compiled'}.", "",
        f"Timing: {protocol_line(r['protocol'])}.", "",
        "| | steps/s: median (best) | seconds per step (median) |", "| --- | ---: | ---: |",
        f"| glassformer | {t['ours']['median']:.3f} ({t['ours']['best']:.3f}) | {1 / t['ours']['median']:.2f} |",
        f"| trl GRPOTrainer | {t['trl']['median']:.3f} ({t['trl']['best']:.3f}) | {1 / t['trl']['median']:.2f} |", "",
        f"Ratio ours / trl: **{r['ratio']['median']:.2f}×** (best rounds {r['ratio']['best']:.2f}×; target ≥ "
        f"{r['target_ratio']}×: {met}).", "",
        "Where glassformer's step goes (medians over the timed steps): sampling and scoring "
        f"{split['generation']:.2f} s, "
        f"the update (forward, backward, AdamW) {split['update']:.2f} s; completions of {split['length']:.1f} tokens "
        "on average.", "",
        "Every round's figure is in the JSON file.", "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, rounds=5, warmup=2)
    parser.add_argument("--no-compile", action="store_true",
                        help="decode without compiling glassformer's step (it is compiled on a GPU by default)")
    args = parser.parse_args()
    device = setup(args)
    info = machine_info(device)
    from glassformer.data.instructions import numbers_instructions

    shape = SHAPES["quick" if args.quick else "gpt2"]
    new_tokens = 16 if args.quick else 64
    compile_decoding = device.type == "cuda" and not args.no_compile
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model_directory(Path(tmp) / "model", shape,
                                    [q.prompt + "\n" + q.answer for q in numbers_instructions("train", 4000)])
        ours, figures = ours_step(model_dir, new_tokens, device, compile_decoding, args.bf16)
        theirs = trl_step(model_dir, new_tokens, device, args.bf16)
        timings = interleave({"ours": ours, "trl": theirs}, rounds=args.rounds, warmup=args.warmup, device=device,
                             bf16=args.bf16)
    timed = figures[args.warmup:]
    result = {
        "benchmark": "one GRPO step: glassformer train rl vs trl GRPOTrainer", "machine": info, "quick": args.quick,
        "model": f"GPT-2-shaped GPT2LMHeadModel, {shape['n_layer']} layers, d_model {shape['n_embd']}, "
                 f"vocabulary {VOCAB:,}, random weights (seed 0)",
        "prompts": PROMPTS, "group": GROUP, "new_tokens": new_tokens, "bf16": args.bf16,
        "compiled_decoding": compile_decoding, "protocol": timings.protocol.to_dict(),
        "steps_per_s": {"ours": timings.rate("ours", 1, 4), "trl": timings.rate("trl", 1, 4)},
        "ratio": timings.ratio("ours", "trl"), "target_ratio": TARGET,
        "ours_split_s": {"generation": round(statistics.median(s["generation"] for s in timed), 3),
                         "update": round(statistics.median(s["update"] for s in timed), 3),
                         "length": round(statistics.mean(s["length"] for s in timed), 1)},
    }
    finish_machine_info(info)
    write_results(args.out, f"{NAME}_{device.type}", result, markdown(result))
    print(json.dumps({k: result[k] for k in ("steps_per_s", "ratio", "ours_split_s")}))


if __name__ == "__main__":
    main()
