"""The one training recipe: which settings win on resume is one rule, the same from Python and from
`--resume` (tiny gpt-tiny runs on 16-token windows of 10,000 characters, in-process)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glassformer.training.lm import LMSettings, train_lm
from glassformer.training.metrics import MetricsLog
from glassformer.training.recipe import merged_settings
from helpers import run_cli

SHAKESPEARE = Path(__file__).resolve().parents[1] / "glassformer" / "data" / "corpora" / "tinyshakespeare.txt"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 4-step run, evaluated every 2 steps and logged every step."""
    root = tmp_path_factory.mktemp("recipe")
    text = root / "text.txt"
    text.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:10_000], encoding="utf-8")
    settings = LMSettings(preset="gpt-tiny", block_size=16, batch_size=2, warmup=1, steps=4, eval_every=2,
                          log_every=1, device="cpu", progress=False)
    train_lm(text, settings, root / "run")
    return root / "run"


def records(run: Path) -> list[tuple]:
    return [(r["kind"], r["step"], r["loss"]) for r in MetricsLog.records(run)]


def test_resuming_from_python_is_resuming_from_the_command_line(finished_run, tmp_path, capsys):
    by_python, by_cli = tmp_path / "python", tmp_path / "cli"
    shutil.copytree(finished_run, by_python)
    shutil.copytree(finished_run, by_cli)
    # the data, the eval cadence (2, not the default 250) and the log cadence are the run's own
    run = train_lm(None, {"steps": 6}, by_python, resume=True, extend=True)
    code, _, err = run_cli(capsys, "train", "lm", "--resume", by_cli, "--steps", "6", "--extend")
    assert code == 0, err
    assert run.result.steps == 6
    assert [r[:2] for r in records(by_python) if r[0] == "eval"] == [("eval", 2), ("eval", 4), ("eval", 6)]
    assert [r[1] for r in records(by_python) if r[0] == "train"] == [1, 2, 3, 4, 5, 6]
    assert records(by_python) == records(by_cli)                  # the same steps, bit for bit


def test_settings_win_in_one_order_saved_then_config_then_given_then_run(finished_run, tmp_path):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"eval_every": 3, "log_every": 5, "lr": 0.5}))
    settings, saved = merged_settings("lm", finished_run, True, config=config, given={"eval_every": 1},
                                      run={"log_every": 2})
    assert settings["block_size"] == 16 and settings["steps"] == 4         # the run's own
    assert settings["lr"] == 0.5                                            # the file over the run
    assert settings["eval_every"] == 1                                      # a given setting over the file
    assert settings["log_every"] == 2                                       # the run flags last
    assert saved["data"]["block_size"] == 16
    assert merged_settings("lm", finished_run, False, given={"steps": 9}) == ({"steps": 9}, {})


def without_setting(run: Path, name: str) -> None:
    """Make ``run`` look saved before the setting ``name`` existed (drop it from every checkpoint)."""
    for info_path in run.glob("*/training.json"):
        info = json.loads(info_path.read_text())
        info["fingerprint"]["settings"].pop(name)
        info["fingerprint"].pop("defaults", None)
        info_path.write_text(json.dumps(info))


def test_a_run_saved_before_a_setting_existed_resumes_with_its_default(finished_run, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    without_setting(old, "decay_embeddings")
    code, _, err = run_cli(capsys, "train", "lm", "--resume", old, "--steps", "5", "--extend")
    assert code == 0, err
    # a value other than the default is still a different run
    other = tmp_path / "other"
    shutil.copytree(finished_run, other)
    without_setting(other, "decay_embeddings")
    with pytest.raises(Exception, match="decay_embeddings: False there, True now"):
        train_lm(None, {"steps": 5, "decay_embeddings": True}, other, resume=True, extend=True)
