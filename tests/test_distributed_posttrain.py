"""Post-training on every engine: ``finetune sft``, ``train dpo`` and ``train rl``, every weight trained or
LoRA adapters only, each trained for 3 steps by two processes (torchrun, gloo on the CPU) under DDP and under
FSDP, end with the weights that one process learns from the same global batch (4 micro-batches per step:
two per process, or all four in one), within 1e-5.

What each combination exercises: DPO's reference log-probabilities computed once before training (every
weight) or the same model with its adapters off, a second forward through the wrapped model (LoRA); RL's
rollouts sampled by the generation loop from the model being trained — under FSDP with its parameters
gathered whole while the trainer draws the batch — and its KL reference (β = 0.1: a frozen copy, or the
adapters off); LoRA's frozen base, which DDP must not reduce and FSDP shards beside the trained adapters,
and an adapter directory written from a sharded model.  A LoRA run's trained parameters are compared
(last/trained.safetensors: the adapters), with the adapter directory's own tensors.

The model has no biases: a key's bias has no gradient in exact arithmetic, and Adam turns the rounding noise
that stands for it into steps whose sign depends on the order of the sums (tests/test_distributed_tasks.py).
As there, the runs are made once: one torchrun runs the twelve distributed
trainings one after the other in one process group (this file is its script), while one other process
runs the six one-process references.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import TORCHRUN
from test_distributed_tasks import launch, run_all

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or TORCHRUN is None,
                                reason="torch.distributed or torchrun is not available")

TASKS = ("sft", "dpo", "rl")
KINDS = ("ddp", "fsdp")
VARIANTS = ("full", "lora")
STEPS = ["--steps", "3", "--eval-every", "3", "--log-every", "1", "--device", "cpu", "--grad-accum", "4",
         "--warmup", "1"]


def task_args(task: str, variant: str, data: Path) -> list[str]:
    """The command that trains ``task`` (``variant``: every weight, or LoRA adapters) on the files in ``data``."""
    lora = ["--lora", "--lora-r", "2", "--lora-targets", "q,v,out_proj"] if variant == "lora" else []
    return {
        "sft": ["finetune", "sft", "--model", f"{data}/base", "--data", f"{data}/sft.jsonl", "--batch-size", "2",
                "--lr", "1e-2"],
        "dpo": ["train", "dpo", "--model", f"{data}/base", "--data", f"{data}/dpo.jsonl", "--batch-size", "2",
                "--lr", "1e-2"],
        "rl": ["train", "rl", "--model", f"{data}/base", "--prompts", f"{data}/rl.jsonl", "--reward",
               f"{data}/toy_rewards.py:letters", "--group", "4", "--max-new-tokens", "3", "--batch-size", "2",
               "--beta", "0.1", "--eval-questions", "4", "--lr", "2e-3"],
    }[task] + lora + STEPS


def write_data(data: Path) -> None:
    from glassformer.model_dir import save_model_dir
    from glassformer.models import build_model, preset
    from glassformer.tokenizers import Tokenizer

    torch.manual_seed(0)
    tokenizer = Tokenizer.train_char(["User: Assistant: 0123456789+?abcd\n"])
    save_model_dir(data / "base", build_model(preset("gpt-tiny", vocab_size=tokenizer.vocab_size, bias=False)),
                   tokenizer)
    sums = [{"prompt": f"{a}+{b}?", "response": str(a + b)} for a in range(10) for b in range(4)]
    pairs = [{"prompt": f"{a}+{b}?", "chosen": str(a + b), "rejected": str(a + b + 1)} for a in range(10)
             for b in range(4)]
    prompts = [{"prompt": p} for p in ("a", "b", "c", "d", "ab", "cd", "abc", "bcd")]
    for name, rows in (("sft", sums), ("dpo", pairs), ("rl", prompts)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a reward that (almost) never ties a whole group: a redrawn group would draw differently in one process
    (data / "toy_rewards.py").write_text("def letters(prompt, completion):\n"
                                         "    return float(sum(map(ord, completion)) % 7)\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Every run, made once: ``TASK-VARIANT-ddp``, ``TASK-VARIANT-fsdp`` (two processes) and ``TASK-VARIANT-one``;
    ``resumed-fsdp`` and ``resumed-one``: a LoRA SFT run of 3 steps resumed for a fourth."""
    root = tmp_path_factory.mktemp("posttrain")
    write_data(root / "data")
    combos = [(t, v) for t in TASKS for v in VARIANTS]
    distributed = [[*task_args(t, v, root / "data"), "--distributed", k, "--out", str(root / f"{t}-{v}-{k}")]
                   for k in KINDS for t, v in combos]
    single = [[*task_args(t, v, root / "data"), "--out", str(root / f"{t}-{v}-one")] for t, v in combos]
    # a LoRA run of 3 steps resumed for a fourth: sharded, and in one process
    for runs_of_it, kind, flags in ((distributed, "fsdp", ["--distributed", "fsdp"]), (single, "one", [])):
        out = str(root / f"resumed-{kind}")
        runs_of_it += [[*task_args("sft", "lora", root / "data"), *flags, "--out", out],
                       ["finetune", "sft", "--resume", out, "--extend", "--steps", "4", *flags]]
    launch(root, __file__, distributed, single, timeout=600,
           pythonpath=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    return root


def trained(run: Path) -> dict[str, torch.Tensor]:
    """What the run trained: every weight (model.safetensors), or a LoRA run's adapters (trained.safetensors)."""
    last = run / "last"
    return load_file(str(last / ("trained.safetensors" if (last / "adapter_config.json").exists()
                                 else "model.safetensors")))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("task", TASKS)
def test_two_processes_learn_what_one_does(task, variant, kind, runs):
    one, two = trained(runs / f"{task}-{variant}-one"), trained(runs / f"{task}-{variant}-{kind}")
    assert one.keys() == two.keys()
    assert all(("lora_" in k) == (variant == "lora") for k in one)
    first = load_file(str(runs / "data" / "base" / "model.safetensors"))
    moved = max((one[k] - first[k]).abs().max().item() for k in one if k in first) if variant == "full" else \
        max(one[k].abs().max().item() for k in one if "lora_B" in k)
    assert moved > 1e-3                                                   # it learned something
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst <= 1e-5, f"largest difference {worst:.3g}"
    if variant == "lora":                                                # the adapters as written from the shards
        a, b = (load_file(str(runs / f"{task}-{variant}-{x}" / "last" / "adapter_model.safetensors"))
                for x in ("one", kind))
        assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_the_logged_figures_are_those_of_every_process(kind, runs):
    """RL's rewards and completion lengths of a step, logged by the main process, average every process's
    rollouts: the one-process run's figures (the same samples)."""
    def figures(run):
        records = [json.loads(line) for line in (runs / run / "log.jsonl").read_text().splitlines()]
        return [r[name] for r in records if r["kind"] == "train" for name in ("reward", "correct", "length", "loss")]

    for variant in VARIANTS:
        assert figures(f"rl-{variant}-{kind}") == pytest.approx(figures(f"rl-{variant}-one"), rel=1e-6)


def test_a_sharded_lora_run_resumes_as_one_process_does(runs):
    for run in ("resumed-fsdp", "resumed-one"):
        info = json.loads((runs / run / "last" / "training.json").read_text())
        records = [json.loads(line) for line in (runs / run / "log.jsonl").read_text().splitlines()]
        assert info["step"] == 4 and [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    one, two = trained(runs / "resumed-one"), trained(runs / "resumed-fsdp")
    assert one.keys() == two.keys() and max((one[k] - two[k]).abs().max().item() for k in one) <= 1e-5
    three = trained(runs / "sft-lora-one")
    assert max((one[k] - three[k]).abs().max().item() for k in one) > 1e-4       # the fourth step was taken


if __name__ == "__main__":
    sys.exit(run_all(sys.argv[1]))
