"""Never destroy what a user already has: commands that write a model directory refuse an OUT that
holds something (``--force`` replaces it, but never a training run, the current directory or what the
command reads); saves leave nothing behind; SIGTERM cleans up like Ctrl-C; a path that cannot be read
or written is named as the user gave it, with what is wrong with it."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glassformer.errors import ConfigError, InputError
from glassformer.files import read_json, write_atomically, write_text_atomically
from glassformer.model_dir import load_model_dir, read_config, save_model_dir
from glassformer.models import build_model, preset
from glassformer.training.checkpoints import TRAINING_JSON, TRAINING_STATE
from helpers import one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("trainer_child.py")


def tiny_model_dir(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_model_dir(path, build_model(preset("gpt-tiny")))


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture
def models(tmp_path):
    return tiny_model_dir(tmp_path / "a", 1), tiny_model_dir(tmp_path / "b", 2)


@pytest.fixture
def run_dir(tmp_path):
    """A training run as a user has it: checkpoints to average, best/, a log."""
    run = tmp_path / "run"
    for step in (1, 2):
        tiny_model_dir(run / "checkpoints" / f"step-{step:08d}", step)
    shutil.copytree(run / "checkpoints" / "step-00000002", run / "best")
    (run / "log.jsonl").write_text('{"kind": "eval", "step": 2, "loss": 1.0}\n')
    return run


# -- 1. an OUT that holds something is refused, before any work ------------------------------------
def test_average_checkpoints_keeps_a_folder_of_the_users_files(tmp_path, models, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    code, _, err = run_cli(capsys, "average-checkpoints", mine, *models)
    one_line_error(code, err, str(mine), "--force")
    assert (mine / "notes.txt").read_text() == "precious" and listing(mine) == ["notes.txt"]
    code, _, err = run_cli(capsys, "average-checkpoints", mine, *models, "--force")
    assert code == 0, err
    assert not (mine / "notes.txt").exists() and read_config(mine).family == "gpt"


def test_convert_keeps_a_file_and_replaces_it_only_with_force(tmp_path, models, capsys):
    target = tmp_path / "target"
    target.write_text("a file of mine")
    code, _, err = run_cli(capsys, "convert", models[0], target, "--to", "hf")
    one_line_error(code, err, str(target), "is a file", "--force")
    assert target.read_text() == "a file of mine"
    code, _, err = run_cli(capsys, "convert", models[0], target, "--to", "hf", "--force")
    assert code == 0, err
    assert (target / "config.json").is_file()


def test_a_training_run_is_never_replaced_not_even_with_force(tmp_path, run_dir, models, capsys):
    before = listing(run_dir)
    for args, words in ((["average-checkpoints", run_dir, "--last", "2", run_dir, "--force"], "reads"),
                        (["average-checkpoints", run_dir, *models, "--force"], "never replaced"),
                        (["convert", models[0], run_dir, "--to", "hf", "--force"], "never replaced")):
        code, _, err = run_cli(capsys, *args)
        one_line_error(code, err, str(run_dir), words)
        assert listing(run_dir) == before, args


def test_out_that_is_or_holds_a_source_is_refused(tmp_path, models, capsys):
    code, _, err = run_cli(capsys, "convert", models[0], models[0], "--to", "hf", "--force")
    one_line_error(code, err, "reads")
    code, _, err = run_cli(capsys, "average-checkpoints", tmp_path, *models, "--force")
    one_line_error(code, err, "reads")
    assert load_model_dir(models[0]).config.family == "gpt"


def test_the_output_is_checked_before_any_model_is_loaded(tmp_path, models, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(models[0], broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "x").write_text("x")
    code, _, err = run_cli(capsys, "convert", broken, mine, "--to", "hf")
    one_line_error(code, err, str(mine), "--force")             # about OUT, not about the broken weights


def test_the_current_directory_is_refused_cleanly(tmp_path, models, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for flags in ([], ["--force"]):
        code, _, err = run_cli(capsys, "convert", models[0], ".", "--to", "hf", *flags)
        one_line_error(code, err, "current directory", "not even with --force")
        code, _, err = run_cli(capsys, "convert", models[0], "..", "--to", "hf", *flags)
        one_line_error(code, err, "above the current directory")
    assert listing(work) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "work"]


def test_an_empty_output_directory_is_used(tmp_path, models, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "convert", models[0], empty, "--to", "hf")
    assert code == 0, err
    assert (empty / "config.json").is_file()


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_failed_rename_puts_the_old_directory_back_and_leaves_nothing(tmp_path, monkeypatch, failing_call):
    target = tmp_path / "out"
    write_atomically(target, lambda d: (d / "a.txt").write_text("old"))
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == failing_call:              # 1: moving the old one aside; 2: the new one into place
            raise OSError(errno.EBUSY, "Device or resource busy", str(src), None, str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(ConfigError, match=f"cannot write {target}: Device or resource busy"):
        write_atomically(target, lambda d: (d / "a.txt").write_text("new"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]       # no empty .out.old-*, no .out.tmp-*


# -- 2. --last K RUN_DIR without OUT writes RUN_DIR/averaged ---------------------------------------
def test_last_k_without_out_writes_into_the_run(run_dir, capsys):
    code, out, err = run_cli(capsys, "average-checkpoints", "--last", "2", run_dir)
    assert code == 0, err
    averaged = run_dir / "averaged"
    assert str(averaged) in out
    first, second = (load_model_dir(run_dir / "checkpoints" / f"step-{s:08d}").model for s in (1, 2))
    got = load_model_dir(averaged).model
    for (name, p), q1, q2 in zip(got.named_parameters(), first.parameters(), second.parameters()):
        assert torch.allclose(p, (q1 + q2) / 2, atol=1e-7), name
    code, _, err = run_cli(capsys, "average-checkpoints", "--last", "2", run_dir)    # a second time: refused
    one_line_error(code, err, str(averaged), "--force")
    code, _, err = run_cli(capsys, "average-checkpoints", "--last", "2", run_dir, "--force")
    assert code == 0, err


# -- 3. resuming removes every leftover of a killed save -------------------------------------------
def _training_checkpoint(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in (TRAINING_JSON, TRAINING_STATE, "model.safetensors"):
        (path / name).write_text("{}")
    return path


def test_remove_unfinished_saves_keeps_only_the_checkpoint_a_resume_needs(tmp_path):
    from glassformer.training.checkpoints import remove_unfinished_saves

    run = tmp_path / "run"
    _training_checkpoint(run / "last")
    for leftover in (".best.old-1/x", ".last.old-2/x", ".best.tmp-3", "checkpoints/.step-00000004.tmp-5"):
        _training_checkpoint(run / leftover)
    (run / ".log.jsonl.tmp-6").write_text("half")
    (run / ".best.old-7").mkdir()                           # killed between mkdtemp and the rename
    remove_unfinished_saves(run)
    assert listing(run) == ["checkpoints", "last", *(f"last/{n}" for n in sorted(
        [TRAINING_JSON, TRAINING_STATE, "model.safetensors"]))]
    # with last/ not whole, the .last.old-*/x a resume reads is what stays
    shutil.rmtree(run / "last")
    _training_checkpoint(run / ".last.old-8/x")
    _training_checkpoint(run / ".best.old-9/x")
    remove_unfinished_saves(run)
    assert sorted(p.name for p in run.iterdir()) == [".last.old-8", "checkpoints"]


def test_resume_after_a_kill_leaves_no_old_or_tmp_directories(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(CHILD), "lm", str(run), "--kill-at-step", "7"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # what a SIGKILL between the steps of write_atomically leaves: old copies aside, a half-written new one
    shutil.copytree(run / "best", run / ".best.old-abc" / "x")
    shutil.copytree(run / "last", run / ".last.old-def" / "x")
    shutil.copytree(run / "best", run / ".best.tmp-ghi")
    resumed = subprocess.run([sys.executable, str(CHILD), "lm", str(run), "--resume"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed_from 4" in resumed.stdout
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


# -- 4. SIGTERM before training starts cleans up like Ctrl-C ---------------------------------------
def test_sigterm_before_training_removes_the_run_directory(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(20000)))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "glassformer", "train", "lm", "--data", str(text), "--preset",
                             "gpt-tiny", "--steps", "2", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 120
    while not out.exists():                                 # the command has begun: --out is created
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    time.sleep(0.2)                                         # (past creating it; training starts seconds later)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == ["glassformer: interrupted: SIGTERM"]
    assert not out.exists()


# -- 5. paths named as the user gave them, with what is wrong --------------------------------------
def test_writing_a_file_where_a_directory_is_names_the_path(tmp_path):
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ConfigError) as e:
        write_text_atomically(tmp_path / "emptydir", "x")
    assert str(e.value) == f"cannot write {tmp_path / 'emptydir'}: it is a directory; give a file name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emptydir"]


def test_a_folder_that_takes_no_files_is_named_not_the_temporary(tmp_path, capsys):
    if not Path("/proc/self").exists():
        pytest.skip("needs Linux's /proc")
    code, _, err = run_cli(capsys, "plot-positions", "--out", "/proc/x.png")
    one_line_error(code, err, "cannot write /proc/x.png", "the folder /proc")
    assert ".tmp-" not in err
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, "plot-positions", "--out", tmp_path / "afile" / "x.png")
    one_line_error(code, err, f"{tmp_path / 'afile'} is not a folder")


def test_a_full_disk_while_writing_names_the_path(tmp_path):
    def fill(d):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ConfigError, match=f"cannot write {tmp_path / 'model'}: No space left on device"):
        write_atomically(tmp_path / "model", fill)
    assert list(tmp_path.iterdir()) == []


def test_readers_say_what_is_wrong_with_the_path(tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "t.txt").write_text("hallo\n")
    afile = folder / "t.txt"
    cases = [
        (["train", "lm", "--data", "/dev/null", "--out", tmp_path / "r1"], "/dev/null is not a regular file"),
        (["train", "translation", "--src", folder, "--tgt", afile, "--out", tmp_path / "r2"],
         f"{folder} is a directory, not a file"),
        (["generate", afile, "hi"], f"model directory {afile} is a file, not a folder"),
    ]
    for args, words in cases:
        code, _, err = run_cli(capsys, *args)
        one_line_error(code, err, words)
        assert "does not exist" not in err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    with pytest.raises(InputError, match=f"settings {folder} is a directory, not a file"):
        read_json(folder, what="settings", error=InputError)
    with pytest.raises(InputError, match="settings /dev/null is not a regular file"):
        read_json("/dev/null", what="settings", error=InputError)
