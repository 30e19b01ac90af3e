"""One GRPO step: glassformer's ``train rl`` against trl's GRPOTrainer, same model, same prompts, one run.

A step on each side is the whole of what an RL step costs: sample a group of completions for each
prompt, score them, compute the advantages, then the clipped-ratio loss through the model's forward,
its backward, gradient clipping at 1.0 and an AdamW step.  The work is the same on both sides:

* **the model**: one GPT-2-shaped Hugging Face ``GPT2LMHeadModel`` with GPT-2's vocabulary of 50,257, random
  weights from a seed, saved as a Hugging Face directory; trl trains it as it is, glassformer reads the same
  directory through its converter (``load_model_dir``).  ``--shape``: ``gpt2`` (124M: 12 layers, 12 heads,
  d_model 768; the default on a GPU), ``small`` (6 layers, 6 heads, d_model 384, 30M of which 19M are the
  embedding: the default on the CPU, where one 124M step takes minutes); ``--quick``: 2 layers, d_model 128;
* **the prompts**: the first 8 built-in numbers-instruct training questions, rendered by the default chat
  template, the same 8 at every step on both sides (trl: a dataset of them in order, not shuffled;
  glassformer: its rollouts draw them), a group of 8 completions of each, of exactly 64 new tokens
  (``--quick``: 16), sampled at temperature 1 (no top-k / top-p).  The end-of-sequence token is held back
  until the last of them on both sides (trl: ``min_new_tokens`` in its generation config; glassformer:
  the sampling options' ``min_new_tokens``): a random model samples it now and then, and a side that
  stopped early would do less work; the mean completion length each side generated is recorded;
* **the reward**: the number of distinct characters of the completion / 100 — a reward that differs
  between the completions of a group, so that, as in a run that learns, no group is skipped (a random
  model answers no question right: the exact-answer reward would give glassformer empty steps);
* **the update**: β = 0 (no reference model), ε = 0.2, token-level normalisation, lr 1e-5, clipping 1.0,
  fp32 (``--bf16``: autocast on both sides), no gradient checkpointing on either side (trl's GRPOConfig
  turns it on by default; glassformer has none: it is turned off, so both backward passes do the same work).
  trl: ``GRPOTrainer.training_step`` (its generation through ``transformers``' ``generate`` with a growing
  cache, scoring, loss, backward) then the optimiser step;
  glassformer: ``Rollouts`` (one static KV cache, compiled with CUDA graphs on a GPU unless
  ``--no-compile``) then ``Trainer.train_step``.

Timed with the shared harness (ABBA order, equal warm-up, the median over rounds as the headline).
Also recorded, per side (medians over the timed steps, by wall-clock timers around each side's own
functions): the seconds in generation (glassformer's ``sample_completions``, trl's
``_generate_single_turn``), in scoring (the rest of the rollout: decoding the text, the rewards, the
advantages, padding), in the loss's forward and backward (glassformer's ``Trainer.accumulate``, trl's
``training_step`` less its ``_prepare_inputs``) and in clipping and the AdamW step.

    .venv/bin/python benchmarks/bench_grpo.py [--rounds 5] [--device auto] [--bf16]   # on a GPU: the 124M shape
    .venv/bin/python benchmarks/bench_grpo.py --device cpu                 # on the CPU: --shape small
    .venv/bin/python benchmarks/bench_grpo.py --quick --out /tmp/bench      # smoke run on the CPU

Writes grpo_<device>.json and .md under --out (default benchmarks/results).  Needs ``trl`` (the dev extra).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import harness  # noqa: F401  (puts the checkout on sys.path)
from harness import add_common_args, finish_machine_info, interleave, machine_info, machine_line, protocol_line
from harness import setup, sync, write_results

NAME = "grpo"
TARGET = 3.0                                    # ours / trl, the goal set for this work
PROMPTS, GROUP = 8, 8
SHAPES = {"gpt2": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024),     # GPT-2 124M: the GPU default
          "small": dict(n_layer=6, n_head=6, n_embd=384, n_positions=1024),     # 30M: the CPU default
          "quick": dict(n_layer=2, n_head=4, n_embd=128, n_positions=256)}
VOCAB = 50257


def distinct_characters(prompt, completion: str, **fields) -> float:
    """The benchmark's reward: distinct characters of the completion / 100 (it differs within a group)."""
    return len(set(completion)) / 100


class Clock:
    """Seconds per part of a step, by wall-clock timers around functions: ``wrap(name, f)`` is ``f`` adding
    the seconds of each call to ``name``; ``close()`` ends a step (its parts, as a dict)."""

    def __init__(self, device: torch.device):
        self.device, self.part, self.steps = device, defaultdict(float), []

    def wrap(self, name: str, function):
        def timed(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            out = function(*args, **kwargs)
            sync(self.device)
            self.part[name] += time.perf_counter() - start
            return out
        return timed

    def close(self, **figures) -> None:
        self.steps.append({**self.part, **figures})
        self.part = defaultdict(float)


def split(steps: list[dict], parts: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """The median over ``steps`` of each part, ``parts``: name -> (the timer it is, less the timers it includes)."""
    return {name: round(statistics.median(s[whole] - sum(s[p] for p in less) for s in steps), 3)
            for name, (whole, *less) in parts.items()}


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
    """glassformer's step as ``train rl`` runs it: (the step, the Clock of its parts).  The sampling options hold
    the end-of-sequence token back until the last new token (``min_new_tokens``), as trl's do here."""
    from glassformer.training import rl
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
    stream = Rollouts(policy, data.rows["train"][:PROMPTS], data.prompts["train"][:PROMPTS], reward, settings,
                      precision=precision)
    stream.draw = lambda: list(range(PROMPTS))      # the same prompts at every step, as trl's side has them
    stream.options = dataclasses.replace(stream.options, min_new_tokens=new_tokens)
    trainer = Trainer(policy.model, lambda m: adamw(m, settings.lr, 0.0), None, rl_loss(settings),
                      lambda m: {"loss": 0.0}, lambda path, m: None,
                      TrainerConfig(max_steps=10 ** 9, eval_every=10 ** 9, clip_norm=1.0, precision=precision),
                      tempfile.mkdtemp(), device)
    clock = Clock(device)
    rl.sample_completions = clock.wrap("generation", rl.sample_completions)     # (what Rollouts.rollout calls)
    trainer.accumulate = clock.wrap("forward_backward", trainer.accumulate)     # (what train_step calls)
    rollout, update = clock.wrap("rollout", next), clock.wrap("update", trainer.train_step)

    def step() -> None:
        batch = rollout(stream)
        update([batch])
        clock.close(length=batch.figures["length"])
    return step, clock


def trl_step(model_dir: Path, new_tokens: int, device: torch.device, bf16: bool):
    """trl's step: ``GRPOTrainer.training_step`` on the next batch of its own dataloader, then the optimiser:
    (the step, the Clock of its parts)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from glassformer.data.instructions import numbers_instructions
    from glassformer.tokenizers.chat import DEFAULT_CHAT_TEMPLATE, render

    questions = numbers_instructions("train", 4000)[:PROMPTS]
    rows = [{"prompt": render(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": q.prompt}], True)} for q in questions]
    rows = rows * 1000                  # each batch: the 8 prompts in order (not shuffled), for 1,000 steps

    def reward(prompts, completions, **kwargs):
        return [distinct_characters(p, c) for p, c in zip(prompts, completions)]

    config = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=PROMPTS * GROUP,
                        num_generations=GROUP, max_completion_length=new_tokens, temperature=1.0, learning_rate=1e-5,
                        generation_kwargs={"min_new_tokens": new_tokens}, activation_checkpointing=False,
                        beta=0.0, epsilon=0.2, max_grad_norm=1.0, weight_decay=0.0, bf16=bf16,
                        use_cpu=device.type == "cpu", report_to="none", logging_steps=10 ** 9, save_strategy="no",
                        max_steps=10 ** 6, seed=0, dataloader_num_workers=0, shuffle_dataset=False)
    assert not config.gradient_checkpointing, "trl's side must not recompute activations (glassformer does not)"
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=reward, args=config,
                          train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(model_dir))
    trainer.create_optimizer_and_scheduler(num_training_steps=10 ** 6)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    batches = iter(trainer.get_train_dataloader())
    clock, lengths = Clock(device), []
    generate_one_turn = clock.wrap("generation", trainer._generate_single_turn)

    def generation(*args, **kwargs):
        completions, logprobs = generate_one_turn(*args, **kwargs)
        lengths.extend(len(c) for c in completions)
        return completions, logprobs
    trainer._generate_single_turn = generation
    trainer._prepare_inputs = clock.wrap("rollout", trainer._prepare_inputs)    # (what training_step calls)
    training_step = clock.wrap("training_step", trainer.training_step)

    def optimizer_step() -> None:
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    optimizer_step = clock.wrap("optimizer", optimizer_step)

    def step() -> None:
        training_step(trainer.model, next(batches), None)
        optimizer_step()
        clock.close(length=statistics.mean(lengths))
        lengths.clear()
    return step, clock


PARTS = {  # each side's parts of a step: name -> (its timer, less the timers inside it)
    "ours": {"generation": ("generation",), "scoring": ("rollout", "generation"),
             "forward_backward": ("forward_backward",), "optimizer": ("update", "forward_backward")},
    "trl": {"generation": ("generation",), "scoring": ("rollout", "generation"),
            "forward_backward": ("training_step", "rollout"), "optimizer": ("optimizer",)},
}
PART_NAMES = {"generation": "generation", "scoring": "scoring (rewards, advantages, padding)",
              "forward_backward": "loss forward + backward", "optimizer": "clipping + AdamW step"}


def markdown(r: dict) -> str:
    t, split_s, length = r["steps_per_s"], r["split_s"], r["completion_length"]
    met = "met" if r["ratio"]["median"] >= r["target_ratio"] else "**not met**"
    return "\n".join([
        "# One GRPO step: glassformer `train rl` vs trl GRPOTrainer", "",
        f"{machine_line(r['machine'])}.  Model ({r['shape']}): {r['model']}.  {PROMPTS} prompts × a group of "
        f"{GROUP}, {r['new_tokens']} new tokens each (end-of-sequence held back until the last on both sides) at "
        f"temperature 1; β 0, ε 0.2, token-level loss, AdamW lr 1e-5, clipping 1.0; "
        f"{'bf16 autocast' if r['bf16'] else 'fp32'}; no gradient checkpointing; glassformer's decoding step "
        f"{'compiled (CUDA graphs)' if r['compiled_decoding'] else 'not compiled'}.", "",
        f"Timing: {protocol_line(r['protocol'])}.", "",
        "| | steps/s: median (best) | seconds per step (median) | completion tokens (mean) |",
        "| --- | ---: | ---: | ---: |",
        f"| glassformer | {t['ours']['median']:.3f} ({t['ours']['best']:.3f}) | {1 / t['ours']['median']:.2f} | "
        f"{length['ours']:.1f} |",
        f"| trl GRPOTrainer | {t['trl']['median']:.3f} ({t['trl']['best']:.3f}) | {1 / t['trl']['median']:.2f} | "
        f"{length['trl']:.1f} |", "",
        f"Ratio ours / trl: **{r['ratio']['median']:.2f}×** (best rounds {r['ratio']['best']:.2f}×; target ≥ "
        f"{r['target_ratio']}×: {met}).", "",
        "Where a step goes (seconds, medians over the timed steps; wall-clock timers around each side's "
        "functions):", "",
        "| part | glassformer | trl |", "| --- | ---: | ---: |",
        *[f"| {PART_NAMES[p]} | {split_s['ours'][p]:.2f} | {split_s['trl'][p]:.2f} |" for p in PART_NAMES], "",
        "Every round's figure is in the JSON file.", "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, rounds=5, warmup=2)
    parser.add_argument("--shape", choices=("auto", "gpt2", "small"), default="auto",
                        help="the model: gpt2 (124M), small (6 layers, d_model 384); auto (default): gpt2 on a GPU, "
                             "small on the CPU (--quick: 2 layers, d_model 128)")
    parser.add_argument("--no-compile", action="store_true",
                        help="decode without compiling glassformer's step (it is compiled on a GPU by default)")
    args = parser.parse_args()
    device = setup(args)
    info = machine_info(device)
    from glassformer.data.instructions import numbers_instructions

    shape_name = "quick" if args.quick else args.shape if args.shape != "auto" else \
        "gpt2" if device.type == "cuda" else "small"
    shape = SHAPES[shape_name]
    new_tokens = 16 if args.quick else 64
    compile_decoding = device.type == "cuda" and not args.no_compile
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model_directory(Path(tmp) / "model", shape,
                                    [q.prompt + "\n" + q.answer for q in numbers_instructions("train", 4000)])
        ours, ours_clock = ours_step(model_dir, new_tokens, device, compile_decoding, args.bf16)
        theirs, trl_clock = trl_step(model_dir, new_tokens, device, args.bf16)
        timings = interleave({"ours": ours, "trl": theirs}, rounds=args.rounds, warmup=args.warmup, device=device,
                             bf16=args.bf16)
    timed = {"ours": ours_clock.steps[args.warmup:], "trl": trl_clock.steps[args.warmup:]}
    result = {
        "benchmark": "one GRPO step: glassformer train rl vs trl GRPOTrainer", "machine": info, "quick": args.quick,
        "shape": shape_name, "model_shape": {**shape, "vocab_size": VOCAB},
        "model": f"GPT-2-shaped GPT2LMHeadModel, {shape['n_layer']} layers, {shape['n_head']} heads, d_model "
                 f"{shape['n_embd']}, vocabulary {VOCAB:,}, random weights (seed 0)",
        "prompts": PROMPTS, "group": GROUP, "new_tokens": new_tokens, "min_new_tokens": new_tokens, "bf16": args.bf16,
        "gradient_checkpointing": False, "compiled_decoding": compile_decoding, "protocol": timings.protocol.to_dict(),
        "steps_per_s": {"ours": timings.rate("ours", 1, 4), "trl": timings.rate("trl", 1, 4)},
        "ratio": timings.ratio("ours", "trl"), "target_ratio": TARGET,
        "completion_length": {side: round(statistics.mean(s["length"] for s in steps), 1)
                              for side, steps in timed.items()},
        "split_s": {side: split(steps, PARTS[side]) for side, steps in timed.items()},
        "steps_s": {side: [{k: round(v, 3) for k, v in s.items()} for s in steps] for side, steps in timed.items()},
    }
    finish_machine_info(info)
    write_results(args.out, f"{NAME}_{device.type}", result, markdown(result))
    print(json.dumps({k: result[k] for k in ("shape", "steps_per_s", "ratio", "completion_length", "split_s")}))


if __name__ == "__main__":
    main()
