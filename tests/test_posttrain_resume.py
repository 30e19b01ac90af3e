"""A LoRA run resumes as a full run does: its checkpoint (an adapter directory) also holds the trained
parameters (trained.safetensors), and a resumed run rebuilds the frozen base from the directory its
settings name.  Interrupted after half its steps (as by a SIGTERM) and resumed, an SFT run ends with the
very adapters and log of the run that never stopped, bit for bit; DPO and RL runs (each with its
reference: the base, adapters off) end equal too.  A checkpoint whose trained parameters are not this
model's is refused in one line."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from helpers import one_line_error, run_cli, untrained_gpt
from safetensors.torch import load_file, save_file

from glassformer.errors import TrainingInterrupted
from glassformer.training.checkpoints import TRAINED
from glassformer.training.trainer import Trainer

LORA = {"r": 2, "alpha": 4.0, "dropout": 0.1}          # dropout: the random generators must resume too
COMMON = dict(steps=4, eval_every=2, log_every=1, batch_size=4, lr=1e-2, warmup=1, progress=False, device="cpu",
              lora=LORA)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("posttrain-resume")
    base = untrained_gpt(root / "base", "User: Assistant: 0123456789+?abcd\n")
    sums = [{"prompt": f"{a}+{b}?", "response": str(a + b)} for a in range(10) for b in range(4)]
    pairs = [{"prompt": f"{a}+{b}?", "chosen": str(a + b), "rejected": str(a + b + 1)} for a in range(10)
             for b in range(4)]
    prompts = [{"prompt": p} for p in ("a", "b", "c", "d", "ab", "cd")]
    for name, rows in (("sft", sums), ("dpo", pairs), ("rl", prompts)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "toy_rewards.py").write_text("def letters(prompt, completion):\n"
                                         "    return float(sum(map(ord, completion)) % 7)\n")
    return root, base


def run_task(task: str, files, out, *, resume: bool = False):
    """Train ``task`` with LoRA on the toy files (``resume``: continue ``out``)."""
    root, base = files
    if task == "sft":
        from glassformer.training.sft import finetune_sft
        return finetune_sft(None if resume else root / "sft.jsonl", None if resume else {**COMMON, "base": str(base)},
                            out, resume=resume)
    if task == "dpo":
        from glassformer.training.dpo import train_dpo
        return train_dpo(None if resume else root / "dpo.jsonl", None if resume else {**COMMON, "base": str(base)},
                         out, resume=resume)
    from glassformer.training.rl import train_rl
    settings = {**COMMON, "base": str(base), "data": str(root / "rl.jsonl"), "reward": f"{root}/toy_rewards.py:letters",
                "group": 4, "max_new_tokens": 3, "beta": 0.1, "eval_questions": 4}
    return train_rl(None if resume else settings, out, resume=resume)


def interrupted_after(step: int, monkeypatch) -> None:
    """Every run from now on is stopped after ``step`` steps as by a SIGTERM: it saves last/ and raises."""
    original = Trainer.train_step

    def train_step(self, batches):
        out = original(self, batches)
        if self.step + 1 == step:
            self._signal = signal.SIGTERM
        return out

    monkeypatch.setattr(Trainer, "train_step", train_step)


def train_records(run) -> list[dict]:
    """The "train" records of log.jsonl, without the timings (which differ from run to run)."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("elapsed", "pairs_per_s", "tokens_per_s", "generation_s",
                                                      "update_s", "completion_tokens_per_s")}
            for r in records if r["kind"] == "train"]


@pytest.mark.parametrize("task", ["sft", "dpo", "rl"])
def test_an_interrupted_lora_run_resumes_to_the_run_that_never_stopped(task, files, tmp_path, monkeypatch):
    whole = run_task(task, files, tmp_path / "whole")
    interrupted_after(2, monkeypatch)
    with pytest.raises(TrainingInterrupted):
        run_task(task, files, tmp_path / "cut")
    monkeypatch.undo()
    assert (tmp_path / "cut" / "last" / "adapter_config.json").is_file()
    assert not (tmp_path / "cut" / "last" / "model.safetensors").exists()      # the base is not copied
    resumed = run_task(task, files, tmp_path / "cut", resume=True)
    assert resumed.result.resumed_from == 2 and resumed.result.steps == whole.result.steps == 4
    straight, again = (load_file(str(run / "last" / TRAINED)) for run in (tmp_path / "whole", tmp_path / "cut"))
    assert straight.keys() == again.keys() and all("lora_" in k for k in straight)
    assert any(not torch.equal(t, torch.zeros_like(t)) for k, t in straight.items() if "lora_B" in k)   # it learned
    different = [k for k in straight if not torch.equal(straight[k], again[k])]
    assert not different, f"{len(different)} adapter tensors differ, e.g. {different[:2]}"
    # the saved adapters themselves (peft's layout; the file's header order is the writer's hash map's), and the
    # log: every step's loss, gradient norm and figures
    saved = [load_file(str(tmp_path / run / "last" / "adapter_model.safetensors")) for run in ("whole", "cut")]
    assert saved[0].keys() == saved[1].keys() and all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])
    assert train_records(tmp_path / "cut") == train_records(tmp_path / "whole")


def test_resuming_from_trained_parameters_of_another_model_is_one_line(files, tmp_path, capsys):
    root, base = files
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "finetune", "sft", "--model", base, "--data", root / "sft.jsonl", "--out", out,
                           "--steps", 2, "--eval-every", 2, "--batch-size", 4, "--device", "cpu", "--lora",
                           "--lora-r", 2)
    assert code == 0, err
    file = out / "last" / TRAINED
    trained = load_file(str(file))
    code, _, err = run_cli(capsys, "finetune", "sft", "--resume", out, "--extend", "--steps", 3)
    assert code == 0, err                                             # a LoRA run resumes from the command line
    first = sorted(trained)[0]
    save_file({k: v for k, v in trained.items() if k != first}, str(file))
    code, _, err = run_cli(capsys, "finetune", "sft", "--resume", out, "--extend", "--steps", 4)
    one_line_error(code, err, "does not hold this model's trained parameters", first)
    save_file({**trained, first: torch.zeros(3, 3)}, str(file))
    code, _, err = run_cli(capsys, "finetune", "sft", "--resume", out, "--extend", "--steps", 4)
    one_line_error(code, err, f"{first} has shape [3, 3]")


def test_resuming_a_lora_run_whose_base_weights_changed_is_one_line(files, tmp_path, capsys):
    root, _ = files
    base = untrained_gpt(tmp_path / "base", "User: Assistant: 0123456789+?abcd\n")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "finetune", "sft", "--model", base, "--data", root / "sft.jsonl", "--out", out,
                           "--steps", 2, "--eval-every", 2, "--batch-size", 4, "--device", "cpu", "--lora",
                           "--lora-r", 2)
    assert code == 0, err
    weights = load_file(str(base / "model.safetensors"))        # the base retrained in place: other weights
    first = sorted(weights)[0]
    save_file({**weights, first: weights[first] + 1}, str(base / "model.safetensors"))
    code, _, err = run_cli(capsys, "finetune", "sft", "--resume", out, "--extend", "--steps", 3)
    one_line_error(code, err, "cannot resume", "base_weights")
