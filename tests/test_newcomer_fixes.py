"""What a newcomer met next (issue 17): text on stdin that is not UTF-8, absurd figure sizes and
formats, quickstart over another run, the help naming every `train` task, progress=False that
is silent, and a ViT's rate counted in images, not tokens."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import one_line_error, run_cli, untrained_translator

from glassformer.cli.main import _subcommands, build_parser
from glassformer.data.numbers import number_corpus
from glassformer.errors import ConfigError
from glassformer.model_dir import save_model_dir
from glassformer.tokenizers import Tokenizer
from glassformer.training.classify import classifier_from_preset
from glassformer.training.quickstart import run_quickstart
from glassformer.training.translation import TranslationSettings, train_translation

TINY_TRANSLATION = dict(preset="vaswani-tiny", vocab_size=100, max_tokens=512, steps=2, warmup=2, eval_every=1,
                        log_every=1, device="cpu")


@pytest.fixture(scope="module")
def corpus():
    return number_corpus("de", "en", max_number=199, n_train=100, n_valid=20, n_test=20, seed=0)


@pytest.fixture(scope="module")
def translator(tmp_path_factory, corpus):
    return untrained_translator(tmp_path_factory.mktemp("fixes") / "translator", corpus, 100, max_len=32)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("fixes") / "classifier"
    tok = Tokenizer.train_wordpiece(["red green blue", "a sky so blue", "grass is green"], 100)
    save_model_dir(path, classifier_from_preset("bert-tiny", tok, ["blue", "green", "red"], None, seed=0), tok,
                   generation={"task": "classify"})
    return path


# -- 1. stdin that is not UTF-8 is refused like such a file ------------------------------------------
@pytest.mark.parametrize("command", ["translate", "classify"])
def test_non_utf8_stdin_is_one_line_naming_stdin(command, translator, classifier):
    model = translator if command == "translate" else classifier
    # LC_ALL=C: Python then reads stdin with surrogateescape, which handed the bad bytes on as text
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIO", "PYTHONUTF8"))}
    done = subprocess.run([sys.executable, "-m", "glassformer", command, str(model), "--device", "cpu"],
                          input=b"\xff\xfe bad\n", capture_output=True, env={**env, "LC_ALL": "C"}, timeout=300)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and done.stdout == b"", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glassformer: error: stdin is not UTF-8"), err
    assert "Traceback" not in err


# -- 2. plot-positions refuses absurd sizes and formats before drawing ---------------------------------
@pytest.mark.parametrize("args, words", [
    (["--length", "1000000000"], ["length", "1 to 10,000", "1000000000"]),
    (["--d-model", "1000000000"], ["d_model", "2 to 4,096"]),
])
def test_plot_positions_refuses_an_absurd_size(tmp_path, capsys, args, words):
    code, _, err = run_cli(capsys, "plot-positions", *args, "--out", tmp_path / "positions.png")
    one_line_error(code, err, *words)
    assert list(tmp_path.iterdir()) == []


def test_plot_positions_refuses_a_format_matplotlib_cannot_write_before_drawing(tmp_path, capsys, monkeypatch):
    def no_drawing(*args, **kwargs):
        raise AssertionError("the figure was drawn before --out was checked")

    monkeypatch.setattr("glassformer.explain.figures.positional_encoding_figure", no_drawing)
    code, _, err = run_cli(capsys, "plot-positions", "--out", tmp_path / "pp.txt")
    one_line_error(code, err, ".txt", "pp.txt", "png, svg, pdf")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    code, out, err = run_cli(capsys, "plot-positions", "--length", 20, "--d-model", 8, "--out", tmp_path / "pp.svg")
    assert code == 0, err
    assert (tmp_path / "pp.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")


# -- 3. quickstart over another run: refused at once, with what quickstart offers -------------------------
def test_quickstart_over_a_train_translation_run_is_refused_before_the_corpus(tmp_path, capsys, monkeypatch,
                                                                               corpus):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in corpus.train), encoding="utf-8")
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "translation", "--src", pairs, "--preset", "vaswani-tiny", "--steps", 1,
                           "--vocab-size", 100, "--max-tokens", 512, "--out", run, "--device", "cpu")
    assert code == 0, err
    before = sorted(p.name for p in run.iterdir())

    def no_corpus(*args, **kwargs):
        raise AssertionError("the corpus was built before the run directory was checked")

    monkeypatch.setattr("glassformer.training.quickstart.number_corpus", no_corpus)
    code, out, err = run_cli(capsys, "quickstart", "--out", run, "--steps", 1)
    one_line_error(code, err, f"{run} already holds a training run", "another --out",
                   f"glassformer train translation --resume {run}")
    assert "Building" not in out
    assert sorted(p.name for p in run.iterdir()) == before                  # nothing replaced or removed


@pytest.mark.parametrize("results, replaced", [({"exact_match": 1.0, "by_range": {}}, True),   # a quickstart's
                                                ({"test_accuracy": 0.9}, False)])           # a ViT run's
def test_quickstart_replaces_only_a_previous_quickstart(tmp_path, capsys, monkeypatch, results, replaced):
    run = tmp_path / "run"
    (run / "last").mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(results), encoding="utf-8")

    class Started(Exception):
        pass

    def corpus_started(*args, **kwargs):
        raise Started

    monkeypatch.setattr("glassformer.training.quickstart.number_corpus", corpus_started)
    if replaced:
        with pytest.raises(Started):
            run_quickstart(run, steps=1)
        assert list(run.iterdir()) == []
    else:
        with pytest.raises(ConfigError, match="already holds a previous run"):
            run_quickstart(run, steps=1)
        assert sorted(p.name for p in run.iterdir()) == ["last", "results.json"]


# -- 4. the help names every train task ------------------------------------------------------------------
def test_help_names_every_registered_train_task(capsys):
    tasks = list(_subcommands(_subcommands(build_parser())["train"]))
    assert {"translation", "lm", "mlm", "vit", "caption"} <= set(tasks)
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    text = " ".join(out.split())                                        # argparse wraps long help lines
    assert f"train train a model ({', '.join(tasks)})" in text


# -- 5. progress=False prints nothing ----------------------------------------------------------------------
def test_progress_false_prints_nothing(tmp_path, capfd, corpus):
    run = train_translation(corpus.train, corpus.valid, TranslationSettings(**TINY_TRANSLATION, progress=False),
                            tmp_path / "run")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert run.result.steps == 2 and len(run.result.history) == 2          # it trained and evaluated all the same
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["train", "eval", "train", "eval"]
    train_translation(corpus.train, corpus.valid, TranslationSettings(**TINY_TRANSLATION), tmp_path / "shown")
    out, _ = capfd.readouterr()
    assert "eval step=2" in out and "target tokens/s" in out                # progress=True still speaks


# -- 6. a ViT counts images ---------------------------------------------------------------------------------
def test_vit_progress_and_log_count_images(tmp_path, capsys):
    torch.manual_seed(0)
    out_dir = tmp_path / "vit"
    code, out, err = run_cli(capsys, "train", "vit", "--dataset", "digits", "--steps", 2, "--eval-every", 2,
                             "--log-every", 1, "--batch-size", 16, "--out", out_dir, "--device", "cpu")
    assert code == 0, err
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(steps) == 2 and all(line.endswith(" images/s") for line in steps), out
    assert "tok/s" not in out and "tokens/s" not in out
    train = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert all(r["images_per_s"] > 0 and "tokens_per_s" not in r for r in train)
