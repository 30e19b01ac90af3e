"""benchmarks/bench_nanogpt.py without running either side: it refuses in one line a folder that
lacks nanoGPT, prepares nanoGPT's Tiny Shakespeare data as nanoGPT's own prepare.py does, and
reads each side's log leaving the intervals that hold an evaluation out of the training rate."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_nanogpt  # noqa: E402


def test_a_folder_without_nanogpt_is_refused_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_nanogpt.py"), "--nanogpt", str(tmp_path),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "lacks nanoGPT's train.py" in lines[0] and "--nanogpt DIR" in lines[0], run.stderr
    assert not (tmp_path / "out").exists()


def test_data_is_what_nanogpts_prepare_writes(tmp_path):
    text = bench_nanogpt.TEXT.read_text(encoding="utf-8")
    info = bench_nanogpt.prepare_shakespeare_char(tmp_path, text)
    folder = tmp_path / "data" / "shakespeare_char"
    train = np.fromfile(folder / "train.bin", dtype=np.uint16)
    val = np.fromfile(folder / "val.bin", dtype=np.uint16)
    meta = pickle.loads((folder / "meta.pkl").read_bytes())
    # The figures nanoGPT's data/shakespeare_char/prepare.py prints for this text (its closing comments).
    assert (len(text), meta["vocab_size"], len(train), len(val)) == (1_115_394, 65, 1_003_854, 111_540)
    assert info == {"characters": 1_115_394, "vocab_size": 65, "train_tokens": 1_003_854, "val_tokens": 111_540}
    assert "".join(meta["itos"][i] for i in range(65)) == "".join(sorted(set(text)))
    assert all(meta["stoi"][ch] == i for i, ch in meta["itos"].items())
    assert "".join(meta["itos"][int(i)] for i in np.concatenate([train, val])) == text


def test_nanogpt_rate_leaves_evaluation_steps_out():
    # train.py evaluates at the start of every eval_interval-th step (step 0 too): that step's time holds it.
    lines = ["step 0: train loss 4.1000, val loss 4.2000", "iter 0: loss 4.1, time 900.00ms, mfu -100.00%"]
    for i in range(1, 11):
        if i % 2 == 0:
            lines.append(f"step {i}: train loss 3.0000, val loss {3.2 - i / 100:.4f}")
        lines.append(f"iter {i}: loss 3.0, time {700 if i % 2 == 0 else 100}.00ms, mfu 0.00%")
    log = bench_nanogpt.read_nanogpt_log("\n".join(lines) + "\n", eval_every=2)
    assert log["steps"] == 11 and log["evaluations"] == 6
    assert log["steps_per_s"] == pytest.approx(10.0) and log["loop_s"] == pytest.approx(0.9 + 5 * 0.1 + 5 * 0.7)
    assert log["val_loss"] == pytest.approx(3.1) and log["val_loss_at_step"] == 10


def test_glassformer_rate_leaves_evaluation_intervals_out(tmp_path):
    # Records every 10 steps; the evaluation after step 10 falls in the interval (10, 20], and the
    # one at 25 inside (20, 30]: both are slow and left out, as is the first interval.
    per_step = {10: 0.5, 20: 0.3, 30: 0.3, 40: 0.1, 50: 0.1}
    records = [{"kind": "train", "step": s, "tokens_per_s": 12 * 64 / t, "elapsed": float(s)} for s, t in per_step.items()]
    records.insert(1, {"kind": "eval", "step": 10, "loss": 3.0})
    records.insert(4, {"kind": "eval", "step": 25, "loss": 2.8})
    records.append({"kind": "eval", "step": 50, "loss": 2.5})
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    log = bench_nanogpt.read_glassformer_log(tmp_path)
    assert log["steps_per_s"] == pytest.approx(10.0)
    assert (log["steps"], log["val_loss"], log["val_loss_at_step"], log["evaluations"]) == (50, 2.5, 50, 3)
