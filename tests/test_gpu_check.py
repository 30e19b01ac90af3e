"""benchmarks/gpu_check.py without a GPU: every command it would run on the GPU is one that glassformer
accepts, its ``--smoke`` mode runs the paths on the CPU and lists every path in its results file, and a
path that fails (an error, a timeout, a model it needs that failed, the budget spent) is named, with a
non-zero exit.  The whole smoke list compiles a dozen times (many minutes on 2 cores); here a few paths run.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glassformer.cli.main import build_parser, parse_args

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

# What the check must run, written out here from the issue, not read from the script.
TASKS = ("lm", "translation", "mlm", "classify", "vit", "caption")
VARIANTS = ("bf16", "fp16", "compile", "ddp", "fsdp")
EVERY_PATH = ([f"train-{task}-{variant}" for task in TASKS for variant in VARIANTS]
              + [f"{command}-{search}-compiled" for command in ("generate", "translate")
                 for search in ("greedy", "beam")]
              + ["bench-gpu-quick"])


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(SCRIPT.parent))              # the script imports its neighbour, harness
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = sys.modules["gpu_check"] = importlib.util.module_from_spec(spec)    # (its dataclass looks itself up)
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]
    sys.path.remove(str(SCRIPT.parent))


def glassformer_args(command: list[str]) -> list[str] | None:
    """The arguments given to ``-m glassformer`` (directly or through torchrun), None for another program."""
    starts = [i + 2 for i in range(len(command) - 1) if command[i:i + 2] == ["-m", "glassformer"]]
    return command[starts[0]:] if starts else None


@pytest.mark.parametrize("smoke", [False, True], ids=["gpu", "smoke"])
def test_every_path_is_planned_and_glassformer_accepts_its_command(gpu_check, smoke, tmp_path):
    checks = gpu_check.plan(smoke, tmp_path)
    assert [c.name for c in checks] == EVERY_PATH
    parser = build_parser()
    for check in checks:
        args = glassformer_args(check.command)
        if args is None:                                # bench_gpu.py, which has its own options
            assert check.command[-3:-2] == ["--smoke" if smoke else "--quick"]
            continue
        parsed = parse_args(parser, args)               # argparse exits on an option glassformer lacks
        assert parsed.device == ("cpu" if smoke else "cuda"), check.name
        if check.name.endswith(("-ddp", "-fsdp")):
            assert check.command[2:6] == ["torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
            assert parsed.distributed == check.name.rsplit("-", 1)[1]
        for variant in ("bf16", "fp16"):
            if check.name.endswith(variant):
                assert parsed.precision == variant
        assert bool(parsed.compile) == check.name.endswith(("-compile", "-compiled")), check.name
    skipped = {c.name for c in checks if c.skip}
    assert skipped == ({f"train-{task}-fp16" for task in TASKS} if smoke else set())


def test_a_path_brings_the_path_whose_model_it_decodes(gpu_check, tmp_path):
    checks = gpu_check.plan(True, tmp_path)
    assert [c.name for c in gpu_check.select(checks, ["translate-*"])] == [
        "train-translation-bf16", "translate-greedy-compiled", "translate-beam-compiled"]


def test_smoke_runs_the_chosen_paths_and_lists_every_path(tmp_path):
    chosen = ["train-lm-fp16", "train-lm-fsdp"]
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path),
                          *(a for name in chosen for a in ("--only", name))],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["smoke"] is True and result["gpu"] is None and result["torch"] == torch.__version__
    assert result["date"].startswith(time.strftime("%Y-%m-%d", time.gmtime())) and result["failed"] == []
    paths = {p["name"]: p for p in result["paths"]}
    assert list(paths) == EVERY_PATH
    fsdp = paths["train-lm-fsdp"]
    assert fsdp["status"] == "ok" and fsdp["seconds"] > 0 and fsdp["returncode"] == 0
    assert "--nproc-per-node 1 -m glassformer train lm" in fsdp["command"] and "--device cpu" in fsdp["command"]
    assert paths["train-lm-fp16"]["status"] == "skipped" and "CUDA" in paths["train-lm-fp16"]["reason"]
    others = [p for name, p in paths.items() if name not in chosen]
    assert all(p["status"] == "skipped" and p["reason"].startswith("not selected") for p in others)
    assert "| train-lm-fsdp | ok |" in (tmp_path / "gpu_check.md").read_text()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"    # a zombie has stopped
    except FileNotFoundError:
        return True


def test_every_failed_path_is_named_and_the_exit_is_not_zero(gpu_check, monkeypatch, tmp_path, capsys):
    """Three ways to fail, added to the plan: glassformer refuses the command, the command outlives its
    timeout (its process group is killed, a child it started too), and a path needs a model that failed."""
    pid_file = tmp_path / "child.pid"
    hang = ("import subprocess, sys, time; "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(120)")
    bad_preset = gpu_check.glassformer("train", "lm", "--data", "tiny-shakespeare", "--preset", "gpt-no-such-preset",
                                       "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "run"))
    planned = gpu_check.plan
    monkeypatch.setattr(gpu_check, "plan", lambda smoke, work: planned(smoke, work) + [
        gpu_check.Check("train-lm-no-such-preset", bad_preset, 120),
        gpu_check.Check("hangs", [sys.executable, "-c", hang], 3),
        gpu_check.Check("decodes-the-missing-model", [sys.executable, "-c", "pass"], 60,
                        needs="train-lm-no-such-preset")])
    start = time.monotonic()
    code = gpu_check.main(["--smoke", "--jobs", "2", "--out", str(tmp_path), "--only", "train-lm-no-such-preset",
                           "--only", "hangs", "--only", "decodes-*"])
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 1
    named = sorted(line.split()[1] for line in err.strip().splitlines())
    assert named == ["decodes-the-missing-model", "hangs", "train-lm-no-such-preset"], err
    paths = {p["name"]: p for p in json.loads((tmp_path / "gpu_check.json").read_text())["paths"]}
    assert list(paths) == EVERY_PATH + ["train-lm-no-such-preset", "hangs", "decodes-the-missing-model"]
    assert all(paths[name]["status"] == "failed" for name in named)
    refused = paths["train-lm-no-such-preset"]
    assert "gpt-no-such-preset" in refused["error"] and refused["returncode"] != 0
    assert any("gpt-no-such-preset" in line for line in refused["output_tail"])
    assert paths["hangs"]["error"] == "timed out after 3 s" and took < 60
    deadline = time.monotonic() + 10
    while not _gone(int(pid_file.read_text())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(int(pid_file.read_text())), "the timed-out path's child is still running"
    assert paths["decodes-the-missing-model"]["error"] == (
        "not started: train-lm-no-such-preset, whose model it decodes, failed")


def test_a_spent_budget_fails_the_paths_it_leaves_no_time_for(gpu_check, tmp_path, capsys):
    code = gpu_check.main(["--smoke", "--budget", "0", "--out", str(tmp_path), "--only", "train-vit-bf16"])
    assert code == 1
    path = next(p for p in json.loads((tmp_path / "gpu_check.json").read_text())["paths"]
                if p["name"] == "train-vit-bf16")
    assert path["status"] == "failed" and path["error"] == "not started: the check's budget was spent"
    assert "gpu_check: train-vit-bf16 failed: not started" in capsys.readouterr().err


def test_without_a_gpu_nothing_is_checked(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 2 and "no CUDA device" in run.stderr
    assert not (tmp_path / "gpu_check.json").exists()
