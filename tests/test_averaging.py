"""Checkpoint averaging: the element-wise mean, refused across different configs, --last K."""

from __future__ import annotations

import pytest
import torch

from glassformer.cli.main import main
from glassformer.errors import CheckpointError, ConfigError
from glassformer.models import Transformer, preset
from glassformer.training.averaging import average_checkpoints, last_checkpoints
from glassformer.model_dir import load_model_dir, save_model_dir


def _model(seed: int, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(preset("vaswani-tiny", **overrides))


def test_average_of_two_checkpoints_is_their_mean(tmp_path):
    a, b = _model(1), _model(2)
    save_model_dir(tmp_path / "a", a, generation={"beam": 4})
    save_model_dir(tmp_path / "b", b)
    out = average_checkpoints(tmp_path / "avg", [tmp_path / "a", tmp_path / "b"])
    averaged = load_model_dir(out).model
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for name, p in averaged.named_parameters():
        assert torch.allclose(p, (pa[name] + pb[name]) / 2, atol=1e-7), name
    # tying survives: one matrix for source, target and output
    assert averaged.generator.proj.weight is averaged.src_embed.token.weight


def test_last_k_picks_the_most_recent_steps(tmp_path):
    run = tmp_path / "run"
    models = {step: _model(step) for step in (100, 900, 1000, 20)}
    for step, model in models.items():
        save_model_dir(run / "checkpoints" / f"step-{step:08d}", model)
    picked = last_checkpoints(run, 2)
    assert [p.name for p in picked] == ["step-00000900", "step-00001000"]
    with pytest.raises(CheckpointError, match="holds 4 step"):
        last_checkpoints(run, 5)
    assert main(["average-checkpoints", str(tmp_path / "avg"), "--last", "2", str(run)]) == 0
    averaged = load_model_dir(tmp_path / "avg").model
    expected = (models[900].encoder.layers[0].feed_forward.linear1.weight
                + models[1000].encoder.layers[0].feed_forward.linear1.weight) / 2
    assert torch.allclose(averaged.encoder.layers[0].feed_forward.linear1.weight, expected, atol=1e-7)


def test_mismatched_configs_are_refused(tmp_path, capsys):
    save_model_dir(tmp_path / "a", _model(1))
    save_model_dir(tmp_path / "b", _model(2, d_ff=128))
    with pytest.raises(ConfigError, match="different configs.*d_ff: 64 vs 128"):
        average_checkpoints(tmp_path / "avg", [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "avg").exists()
    assert main(["average-checkpoints", str(tmp_path / "avg"), str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different configs" in err[0]
    assert main(["average-checkpoints", str(tmp_path / "avg")]) == 2
    assert main(["average-checkpoints", str(tmp_path / "avg"), "--last", "x", str(tmp_path)]) == 2
