"""Every training task on every engine: lm, translation, mlm, classify, vit and caption, each trained
for 4 steps by two processes (torchrun, gloo on the CPU) under DDP and under FSDP, end with the weights
that one process learns from the same global batch (4 micro-batches per step: two per process, the
first without synchronising gradients, or all four in one), within 1e-5.  Each task also trains in
bf16 autocast and compiled (``--precision bf16 --compile``): its losses are finite and close to
fp32's, and it saves a model that loads.

The runs are slow to start (a torchrun and its processes import torch), so they are made once: one
torchrun runs the twelve distributed trainings one after the other in the same process group (this
file is its script), while one other process runs the one-process references and the bf16 runs.
Compilation uses the ``aot_eager`` backend (Dynamo's tracing and AOT autograd, without generating C++
kernels, which takes half a minute per model on two CPU cores); ``GLASSFORMER_TEST_INDUCTOR=1`` uses
the default inductor backend, as ``test_trainer_numerics`` does for a GPT.

The translation model has no biases and a twentieth of the paper's learning rate: a key's bias has
no gradient in exact arithmetic (the softmax ignores what is added to every score of a query), so its
gradient is rounding noise, which Adam's ε = 1e-9 turns into steps of the learning rate's size whose
sign depends on the order of the sums; and with 2 warm-up steps the paper's rate is 0.125, which makes
Adam's normalised steps of other small gradients differ by more than 1e-5 for the same reason.
The texts of mlm and classify are words of one letter: Hugging Face's WordPiece trainer numbers the
"##" pieces in hash-map order, which differs from process to process, and a vocabulary of letters
has none.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glassformer.data.numbers import number_corpus
from test_distributed import TORCHRUN, assert_close_weights

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or TORCHRUN is None,
                                reason="torch.distributed or torchrun is not available")

TASKS = ("lm", "translation", "mlm", "classify", "vit", "caption")
KINDS = ("ddp", "fsdp")
STEPS = ["--steps", "4", "--eval-every", "2", "--log-every", "1", "--device", "cpu"]


def task_args(task: str, data: Path) -> list[str]:
    """The command that trains ``task`` on the files in ``data``: tiny models, 4 micro-batches per step."""
    return {
        "lm": ["train", "lm", "--data", f"{data}/text.txt", "--preset", "gpt-tiny", "--block-size", "16",
               "--batch-size", "2", "--grad-accum", "4", "--lr", "0.01"],
        "translation": ["train", "translation", "--src", f"{data}/pairs.tsv", "--preset", "vaswani-tiny",
                        "--vocab-size", "150", "--max-tokens", "200", "--config", f"{data}/accumulate.json"],
        "mlm": ["train", "mlm", "--data", f"{data}/letters.txt", "--preset", "bert-tiny", "--vocab-size", "60",
                "--block-size", "16", "--batch-size", "2", "--grad-accum", "4", "--lr", "3e-3"],
        "classify": ["finetune", "classify", "--train", f"{data}/train.csv", "--valid", f"{data}/valid.csv",
                     "--model", "bert-tiny", "--vocab-size", "100", "--batch-size", "2", "--grad-accum", "4",
                     "--lr", "3e-3"],
        "vit": ["train", "vit", "--dataset", "digits", "--preset", "vit-tiny", "--batch-size", "4",
                "--grad-accum", "4", "--lr", "3e-3"],
        "caption": ["train", "caption", "--dataset", "digits", "--preset", "caption-tiny", "--max-digits", "2",
                    "--batch-size", "4", "--grad-accum", "4", "--lr", "3e-3"],
    }[task] + STEPS


def write_data(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    (data / "text.txt").write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n"
                                           for i in range(300)))
    r = random.Random(0)
    (data / "letters.txt").write_text("".join(" ".join(r.choice("abcdefghijklmnop") for _ in range(r.randint(6, 14)))
                                              + "\n" for _ in range(300)))

    def rows(n: int) -> str:
        lines = []
        for _ in range(n):
            words = [r.choice("abcdefgh") for _ in range(r.randint(3, 8))]
            lines.append(f'"{" ".join(words)}",{"pos" if words.count("a") >= words.count("b") else "neg"}\n')
        return "text,label\n" + "".join(lines)

    (data / "train.csv").write_text(rows(40))
    (data / "valid.csv").write_text(rows(10))
    corpus = number_corpus("de", "en", max_number=299, n_valid=20, n_test=20, seed=0)
    (data / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in corpus.train))
    (data / "accumulate.json").write_text(json.dumps({"grad_accum": 4, "warmup": 2, "lr_factor": 0.05,
                                                      "model": {"bias": False}}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Every run, made once: ``TASK-ddp``, ``TASK-fsdp`` (two processes), ``TASK-one`` (one process,
    fp32) and ``TASK-bf16`` (one process, bf16 autocast, compiled; 2 steps: each batch shape of the
    translation task is one more compilation)."""
    root = tmp_path_factory.mktemp("tasks")
    write_data(root / "data")
    distributed = [[*task_args(t, root / "data"), "--distributed", k, "--out", str(root / f"{t}-{k}")]
                   for k in KINDS for t in TASKS]
    single = [[*task_args(t, root / "data"), "--out", str(root / f"{t}-one")] for t in TASKS]
    single += [[*task_args(t, root / "data"), "--precision", "bf16", "--compile", "--steps", "2", "--out",
                str(root / f"{t}-bf16")] for t in TASKS]
    launch(root, __file__, distributed, single, timeout=900)
    return root


def launch(root: Path, script: str, distributed: list[list[str]], single: list[list[str]], *,
           timeout: int, pythonpath: str = str(ROOT)) -> None:
    """Run the ``glassformer`` command lines of ``distributed`` under torchrun (2 processes) and those
    of ``single`` in one process, both at once, each side through ``script``'s :func:`run_all`;
    fail showing the end of the log of a side that failed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    commands = {"distributed": [TORCHRUN, "--standalone", "--nproc-per-node", "2", script],
                "single": [sys.executable, script]}
    running = {}
    for name, runs_of_it in (("distributed", distributed), ("single", single)):
        (root / f"{name}.json").write_text(json.dumps(runs_of_it))
        with open(root / f"{name}.log", "w") as log:
            running[name] = subprocess.Popen([*commands[name], str(root / f"{name}.json")], stdout=log,
                                             stderr=subprocess.STDOUT, env=env, cwd=root)
    for name, process in running.items():
        code = process.wait(timeout=timeout)
        assert code == 0, f"{name} runs failed:\n" + (root / f"{name}.log").read_text()[-4000:]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", TASKS)
def test_two_processes_learn_what_one_does(task, kind, runs):
    assert_close_weights(runs / f"{task}-one", runs / f"{task}-{kind}")


def train_losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]       # (the first is step 1's own loss)


@pytest.mark.parametrize("task", TASKS)
def test_bf16_compiled_training_tracks_fp32_and_saves_a_model_that_loads(task, runs):
    from glassformer.model_dir import load_model_dir

    fp32, bf16 = train_losses(runs / f"{task}-one"), train_losses(runs / f"{task}-bf16")
    assert len(fp32) == 4 and len(bf16) == 2 and all(math.isfinite(x) for x in bf16)
    # the first step's loss is of the same weights on the same batch: only bf16's rounding differs
    assert bf16[0] == pytest.approx(fp32[0], rel=2e-2)
    loaded = load_model_dir(runs / f"{task}-bf16" / "last")
    assert all(torch.isfinite(t).all() for t in loaded.model.state_dict().values() if t.is_floating_point())
    assert loaded.model.state_dict().keys() == load_model_dir(runs / f"{task}-one" / "last").model.state_dict().keys()


def run_all(runs_file: str) -> int:
    """This file as torchrun's script (or one process's): run the ``glassformer`` commands listed in
    ``runs_file`` one after the other; under torchrun in one process group that outlives them."""
    import torch.distributed as dist

    from glassformer.cli.main import main

    if not os.environ.get("GLASSFORMER_TEST_INDUCTOR"):
        torch.compile = functools.partial(torch.compile, backend="aot_eager")
    grouped = "RANK" in os.environ
    if grouped:
        dist.init_process_group("gloo")
    try:
        for args in json.loads(Path(runs_file).read_text()):
            code = main(args)
            if code:
                print(f"exit {code}: glassformer {' '.join(args)}", flush=True)
                return code
    finally:
        if grouped:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(run_all(sys.argv[1]))
