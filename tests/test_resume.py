"""A killed run resumes to exactly the run that never stopped; checkpoints are safe to crash in and to load.

Each run trains in its own process (tests/trainer_child.py), killed with SIGKILL where a real
run could die: between checkpoints, and in the middle of writing one.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glassformer.errors import CheckpointError
from glassformer.training.checkpoints import TRAINING_JSON, TRAINING_STATE, find_checkpoint, read_training_checkpoint
from glassformer.training.metrics import MetricsLog
from helpers import run_cli

CHILD = Path(__file__).with_name("trainer_child.py")
SHAKESPEARE = "tiny-shakespeare"          # the corpus shipped with glassformer


def child(task: str, out: Path, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, str(CHILD), task, str(out), *flags], capture_output=True, text=True,
                            env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def assert_bit_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module", params=["lm", "translation"])
def uninterrupted(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"straight-{request.param}") / "run"
    child(request.param, out)
    return request.param, out


def test_sigkill_then_resume_is_bit_identical(uninterrupted, tmp_path):
    task, straight = uninterrupted
    run = tmp_path / "run"
    killed = child(task, run, "--kill-at-step", "7", check=False)
    assert killed.returncode == -signal.SIGKILL
    info, _ = read_training_checkpoint(find_checkpoint(run))
    assert info["step"] == 4                                  # the last save before the kill
    resumed = child(task, run, "--resume")
    assert "done 12 resumed_from 4" in resumed.stdout
    assert_bit_identical(straight, run)
    # the log continues without the records of the lost steps 5-6 appearing twice
    steps = [(r["kind"], r["step"]) for r in MetricsLog.records(run)]
    assert len(steps) == len(set(steps)) and ("train", 12) in steps and ("eval", 12) in steps


def test_a_kill_during_a_save_leaves_the_previous_checkpoint(uninterrupted, tmp_path):
    task, straight = uninterrupted
    run = tmp_path / "run"
    killed = child(task, run, "--kill-in-save", "2", check=False)   # dies writing the step-8 checkpoint
    assert killed.returncode == -signal.SIGKILL
    info, state = read_training_checkpoint(find_checkpoint(run))    # the step-4 one, whole
    assert info["step"] == 4 and "optimizer" in state
    child(task, run, "--resume")
    assert_bit_identical(straight, run)
    assert not list(run.glob(".*.tmp-*"))                        # the killed save's half-written files are gone


def test_sigterm_saves_a_checkpoint_and_exits_non_zero(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, str(CHILD), "lm", str(run), "--sleep", "0.3", "--steps", "40"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (run / "log.jsonl").exists() or not (run / "last").exists():   # training, past its first save
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    time.sleep(0.7)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "SIGTERM" in err and "--resume" in err
    info, _ = read_training_checkpoint(find_checkpoint(run))
    assert 4 < info["step"] < 40                               # saved where it stopped, not at the last evaluation


def test_a_crafted_pickle_is_refused_and_runs_no_code(tmp_path):
    run = tmp_path / "run"
    child("lm", run, "--steps", "4")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(run / "last" / TRAINING_STATE, "wb") as f:
        pickle.dump({"optimizer": Exploit()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_training_checkpoint(run / "last")
    resumed = child("lm", run, "--resume", check=False)
    assert resumed.returncode != 0 and "refusing to load" in resumed.stderr
    assert not marker.exists()


def test_a_truncated_checkpoint_is_one_clear_line(tmp_path, capsys):
    run = tmp_path / "run"
    child("lm", run, "--steps", "4")
    state = run / "last" / TRAINING_STATE
    state.write_bytes(state.read_bytes()[:100])
    before = sorted(p.name for p in run.rglob("*"))
    code, _, err = run_cli(capsys, "train", "lm", "--resume", str(run))
    assert code != 0 and "truncated or corrupt" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in run.rglob("*")) == before      # the run directory is left as it was


def test_a_second_start_refuses_and_resume_finds_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "lm", "--data", str(SHAKESPEARE), "--preset", "gpt-tiny", "--block-size", "32",
            "--batch-size", "4", "--steps", "4", "--eval-every", "2", "--out", str(run)]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    log = (run / "log.jsonl").read_text()
    saved = weights(run)
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "already holds a training run saved at step 4" in err and "--resume" in err
    assert (run / "log.jsonl").read_text() == log                    # nothing replaced, nothing truncated
    assert all(torch.equal(saved[k], v) for k, v in weights(run).items())
    # --resume with no value continues the run in --out; a finished run has nothing left to do
    code, out, err = run_cli(capsys, *args, "--resume")
    assert code == 0 and "trained 4 steps" in out
    # more steps is a different run (the schedule depends on them): refused with what differs, unless --extend
    code, _, err = run_cli(capsys, *args[:-6], "--steps", "6", "--eval-every", "2", "--out", str(run), "--resume")
    assert code == 2 and "steps" in err and "differ" in err and "--extend" in err


def test_resuming_with_another_model_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    child("lm", run, "--steps", "4")
    code, _, err = run_cli(capsys, "train", "lm", "--resume", str(run), "--preset", "gpt-mini")
    assert code == 2 and "differs" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "train", "lm", "--resume", str(tmp_path / "nothing"))
    assert code == 2 and "no such run directory" in err
    assert not (tmp_path / "nothing").exists()


def test_checkpoint_files_hold_only_tensors_and_plain_values(tmp_path):
    run = tmp_path / "run"
    child("translation", run, "--steps", "4")
    last = find_checkpoint(run)
    assert (last / TRAINING_JSON).is_file()
    torch.load(last / TRAINING_STATE, weights_only=True)             # loads without unpickling any class
