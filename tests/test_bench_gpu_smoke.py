"""benchmarks/bench_gpu.py works without a GPU: ``--smoke`` runs every code path once on the CPU
(a tiny GPT, compiled paths traced with the eager backend) and writes a results file of the
full layout; without ``--smoke`` and without CUDA it measures and writes nothing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"
SIDES_TRAIN = {"ours_eager", "ours_compiled", "hf_eager", "hf_compiled"}
SIDES_GENERATE = {"ours_eager", "ours_compiled", "hf_dynamic_cache", "hf_static_compiled"}

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_gpu")
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


def test_smoke_writes_every_figure(smoke):
    r, md = smoke
    assert r["smoke"] is True and r["machine"]["device"] == "cpu"
    assert {"model", "shapes", "flops_formula", "matmul_peak", "train", "generate", "goals"} <= set(r)
    t = r["train"]
    assert t["errors"] == {}, t["errors"]
    assert set(t["tokens_per_s"]) == set(t["mfu"]) == set(t["step_ms"]) == SIDES_TRAIN
    assert all(v["median"] > 0 for v in t["tokens_per_s"].values())
    assert set(t["ratios"]) == {"ours_compiled_vs_hf_compiled", "ours_eager_vs_hf_eager", "ours_compiled_vs_hf_eager"}
    assert r["matmul_peak"]["dtype"] == "bfloat16" and r["matmul_peak"]["median_gflops"] > 0
    assert set(r["generate"]) == {f"batch_{b}" for b in r["shapes"]["gen_batches"]}
    for g in r["generate"].values():
        assert g["errors"] == {}, g["errors"]
        assert set(g["tokens_per_s"]) == SIDES_GENERATE
        assert g["new_tokens"] == r["shapes"]["new_tokens"]
    assert set(r["goals"]) == {"train_vs_hf_compiled", "train_mfu", "generate_batch1_vs_hf"}
    assert all(v["met"] is None for v in r["goals"].values())          # a smoke run claims nothing
    assert "Smoke run" in md


def test_flops_per_token_is_the_stated_formula(smoke):
    r, _ = smoke
    m = r["model"]
    n = m["params"] - m["max_len"] * m["d_model"]                       # without the position table
    assert r["train"]["flops_per_token"] == 6 * n + 12 * m["layers"] * m["d_model"] * r["shapes"]["block"]


def test_same_weights_give_the_same_greedy_tokens(smoke):
    # Ours and Hugging Face's share the weights: in float32 their greedy tokens are the same, and our
    # compiled decoding step gives the eager step's tokens.
    r, _ = smoke
    for g in r["generate"].values():
        same = g["same_greedy_tokens"]
        assert same["float32"]["identical"], same
        assert same["bfloat16"]["ours_compiled_vs_eager"]["identical"], same


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would measure")
def test_without_cuda_nothing_is_measured(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0
    assert run.stdout.strip() == "no CUDA device: nothing measured"
    assert list(tmp_path.iterdir()) == []
