"""A run's metrics log (log.jsonl) and `glassformer plot RUN_DIR`: what is written is what is read back,
a run killed mid-write or resumed from a checkpoint leaves a log that still reads, and the PNGs have the
size the figure asks for.  Bad input is one line and exit 2, and writes nothing."""

import json
import math
import sys

import pytest
import torch
from helpers import one_line_error, run_cli

from glassformer.errors import ConfigError
from glassformer.training.metrics import MetricsLog
from glassformer.training.plots import DPI, FIGSIZE

mpimg = pytest.importorskip("matplotlib.image")


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def synthetic_run(run_dir, steps=40, eval_every=10):
    """A log as a training run writes it: train records every step, an evaluation every ``eval_every``."""
    with MetricsLog(run_dir) as log:
        for step in range(1, steps + 1):
            log.write("train", step, loss=4.0 * math.exp(-step / 15) + 1.0, lr=3e-4 * min(1.0, step / 10),
                      grad_norm=1.0 / step, tokens_per_s=5000.0, elapsed=0.1 * step)
            if step % eval_every == 0:
                loss = 4.0 * math.exp(-step / 15) + 1.2
                log.write("eval", step, loss=loss, ppl=math.exp(loss))
    return run_dir


# -- the log -------------------------------------------------------------------------------------
def test_records_read_back_what_was_written(tmp_path):
    with MetricsLog(tmp_path / "run") as log:
        log.write("train", 1, loss=2.5, lr=1e-3, grad_norm=torch.tensor(0.75), tokens_per_s=1234.5, elapsed=0.25)
        log.write("eval", 1, loss=2.0, ppl=math.exp(2.0), bleu=12)
    assert MetricsLog.records(tmp_path / "run") == [
        {"kind": "train", "step": 1, "loss": 2.5, "lr": 1e-3, "grad_norm": 0.75, "tokens_per_s": 1234.5,
         "elapsed": 0.25},
        {"kind": "eval", "step": 1, "loss": 2.0, "ppl": math.exp(2.0), "bleu": 12},
    ]
    lines = (tmp_path / "run" / "log.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["train", "eval"]       # one JSON object a line


def test_each_record_is_on_disk_as_soon_as_it_is_written(tmp_path):
    log = MetricsLog(tmp_path)
    log.write("train", 7, loss=1.0)
    assert MetricsLog.records(tmp_path) == [{"kind": "train", "step": 7, "loss": 1.0}]    # before close()
    log.close()


def test_nan_and_infinity_are_written_as_null(tmp_path):
    with MetricsLog(tmp_path) as log:
        log.write("train", 3, loss=float("nan"), grad_norm=float("inf"), lr=torch.tensor(float("-inf")))
    text = (tmp_path / "log.jsonl").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"kind": "train", "step": 3, "loss": None, "grad_norm": None, "lr": None}


def test_a_partial_last_line_is_skipped_and_not_glued_to_the_next_record(tmp_path):
    synthetic_run(tmp_path, steps=3, eval_every=3)
    with open(tmp_path / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind": "train", "step": 4, "lo')                    # killed mid-write
    assert [r["step"] for r in MetricsLog.records(tmp_path)] == [1, 2, 3, 3]
    with MetricsLog(tmp_path) as log:                                    # the run resumes and appends
        log.write("train", 4, loss=1.5)
    records = MetricsLog.records(tmp_path)
    assert [(r["kind"], r["step"]) for r in records] == [("train", 1), ("train", 2), ("train", 3), ("eval", 3),
                                                         ("train", 4)]
    assert records[-1]["loss"] == 1.5


def test_lines_without_kind_are_evaluations_of_older_runs(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 100, "loss": 2.1, "ppl": 8.2}\n', encoding="utf-8")
    assert MetricsLog.records(tmp_path) == [{"kind": "eval", "step": 100, "loss": 2.1, "ppl": 8.2}]


def test_truncate_after_keeps_exactly_the_earlier_records(tmp_path):
    synthetic_run(tmp_path, steps=40, eval_every=10)
    before = MetricsLog.records(tmp_path)
    log = MetricsLog(tmp_path)
    log.truncate_after(20)                          # resuming from the checkpoint of step 20
    assert MetricsLog.records(tmp_path) == [r for r in before if r["step"] <= 20]
    assert [r["kind"] for r in MetricsLog.records(tmp_path)][-2:] == ["train", "eval"]   # step 20's evaluation stays
    log.write("train", 21, loss=0.5)                # appends to the new file, not the replaced one
    log.close()
    assert MetricsLog.records(tmp_path)[-1] == {"kind": "train", "step": 21, "loss": 0.5}
    assert files_under(tmp_path) == ["log.jsonl"]   # no temporary left behind


def test_tensorboard_without_the_package_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)     # as if tensorboard were not installed
    with pytest.raises(ConfigError, match=r"pip install 'glassformer\[tensorboard\]'") as info:
        MetricsLog(tmp_path / "run", tensorboard=True)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()



def test_tensorboard_mirrors_numbers_and_forgets_what_a_resume_truncates(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLog(tmp_path, tensorboard=True) as log:
        for step in (1, 2, 3):
            log.write("train", step, loss=1.0 / step, lr=1e-3, note="text is not a scalar")
        log.truncate_after(1)
        log.write("train", 2, loss=9.0)
        log.write("eval", 2, loss=0.5, ppl=math.exp(0.5))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/lr", "eval/loss", "eval/ppl"}
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 1.0), (2, 9.0)]

# -- glassformer plot ----------------------------------------------------------------------------
def test_plot_writes_loss_and_lr_pngs_of_the_figure_size(tmp_path, capsys):
    run = synthetic_run(tmp_path / "run")
    code, out, err = run_cli(capsys, "plot", run)
    assert code == 0, err
    assert out.splitlines() == [str(run / "loss.png"), str(run / "lr.png")]
    for name in ("loss.png", "lr.png"):
        height, width = mpimg.imread(run / name).shape[:2]
        assert (width, height) == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    assert files_under(run) == ["log.jsonl", "loss.png", "lr.png"]      # no temporaries


def test_plot_out_writes_elsewhere_and_an_eval_only_log_gives_loss_png(tmp_path, capsys):
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 3.0 / s}) + "\n" for s in (100, 200)),
                                   encoding="utf-8")
    code, out, err = run_cli(capsys, "plot", run, "--out", tmp_path / "figures" / "a")
    assert code == 0, err
    assert out.splitlines() == [str(tmp_path / "figures" / "a" / "loss.png")]
    assert "no lr.png" in err and len(err.strip().splitlines()) == 1
    assert files_under(run) == ["log.jsonl"]


@pytest.mark.parametrize("case, words", [
    ("missing run dir", ["does not exist"]),
    ("no log", ["has no log.jsonl"]),
    ("empty log", ["no records"]),
    ("no loss", ["no finite loss"]),
])
def test_plot_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, words):
    run = tmp_path / "run"
    if case != "missing run dir":
        run.mkdir()
    if case == "empty log":
        (run / "log.jsonl").write_text("", encoding="utf-8")
    if case == "no loss":
        (run / "log.jsonl").write_text('{"kind": "train", "step": 1, "loss": null, "lr": 0.001}\n',
                                       encoding="utf-8")
    before = files_under(tmp_path)
    code, out, err = run_cli(capsys, "plot", run, "--out", tmp_path / "figures")
    one_line_error(code, err, str(run), *words)
    assert "Traceback" not in err and out == ""
    assert files_under(tmp_path) == before


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    run = synthetic_run(tmp_path / "run", steps=2, eval_every=2)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, _, err = run_cli(capsys, "plot", run)
    one_line_error(code, err, "pip install 'glassformer[plot]'")
    assert files_under(run) == ["log.jsonl"]
