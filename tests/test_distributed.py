"""Two processes (torchrun, gloo on the CPU) learn what one process learns from the same global batch.

The CLI is run as a user runs it: ``torchrun --nproc-per-node 2 -m glassformer train ... --distributed
ddp|fsdp`` against ``glassformer train ... --grad-accum 2`` in one process; the saved weights agree
within 1e-5.  An FSDP run stopped part-way resumes to the same weights.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glassformer.data.numbers import number_corpus
from helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or TORCHRUN is None,
                                reason="torch.distributed or torchrun is not available")


def glassformer(*args: str, processes: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if processes == 1:
        cmd = [sys.executable, "-m", "glassformer", *args]
    else:
        cmd = [TORCHRUN, "--standalone", "--nproc-per-node", str(processes), "-m", "glassformer", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=150)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-3000:]
    return result


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def assert_close_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= atol, f"largest difference {worst:.3g}"


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(300)))
    return path


def lm_args(text: Path, out: Path, steps: int = 6) -> list[str]:
    return ["train", "lm", "--data", str(text), "--preset", "gpt-tiny", "--block-size", "16", "--batch-size", "2",
            "--grad-accum", "2", "--steps", str(steps), "--eval-every", "3", "--device", "cpu", "--lr", "0.01",
            "--out", str(out)]


@pytest.fixture(scope="module")
def one_process(text, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    glassformer(*lm_args(text, out))
    return out


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_two_processes_learn_what_one_does(kind, text, one_process, tmp_path):
    out = tmp_path / "run"
    result = glassformer(*lm_args(text, out), "--distributed", kind, processes=2)
    assert f"× 2 processes ({kind})" in result.stdout
    assert result.stdout.count("trained 6 steps") == 1          # rank 0 reports; the other is silent
    assert_close_weights(one_process, out)


def test_an_fsdp_run_resumes(text, one_process, tmp_path):
    out = tmp_path / "run"
    stopped = glassformer(*lm_args(text, out), "--distributed", "fsdp", "--time-limit", "0.000001", "--log-every", "1",
                          processes=2)
    assert "stopped by the time limit" in stopped.stdout
    # (a resume restores the run's settings, its time limit too: a new one is given)
    resumed = glassformer(*lm_args(text, out), "--distributed", "fsdp", "--resume", "--time-limit", "3600",
                          processes=2)
    assert "resuming at step 1" in resumed.stdout
    assert_close_weights(one_process, out)


def test_ddp_translation_matches_one_process(tmp_path):
    corpus = number_corpus("de", "en", max_number=299, n_valid=20, n_test=20, seed=0)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in corpus.train))
    args = ["train", "translation", "--src", str(tsv), "--preset", "vaswani-tiny", "--vocab-size", "150",
            "--max-tokens", "200", "--steps", "4", "--eval-every", "2", "--device", "cpu"]
    glassformer(*args, "--config", str(_config(tmp_path)), "--out", str(tmp_path / "one"))
    glassformer(*args, "--config", str(_config(tmp_path)), "--out", str(tmp_path / "two"), "--distributed", "ddp",
                processes=2)
    assert_close_weights(tmp_path / "one", tmp_path / "two")


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "settings.json"
    path.write_text('{"grad_accum": 2, "warmup": 2}')
    return path


def test_bad_distributed_settings_are_one_line(text, tmp_path, capsys):
    code, _, err = run_cli(capsys, *lm_args(text, tmp_path / "a"), "--distributed", "ddp")
    assert code == 2 and "runs under torchrun" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()


def test_a_world_that_does_not_divide_the_step_is_refused(tmp_path):
    from glassformer.errors import ConfigError
    from glassformer.models import build_model, preset
    from glassformer.training.distributed import World
    from glassformer.training.trainer import Trainer, TrainerConfig

    with pytest.raises(ConfigError, match="grad_accum=3 micro-batches per step cannot be shared equally between 2"):
        Trainer(build_model(preset("gpt-tiny")), None, None, None, None, None,
                TrainerConfig(max_steps=1, eval_every=1, grad_accum=3), tmp_path, world=World("ddp", 0, 2))


# -- a model built on the meta device: each process materialises its shards of the CPU build's weights --
TINY = ["gpt-tiny", "llama-tiny", "vaswani-tiny", "t5-tiny", "bert-tiny", "vit-tiny", "caption-tiny"]


@pytest.mark.parametrize("name", TINY)
def test_a_model_built_on_the_meta_device_gets_the_weights_of_the_cpu_build(name):
    """One process: ``seeded_model`` builds nothing (meta parameters) and the trainer's ``wrap`` gives
    it exactly the weights, tied matrices and tables of ``manual_seed`` + ``build_model`` on the CPU;
    the random generator is left where that build leaves it."""
    from glassformer.models import build_model, preset
    from glassformer.training import distributed
    from glassformer.training.recipe import seeded_model

    torch.manual_seed(7)
    reference = build_model(preset(name))
    after = torch.get_rng_state()
    model = seeded_model(preset(name), 7)
    assert all(p.is_meta for p in model.parameters()) and torch.equal(torch.get_rng_state(), after)
    model = distributed.wrap(model, distributed.World(), torch.device("cpu"))[1]
    assert torch.equal(torch.get_rng_state(), after)
    assert len(list(model.parameters())) == len(list(reference.parameters()))        # ties kept
    want, have = reference.state_dict(), model.state_dict()
    assert have.keys() == want.keys() and all(torch.equal(have[k], want[k]) for k in want)
    buffers = dict(model.named_buffers())
    assert all(torch.equal(buffers[k], b) for k, b in reference.named_buffers())


@pytest.mark.parametrize("rank", [0, 1])
def test_each_fsdp_process_materialises_only_its_rows_of_the_cpu_build(rank):
    """Rank ``rank`` of two (a fake process group: no collective runs) shards a model built on the meta
    device and materialises its rows of every parameter, equal to those rows of the CPU build (padding
    rows zeroed, truncated normals, tied matrices) — never the whole model."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from glassformer.models import build_model, preset
    from glassformer.training import distributed
    from glassformer.training.recipe import seeded_model

    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=2)
    try:
        for name in ("bert-tiny", "caption-tiny", "gpt-tiny", "vaswani-tiny"):
            torch.manual_seed(7)
            want = build_model(preset(name)).state_dict()
            model = seeded_model(preset(name), 7)
            distributed.wrap(model, distributed.World("fsdp", rank, 2), torch.device("cpu"))
            for key, param in model.named_parameters():
                rows = -(-param.shape[0] // 2)                # FSDP's chunks of dimension 0
                local = param.to_local()
                assert local.shape[0] <= rows
                assert torch.equal(local, want[key][rank * rows: rank * rows + local.shape[0]]), (name, key)
    finally:
        dist.destroy_process_group()


# -- saving under FSDP draws no random number; fp16's overflow steps do not stop a run ------------------
@pytest.fixture
def one_process_group():
    """A gloo process group of one (this process), for FSDP without torchrun."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


class _Stream:
    def state_dict(self) -> dict:
        return {}


def test_an_fsdp_save_leaves_the_random_generators_as_they_were_saved(one_process_group, tmp_path):
    """Rank 0 rebuilds the model to write it; drawing its initial weights after the generators were
    saved made a resumed run differ from an uninterrupted one (with dropout, say)."""
    from glassformer.models import build_model, preset
    from glassformer.model_dir import load_model_dir, save_model_dir
    from glassformer.training.distributed import World
    from glassformer.training.trainer import Trainer, TrainerConfig

    torch.manual_seed(0)
    model = build_model(preset("vaswani-tiny"))          # sinusoidal tables: buffers that are not saved
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, lambda m: torch.optim.AdamW(m.parameters()), None, None, lambda m: {"loss": 0.0},
                      lambda path, m: save_model_dir(path, m), TrainerConfig(max_steps=1, eval_every=1),
                      tmp_path, world=World("fsdp", 0, 1))
    trainer.stream = _Stream()
    before = torch.get_rng_state()
    trainer.save_checkpoint()
    assert torch.equal(torch.get_rng_state(), before)
    saved = load_model_dir(tmp_path / "last").model.state_dict()
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


def test_fp16_overflow_steps_do_not_stop_a_run_but_a_non_finite_loss_does(tmp_path):
    """With a gradient scaler the first steps overflow by design (the scale starts high and is halved
    until the gradients fit): the scaler skips them; --on-nan stop stops only for a loss that is not finite."""
    from glassformer.data.lm import LMBatch
    from glassformer.errors import TrainingStopped
    from glassformer.models import build_model, preset
    from glassformer.training.lm import lm_loss
    from glassformer.training.trainer import Trainer, TrainerConfig

    torch.manual_seed(0)
    model = build_model(preset("gpt-tiny"))
    trainer = Trainer(model, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2), None, lm_loss,
                      lambda m: {"loss": 0.0}, lambda path, m: None,
                      TrainerConfig(max_steps=10, eval_every=100, on_nan="stop", precision="fp16", progress=False),
                      tmp_path)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)     # overflows at once, on the CPU too
    batch = LMBatch(torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16)))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    _, norm, applied = trainer.train_step([batch])
    assert not torch.isfinite(norm) and not applied                        # overflowed: skipped, not stopped
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    assert trainer.scaler.get_scale() < 2.0 ** 40
    for _ in range(60):                                                    # the scale comes down until a step fits
        applied = trainer.train_step([batch])[2]
        if applied:
            break
    assert applied and not all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")                          # the model itself is broken now
    with pytest.raises(TrainingStopped, match="not finite"):
        trainer.train_step([batch])
