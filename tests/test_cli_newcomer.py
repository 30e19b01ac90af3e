"""The command line as a newcomer meets it: interrupts, time limits, bad settings, blank lines,
options in any order, --version and --help.  Every answer to a mistake is one line and exit 2."""

import errno
import importlib.metadata
import io
import json
import pathlib

import pytest
import torch
from helpers import one_line_error, run_cli, untrained_translator

from glassformer.cli.common import fresh_output_dir
from glassformer.data.numbers import number_corpus
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import build_model, preset
from glassformer.tokenizers import Tokenizer
from glassformer.training.trainer import TrainResult

TEXT = "the quick brown fox jumps over the lazy dog.\nTHE END?\n" * 40


@pytest.fixture(scope="module")
def corpus():
    return number_corpus("de", "en", max_number=999, n_train=300, n_valid=40, n_test=40, seed=3)


@pytest.fixture(scope="module")
def translator(tmp_path_factory, corpus):
    return untrained_translator(tmp_path_factory.mktemp("newcomer") / "translator", corpus, 150, max_len=32)


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = Tokenizer.train_char([TEXT])
    path = tmp_path_factory.mktemp("newcomer") / "gpt"
    save_model_dir(path, build_model(preset("gpt-tiny", vocab_size=tok.vocab_size)), tok,
                   generation={"task": "lm", "temperature": 0.8})
    return path


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def pairs_file(tmp_path, corpus):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in corpus.train), encoding="utf-8")
    return path


def save_tiny_model(path):
    tok = Tokenizer.train_char([TEXT])
    save_model_dir(path, build_model(preset("gpt-tiny", vocab_size=tok.vocab_size)), tok)


# -- 1. an interrupt keeps what training saved ---------------------------------------------------
def test_interrupt_after_a_save_keeps_the_run_directory(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with fresh_output_dir(run):
            save_tiny_model(run / "best")
            raise KeyboardInterrupt
    assert (run / "best" / "config.json").is_file()
    load_model_dir(run / "best")                               # complete, loadable


def test_failure_before_any_save_leaves_nothing(tmp_path):
    run = tmp_path / "a" / "b" / "run"
    for exc in (KeyboardInterrupt, RuntimeError):
        with pytest.raises(exc):
            with fresh_output_dir(run):
                (run / "tokens.npy").write_bytes(b"0")
                raise exc
        assert not (tmp_path / "a").exists()                   # the parents it created are gone too


def test_cli_interrupt_during_training_keeps_saved_models(tmp_path, capsys, monkeypatch, text_file):
    import glassformer.training.lm as lm

    def interrupted_training(source, settings, out_dir, **_):       # 165 steps in, with evaluations saved
        save_tiny_model(pathlib.Path(out_dir) / "best")
        save_tiny_model(pathlib.Path(out_dir) / "last")
        raise KeyboardInterrupt

    monkeypatch.setattr(lm, "train_lm", interrupted_training)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "lm", "--data", text_file, "--out", run)
    assert code == 130 and "interrupted" in err
    assert (run / "best" / "model.safetensors").is_file() and (run / "last" / "config.json").is_file()
    assert "best" in err and "last" in err                     # it says what was kept


def test_cli_interrupt_before_any_save_leaves_nothing(tmp_path, capsys, monkeypatch, pairs_file):
    import glassformer.training.translation as translation

    def interrupted_early(train, valid, settings, out_dir, **_):
        (pathlib.Path(out_dir) / "log.jsonl").write_text("", encoding="utf-8")
        raise KeyboardInterrupt

    monkeypatch.setattr(translation, "train_translation", interrupted_early)
    run = tmp_path / "run"
    code, _, _ = run_cli(capsys, "train", "translation", "--src", pairs_file, "--out", run)
    assert code == 130 and not run.exists()


# -- 2. the summary says when the time limit cut training ---------------------------------------
def test_train_result_stop_note():
    assert TrainResult(steps=800, best_loss=1.0, max_steps=800).stop_note == ""
    cut = TrainResult(steps=465, best_loss=1.0, max_steps=800, time_limit=540.0, time_limited=True)
    assert cut.stop_note == "stopped by the time limit of 540 s after 465 of 800 steps"


def test_train_lm_summary_names_the_time_limit(tmp_path, capsys, text_file):
    common = ["train", "lm", "--data", text_file, "--preset", "gpt-tiny", "--block-size", 16, "--batch-size", 2,
              "--eval-every", 2]
    code, out, err = run_cli(capsys, *common, "--steps", 5, "--time-limit", 0.0001, "--out", tmp_path / "cut")
    assert code == 0, err
    assert "stopped by the time limit of 0.0001 s after 1 of 5 steps" in out.splitlines()[-1]
    code, out, err = run_cli(capsys, *common, "--steps", 2, "--out", tmp_path / "full")
    assert code == 0, err
    assert "time limit" not in out


def test_train_translation_summary_names_the_time_limit(tmp_path, capsys, pairs_file):
    code, out, err = run_cli(capsys, "train", "translation", "--src", pairs_file, "--preset", "vaswani-tiny",
                             "--vocab-size", 120, "--max-tokens", 512, "--steps", 4, "--time-limit", 0.0001,
                             "--out", tmp_path / "run")
    assert code == 0, err
    assert "stopped by the time limit of 0.0001 s after 1 of 4 steps" in out.splitlines()[-1]
    assert (tmp_path / "run" / "best" / "config.json").is_file()


# -- 3. settings that used to escape as "unexpected error" -----------------------------------------
def test_preset_of_the_other_family_is_one_line(tmp_path, capsys, text_file, pairs_file):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "translation", "--src", pairs_file, "--preset", "gpt-tiny", "--out", out)
    one_line_error(code, err, "gpt-tiny", "vaswani-small")
    code, _, err = run_cli(capsys, "train", "lm", "--data", text_file, "--preset", "vaswani-tiny", "--out", out)
    one_line_error(code, err, "vaswani-tiny", "gpt-mini")
    assert not out.exists()


def test_unknown_preset_lists_the_commands_family_only(tmp_path, capsys, text_file, pairs_file):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "lm", "--data", text_file, "--preset", "gpt-huge", "--out", out)
    one_line_error(code, err, "gpt-huge", "gpt-mini", "llama-tiny")
    assert "vaswani" not in err
    code, _, err = run_cli(capsys, "train", "translation", "--src", pairs_file, "--preset", "nope", "--out", out)
    one_line_error(code, err, "nope", "vaswani-base")
    assert "gpt" not in err
    assert not out.exists()


@pytest.mark.parametrize("config, words", [
    ({"model": {"bogus": 1}}, ["bogus", "d_model"]),
    ({"steps": "ten"}, ["steps", "'ten'", "integer"]),
    ({"steps": 2.5}, ["steps", "integer"]),
    ({"time_limit": "soon"}, ["time_limit", "number"]),
    ({"seed": None}, ["seed", "integer"]),
    ({"preset": 7}, ["preset", "string"]),
    ({"model": [1, 2]}, ["model"]),
    ({"steps": 0}, ["steps=0", "positive"]),
])
@pytest.mark.parametrize("command", ["lm", "translation"])
def test_bad_config_file_values_are_one_line(tmp_path, capsys, text_file, pairs_file, config, words, command):
    (tmp_path / "c.json").write_text(json.dumps(config), encoding="utf-8")
    data = ["--data", text_file] if command == "lm" else ["--src", pairs_file]
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", command, *data, "--config", tmp_path / "c.json", "--out", out)
    one_line_error(code, err, *words)
    assert not out.exists()


def test_unwritable_out_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch, text_file, pairs_file):
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    out = tmp_path / "a-file" / "run"                            # a path under a file cannot be created
    code, _, err = run_cli(capsys, "train", "lm", "--data", text_file, "--out", out)
    one_line_error(code, err, str(out))
    code, _, err = run_cli(capsys, "train", "lm", "--data", text_file, "--out", tmp_path / "a-file")
    one_line_error(code, err, str(tmp_path / "a-file"), "not a directory")

    read_only = tmp_path / "mnt" / "run"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):                            # a read-only file system
        if self.is_relative_to(tmp_path / "mnt"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    code, _, err = run_cli(capsys, "train", "translation", "--src", pairs_file, "--out", read_only)
    one_line_error(code, err, str(read_only), "Read-only file system")
    code, _, err = run_cli(capsys, "quickstart", "--out", read_only, "--steps", 1)
    one_line_error(code, err, str(read_only), "Read-only file system")


def device_commands(tmp_path, text_file, pairs_file, translator, gpt_dir):
    """Every command with --device, each given input it would otherwise work on for a while."""
    (tmp_path / "src.txt").write_text("eins\n", encoding="utf-8")
    return {
        "quickstart": ["quickstart", "--out", tmp_path / "qs", "--steps", 1],
        "train lm": ["train", "lm", "--data", text_file, "--out", tmp_path / "lm"],
        "train translation": ["train", "translation", "--src", pairs_file, "--out", tmp_path / "tr"],
        "translate": ["translate", translator, "eins"],
        "evaluate": ["evaluate", translator, "--src", tmp_path / "src.txt", "--ref", tmp_path / "src.txt"],
        "generate": ["generate", gpt_dir, "the"],
    }


@pytest.mark.parametrize("command", ["quickstart", "train lm", "train translation", "translate", "evaluate",
                                     "generate"])
def test_every_device_goes_through_pick_device_first(tmp_path, capsys, monkeypatch, text_file, pairs_file,
                                                     translator, gpt_dir, command):
    import glassformer.devices as devices

    monkeypatch.setattr(devices, "available_devices", lambda: ["cpu"])     # cuda/mps absent, on any machine
    args = device_commands(tmp_path, text_file, pairs_file, translator, gpt_dir)[command]
    for device, words in (("tpu", ["'tpu'", "unknown"]), ("cuda", ["'cuda'", "not available"]),
                          ("mps", ["'mps'", "not available"])):
        code, out, err = run_cli(capsys, *args, "--device", device)
        one_line_error(code, err, *words)
        assert out == ""                                       # refused before any work
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.tsv", "src.txt", "text.txt"]


# -- 4 and 7. blank lines and meaningless numbers -------------------------------------------------
def test_translate_skips_blank_stdin_lines_and_keeps_lines_aligned(translator, corpus, capsys, monkeypatch):
    a, b = corpus.test[0][0], corpus.test[1][0]
    code, alone, _ = run_cli(capsys, "translate", translator, a, b)
    assert code == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{a}\n\n   \n{b}\n"))
    code, out, err = run_cli(capsys, "translate", translator)
    assert code == 0, err
    lines = out.split("\n")
    assert lines == [alone.split("\n")[0], "", "", alone.split("\n")[1], ""]
    assert len(err.strip().splitlines()) == 1 and "2 blank" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n \n"))
    code, out, err = run_cli(capsys, "translate", translator)
    one_line_error(code, err, "no lines")


@pytest.mark.parametrize("steps", [0, -5])
def test_steps_below_one_are_refused_everywhere(tmp_path, capsys, text_file, pairs_file, steps):
    for args in (["quickstart"], ["train", "lm", "--data", text_file], ["train", "translation", "--src", pairs_file]):
        out = tmp_path / "run"
        code, stdout, err = run_cli(capsys, *args, "--steps", steps, "--out", out)
        one_line_error(code, err, "--steps", str(steps), "positive")
        assert stdout == "" and not out.exists()


def test_mbr_settings_without_mbr_are_refused(translator, capsys, tmp_path):
    for flags in (["--mbr-utility", "chrf"], ["--mbr-candidates", "4"]):
        code, out, err = run_cli(capsys, "translate", translator, "eins", *flags)
        one_line_error(code, err, flags[0], "--mbr")
        assert out == ""
        code, _, err = run_cli(capsys, "quickstart", "--out", tmp_path / "qs", *flags)
        one_line_error(code, err, flags[0], "--mbr")
        assert not (tmp_path / "qs").exists()
    code, out, err = run_cli(capsys, "translate", translator, "eins", "--mbr", "--mbr-candidates", "3",
                             "--mbr-utility", "chrf", "--temperature", "1", "--seed", "1")
    assert code == 0 and len(out.splitlines()) == 1, err


def test_unknown_characters_of_a_tokenizer():
    tok = Tokenizer.train_char(["hello world"])
    assert tok.unknown_characters("hello") == []
    assert tok.unknown_characters("hellø wörld, hellø!") == ["ø", "ö", ",", "!"]
    bpe = Tokenizer.train_bpe(["hello world", "hello there"], 100)
    assert bpe.unknown_characters("hello ж there") == ["ж"]
    assert Tokenizer.train_byte_bpe(["hello world"], 300).unknown_characters("ж€") == []


def test_generate_warns_about_dropped_prompt_characters(gpt_dir, capsys, tmp_path):
    code, out, err = run_cli(capsys, "generate", gpt_dir, "the qu€ick ж", "--max-new-tokens", 5, "--temperature", 0)
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "'€'" in lines[0] and "'ж'" in lines[0], err
    code, out, err = run_cli(capsys, "generate", gpt_dir, "the quick", "--max-new-tokens", 5, "--temperature", 0)
    assert code == 0 and err == ""
    (tmp_path / "prompts.txt").write_text("the\nfox €\nTHE €\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "generate", gpt_dir, "--prompts-file", tmp_path / "prompts.txt",
                             "--max-new-tokens", 3, "--temperature", 0)
    assert code == 0 and len(out.splitlines()) == 3
    assert len(err.strip().splitlines()) == 1 and "2 of 3 prompts" in err and "'€'" in err


# -- 5. --version and --help ----------------------------------------------------------------------
def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out == f"glassformer {importlib.metadata.version('glassformer')}\n"


def help_text(capsys, monkeypatch, *command):
    monkeypatch.setenv("COLUMNS", "1000")                      # no wrapping inside a preset name
    code, out, _ = run_cli(capsys, *command, "--help")
    assert code == 0
    return " ".join(out.split())


def test_help_shows_defaults_and_the_familys_presets(capsys, monkeypatch):
    from glassformer.models import PRESETS
    from glassformer.training.lm import LMSettings
    from glassformer.training.translation import TranslationSettings

    text = help_text(capsys, monkeypatch, "train", "lm")
    assert f"(default: {LMSettings.preset})" in text and f"optimiser steps (default: {LMSettings.steps})" in text
    assert "(default: auto)" in text and "(default: runs/lm)" in text
    gpt = [n for n, make in PRESETS.items() if make().family == "gpt"]
    assert gpt and all(n in text for n in gpt) and "vaswani" not in text

    text = help_text(capsys, monkeypatch, "train", "translation")
    assert f"(default: {TranslationSettings.preset})" in text
    assert f"(default: {TranslationSettings.steps})" in text and "(default: auto)" in text
    assert all(n in text for n, make in PRESETS.items() if make().family == "transformer") and "gpt" not in text

    text = help_text(capsys, monkeypatch, "quickstart")
    from glassformer.training.quickstart import QUICKSTART_SETTINGS
    assert f"--steps STEPS training steps (default: {QUICKSTART_SETTINGS['steps']}" in text and "(default: auto)" in text
    text = help_text(capsys, monkeypatch, "translate")
    assert "beam size (1 = greedy; default: a Hugging Face directory's num_beams, else 1)" in " ".join(text.split()) and "(default: 16)" in text and "(default: bleu)" in text
    assert "(default: auto)" in help_text(capsys, monkeypatch, "generate")


# -- 6. options before, between and after the text --------------------------------------------------
def test_translate_options_in_any_order(translator, corpus, capsys):
    src = corpus.test[2][0]
    answers = [run_cli(capsys, "translate", translator, *args) for args in (
        [src, "--beam", "2"], ["--beam", "2", src], [src, "--beam", "2", "--", src], ["--beam", "2", "--", src, src])]
    assert all(code == 0 for code, _, _ in answers), answers
    one, two = answers[0][1], answers[2][1]
    assert answers[1][1] == one and answers[3][1] == two == one + one


def test_generate_options_in_any_order(gpt_dir, capsys):
    base = ["--max-new-tokens", "6", "--temperature", "0"]
    outs = {run_cli(capsys, "generate", gpt_dir, *args)[1] for args in (
        ["the", *base], [*base, "the"], [base[0], base[1], "the", *base[2:]], [*base, "--", "the"])}
    assert len(outs) == 1 and next(iter(outs)).startswith("the")


def test_debug_after_the_command_shows_the_traceback(tmp_path):
    from glassformer.cli.main import main
    from glassformer.errors import CheckpointError

    with pytest.raises(CheckpointError):
        main(["translate", str(tmp_path / "nowhere"), "eins", "--debug"])


def test_train_without_a_task_shows_help(capsys):
    code, out, _ = run_cli(capsys, "train")
    assert code == 2 and "lm" in out and "translation" in out


def test_missing_model_directory_names_only_what_is_missing(capsys):
    for command in ("translate", "generate"):
        code, _, err = run_cli(capsys, command)
        one_line_error(code, err, "model_dir")
        assert "text" not in err and "prompt" not in err
