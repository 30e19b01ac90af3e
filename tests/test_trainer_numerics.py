"""The trainer's numerics: per-token normalisation under accumulation, non-finite steps, precision, compile."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from glassformer.data.batching import collate
from glassformer.data.lm import LMBatch
from glassformer.errors import ConfigError, TrainingStopped
from glassformer.models import build_model, preset
from glassformer.training.lm import lm_loss
from glassformer.training.optim import adamw, paper_adam
from glassformer.training.precision import resolve_precision
from glassformer.training.trainer import Trainer, TrainerConfig
from glassformer.training.translation import translation_loss
from helpers import run_cli


def make_trainer(model, loss_fn, tmp_path, make_optimizer=None, **config) -> Trainer:
    config = TrainerConfig(**{"max_steps": 10, "eval_every": 1000, "progress": False, **config})
    return Trainer(model, make_optimizer or (lambda m: torch.optim.SGD(m.parameters(), lr=0.1)), None, loss_fn,
                   lambda m: {"loss": 0.0}, lambda path, m: None, config, tmp_path)


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# -- 1. k micro-batches of different padding = one big batch ------------------------------------
def sentence_pairs(n: int, vocab: int, seed: int) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 12, (n, 2), generator=g).tolist()
    return [(torch.randint(4, vocab, (s,), generator=g).tolist(), torch.randint(4, vocab, (t,), generator=g).tolist())
            for s, t in lengths]


def test_accumulated_translation_gradients_equal_one_big_batch(tmp_path):
    torch.manual_seed(0)
    model = build_model(preset("vaswani-tiny", dropout=0.0)).double()
    config = model.config
    pairs = sentence_pairs(9, config.tgt_vocab_size, seed=1)
    big = collate(pairs, config.pad_id, config.bos_id, config.eos_id)
    # three micro-batches, each padded only to its own longest sentence: different padding per batch
    micro = [collate(pairs[i:j], config.pad_id, config.bos_id, config.eos_id) for i, j in ((0, 2), (2, 7), (7, 9))]
    assert {b.src.shape[1] for b in micro} != {big.src.shape[1]}
    trainer = make_trainer(model, translation_loss(0.1), tmp_path)
    trainer.accumulate([big])
    one = grads(model)
    model.zero_grad(set_to_none=True)
    trainer.accumulate(micro)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, one[name], atol=1e-6, rtol=1e-6, msg=name)
    # and the gradient is that of the mean loss per real target token of the big batch
    model.zero_grad(set_to_none=True)
    logits = model(big.src, big.tgt_in)
    F.cross_entropy(logits.flatten(0, 1), big.tgt_out.flatten(), ignore_index=config.pad_id,
                    label_smoothing=0.1).backward()
    for name, g in grads(model).items():
        torch.testing.assert_close(g, one[name], atol=1e-6, rtol=1e-6, msg=name)


def test_accumulated_lm_gradients_equal_one_big_batch(tmp_path):
    torch.manual_seed(0)
    model = build_model(preset("gpt-tiny", dropout=0.0)).double()
    x = torch.randint(0, 64, (6, 16))
    y = torch.randint(0, 64, (6, 16))
    y[1, 10:] = -100                                  # ignored targets (padding) in some rows
    y[4, 3:] = -100
    trainer = make_trainer(model, lm_loss, tmp_path)
    trainer.accumulate([LMBatch(x, y)])
    one = grads(model)
    model.zero_grad(set_to_none=True)
    # micro-batches of 1, 4 and 1 rows, with 0, 19 and 0 ignored targets
    trainer.accumulate([LMBatch(x[:1], y[:1]), LMBatch(x[1:5], y[1:5]), LMBatch(x[5:], y[5:])])
    for name, g in grads(model).items():
        torch.testing.assert_close(g, one[name], atol=1e-6, rtol=1e-6, msg=name)
    assert LMBatch(x, y).n_tokens == 6 * 16 - 6 - 13


# -- 2. a non-finite step is skipped (or stops training) -----------------------------------------
class PoisonAt:
    """A loss function that returns NaN at the given (1-based) call."""

    def __init__(self, loss_fn, at: int):
        self.loss_fn, self.at, self.calls = loss_fn, at, 0

    def __call__(self, module, batch):
        self.calls += 1
        out = self.loss_fn(module, batch)
        if self.calls == self.at:
            out.total = out.total * float("nan")
        return out


@pytest.mark.parametrize("fused", [True, False])
def test_a_non_finite_step_is_skipped(tmp_path, fused):
    torch.manual_seed(0)
    model = build_model(preset("gpt-tiny", dropout=0.0))
    make_opt = (lambda m: adamw(m, 1e-3)) if fused else (lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3))
    trainer = make_trainer(model, PoisonAt(lm_loss, 3), tmp_path, make_optimizer=make_opt)
    assert trainer._device_skip is fused               # the fused optimiser decides on the device
    batch = LMBatch(torch.randint(0, 64, (2, 8)), torch.randint(0, 64, (2, 8)))
    for _ in range(2):
        trainer.train_step([batch])
        trainer.step += 1
    before = copy.deepcopy(model.state_dict())
    state_before = copy.deepcopy(trainer.optimizer.state_dict()["state"])
    _, norm, applied = trainer.train_step([batch])      # NaN
    trainer.step += 1
    assert not bool(applied) and not math.isfinite(float(norm))
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    for key, state in trainer.optimizer.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(value, state_before[key][name]), name   # moments and step count untouched
    assert int(trainer._skipped) == 1 and int(trainer._last_bad) == 3
    trainer.train_step([batch])                                     # training goes on
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_on_nan_stop_names_the_step(tmp_path):
    model = build_model(preset("gpt-tiny", dropout=0.0))
    trainer = make_trainer(model, PoisonAt(lm_loss, 2), tmp_path, make_optimizer=lambda m: adamw(m, 1e-3),
                           on_nan="stop")
    batch = LMBatch(torch.randint(0, 64, (2, 8)), torch.randint(0, 64, (2, 8)))
    trainer.train_step([batch])
    trainer.step += 1
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(TrainingStopped, match="step 2: the loss or gradient is not finite"):
        trainer.train_step([batch])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# -- 3. precision ------------------------------------------------------------------------------------
def test_precision_choices():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")


def test_fp16_on_a_cpu_is_one_line_and_writes_nothing(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("hello world " * 200)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "lm", "--data", str(text), "--precision", "fp16", "--out", str(out),
                           "--device", "cpu")
    assert code == 2 and "fp16 needs a CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bf16_autocast_training_tracks_fp32(tmp_path):
    """The bf16 path (CPU autocast) computes the same losses as fp32 within bf16's precision."""
    losses = {}
    batch = LMBatch(torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16)))
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(preset("gpt-tiny", dropout=0.0))
        trainer = make_trainer(model, lm_loss, tmp_path / precision, make_optimizer=lambda m: adamw(m, 1e-2),
                               precision=precision)
        losses[precision] = [float(trainer.train_step([batch])[0]) for _ in range(5)]
    assert losses["fp32"][-1] < losses["fp32"][0]
    for a, b in zip(losses["fp32"], losses["bf16"]):
        assert b == pytest.approx(a, rel=2e-2)


def test_compiled_training_matches_eager(tmp_path):
    """``compile=True`` (torch.compile with inductor, on the CPU here) trains like eager."""
    pytest.importorskip("torch._inductor")
    batch = LMBatch(torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16)))
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(preset("gpt-tiny", dropout=0.0, n_layers=1))
        trainer = make_trainer(model, lm_loss, tmp_path / str(compiled), make_optimizer=lambda m: adamw(m, 1e-2),
                               compile=compiled)
        results[compiled] = ([float(trainer.train_step([batch])[0]) for _ in range(3)], model.state_dict())
    for a, b in zip(results[False][0], results[True][0]):
        assert b == pytest.approx(a, rel=1e-4)
    for name, value in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], value, atol=1e-4, rtol=1e-3)


def test_model_loss_is_the_plain_cross_entropy_in_float64():
    torch.manual_seed(0)
    model = build_model(preset("vaswani-tiny", dropout=0.0)).double()
    src, tgt = torch.randint(4, 50, (3, 7)), torch.randint(4, 50, (3, 5))
    target = torch.randint(4, 50, (3, 5))
    target[0, 3:] = model.config.pad_id
    fused = model(src, tgt, target, label_smoothing=0.1)
    plain = F.cross_entropy(model(src, tgt).flatten(0, 1), target.flatten(), ignore_index=model.config.pad_id,
                            label_smoothing=0.1)
    torch.testing.assert_close(fused, plain, atol=1e-10, rtol=1e-10)
    paper_adam(model)                                    # the paper's optimiser takes the fused path (CPU too)
    assert getattr(paper_adam(model), "_step_supports_amp_scaling", False)


def test_compile_without_a_working_compiler_is_one_line(tmp_path, capsys, monkeypatch):
    """Where the compiler is missing (simulated: inductor's entry point fails), --compile says so
    in one line and the run directory is not left behind."""
    import torch._inductor.compile_fx as compile_fx

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Compiler: cc is not found")

    monkeypatch.setattr(compile_fx, "compile_fx", no_compiler)
    torch._dynamo.reset()
    text = tmp_path / "t.txt"
    text.write_text("hello world " * 200)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "lm", "--data", str(text), "--preset", "gpt-tiny", "--block-size", "8",
                           "--steps", "2", "--compile", "--out", str(out), "--device", "cpu")
    torch._dynamo.reset()
    assert code == 2 and "--compile failed" in err and "run without --compile" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
