"""The post-training quickstart: a tiny chain (base → SFT → DPO → RL, a few steps each) from the command line
and from Python, its summary against a recomputation from the saved model directories, the reuse of a
finished base model, and the refusals."""

import contextlib
import io
import json
import shutil
import signal

import pytest
import torch
from helpers import one_line_error, run_cli

from glassformer.cli.main import main
from glassformer.data.instructions import KINDS, numbers_instructions
from glassformer.errors import ConfigError, TrainingInterrupted
from glassformer.model_dir import load_model_dir
from glassformer.training.posttrain_quickstart import (STAGE_TIME_LIMITS, STAGES, TIME_BUDGET, ChainSettings,
                                                       held_out_accuracy, pretraining_text, run_posttrain_quickstart)

# A chain of a few steps per stage on a one-layer GPT with d_model 32: what each stage's settings hold
# besides the steps (a --config file for the command line).
TINY = {"model": {"max_len": 160, "n_layers": 1, "d_model": 32, "n_heads": 2}, "pretraining_questions": 200,
        "progress": False, "base": {"batch_size": 4, "eval_batches": 2},
        "sft": {"examples": 32, "eval_questions": 8, "test_questions": 8, "batch_size": 8},
        "dpo": {"examples": 16, "eval_questions": 8, "batch_size": 4},
        "rl": {"examples": 16, "eval_questions": 8, "batch_size": 2, "group": 2, "max_new_tokens": 8}}
STEPS = {"base_steps": 3, "sft_steps": 2, "dpo_steps": 2, "rl_steps": 2}
QUESTIONS = 24


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A tiny chain run from the command line (capsys is function-scoped): (its directory, the summary, what
    it printed)."""
    root = tmp_path_factory.mktemp("chain")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY), encoding="utf-8")
    out = root / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["quickstart", "post-training", "--out", str(out), "--config", str(config),
                     "--test-questions", str(QUESTIONS), *[f"--{k.replace('_', '-')}={v}" for k, v in STEPS.items()]])
    assert code == 0, stderr.getvalue()
    return out, json.loads((out / "summary.json").read_text(encoding="utf-8")), stdout.getvalue()


def greedy_answer(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """The model's greedy completion of the numbers task's prompt, one whole forward per token (no cache, no
    batching): the reference the summary's exact match is checked against."""
    ids = tokenizer.encode(f"User: {prompt}\nAssistant: ")     # the default chat template, written out
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids + new]))[0, -1].argmax())
            if token == tokenizer.eos_id:
                break
            new.append(token)
    return tokenizer.decode(new)


def test_the_chain_writes_every_stage_and_its_summary(chain):
    out, summary, printed = chain
    assert list(summary["stages"]) == list(STAGES)
    for stage in STAGES:
        assert (out / stage / "best" / "config.json").is_file()
        entry = summary["stages"][stage]
        assert entry["model"] == f"{stage}/best" and entry["steps"] == STEPS[f"{stage}_steps"]
        assert entry["reused"] is False
        assert sorted(entry["exact_match"]) == sorted(["all", *KINDS])
        assert f"[{stage}] held-out exact match" in printed
    assert summary["test_questions"] == QUESTIONS
    assert json.loads((out / "chain.json").read_text())["stages"] == summary["stages"]
    table = (out / "summary.md").read_text(encoding="utf-8")
    assert all(f"| {stage} |" in table for stage in STAGES)
    # the base model read the task's questions and answers as plain text, in the chat template's format
    text = (out / "pretraining.txt").read_text(encoding="utf-8")
    assert text == pretraining_text(TINY["pretraining_questions"]) and text.startswith("User: ")


def test_the_summary_is_the_exact_match_of_the_saved_models(chain):
    out, summary, _ = chain
    questions = numbers_instructions("test", QUESTIONS)
    for stage in STAGES:                     # every stage and question type, recomputed from its directory
        assert held_out_accuracy(out / stage / "best", questions) == summary["stages"][stage]["exact_match"]
    # one stage by the test's own greedy decoding, a question at a time
    loaded = load_model_dir(out / "sft" / "best")
    longest = max(len(loaded.tokenizer.encode(q.answer)) for q in questions) + 2
    answers = [greedy_answer(loaded.model.eval(), loaded.tokenizer, q.prompt, longest) for q in questions]
    right = {kind: [a.strip().split("\n")[0].strip() == q.answer for q, a in zip(questions, answers) if q.kind == kind]
             for kind in KINDS}
    expected = {"all": sum(map(sum, right.values())) / len(questions), **{k: sum(v) / len(v) for k, v in right.items()}}
    assert summary["stages"]["sft"]["exact_match"] == pytest.approx(expected)
    # a tiny model answers (nearly) nothing right: questions whose answer is what it says show that a right
    # answer is counted (every other one, so the share is neither 0 nor 1)
    said = [q.__class__(q.prompt, a.strip().split("\n")[0].strip() if i % 2 else q.answer, q.kind)
            for i, (q, a) in enumerate(zip(questions, answers))]
    hits = [s.answer == a.strip().split("\n")[0].strip() for s, a in zip(said, answers)]
    assert 0 < sum(hits) < len(hits)
    assert held_out_accuracy(out / "sft" / "best", said)["all"] == pytest.approx(sum(hits) / len(hits))


def test_a_second_chain_reuses_the_finished_base_model(chain, capsys, monkeypatch, tmp_path):
    out, first = tmp_path / "chain", chain[1]
    shutil.copytree(chain[0], out)          # (the other tests read the chain's own directory)
    weights = (out / "base" / "best" / "model.safetensors").read_bytes()
    sft_before = (out / "sft" / "best" / "model.safetensors").stat().st_mtime_ns

    def stop(*args, **kwargs):              # base and SFT are what this test is about: stop the chain after them
        raise RuntimeError("stopped after SFT")

    monkeypatch.setattr("glassformer.training.posttrain_quickstart.train_dpo", stop)
    with pytest.raises(RuntimeError, match="stopped after SFT"):
        run_posttrain_quickstart(out, {**TINY, **STEPS, "test_questions": QUESTIONS, "sft_steps": 3})
    printed = capsys.readouterr().out
    assert "reusing the base model" in printed and "[base] pretraining" not in printed
    assert (out / "base" / "best" / "model.safetensors").read_bytes() == weights
    stages = json.loads((out / "chain.json").read_text())["stages"]
    assert list(stages) == ["base", "sft"]
    assert stages["base"]["reused"] is True
    assert stages["base"]["exact_match"] == first["stages"]["base"]["exact_match"]
    assert stages["sft"]["steps"] == 3 and stages["sft"]["reused"] is False
    assert (out / "sft" / "best" / "model.safetensors").stat().st_mtime_ns != sft_before       # trained again
    # the previous chain's later stages and summary are gone, not left beside the new ones
    assert not (out / "dpo").exists() and not (out / "rl").exists() and not (out / "summary.json").exists()


def test_an_interrupted_base_run_is_continued_not_started_again(tmp_path, monkeypatch, capsys):
    import glassformer.training.lm as lm

    steps = []

    def interrupted(module, batch):          # SIGTERM during the second step: the trainer saves it and stops
        steps.append(len(steps) + 1)
        if len(steps) == 2:
            signal.raise_signal(signal.SIGTERM)
        return real(module, batch)

    real = lm.lm_loss
    monkeypatch.setattr(lm, "lm_loss", interrupted)
    out, settings = tmp_path / "chain", {**TINY, **STEPS, "base_steps": 4, "test_questions": 8}
    with pytest.raises(TrainingInterrupted):
        run_posttrain_quickstart(out, settings)
    assert json.loads((out / "chain.json").read_text())["stages"] == {}           # the base is not finished
    assert json.loads((out / "base" / "last" / "training.json").read_text())["step"] == 2
    capsys.readouterr()

    def stop(*args, **kwargs):              # the base is what this test is about: stop the chain after it
        raise RuntimeError("stopped after the base")

    monkeypatch.setattr("glassformer.training.posttrain_quickstart.finetune_sft", stop)
    with pytest.raises(RuntimeError, match="stopped after the base"):
        run_posttrain_quickstart(out, settings)
    assert "continuing the interrupted base run" in capsys.readouterr().out
    base = json.loads((out / "chain.json").read_text())["stages"]["base"]
    assert (base["resumed_from"], base["steps"], base["reused"]) == (2, 4, False)
    assert steps == [1, 2, 3, 4]                                                   # steps 3 and 4 only, the second time


def test_a_directory_that_is_not_a_chains_is_refused_in_one_line(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    code, out, err = run_cli(capsys, "quickstart", "post-training", "--out", other, "--base-steps", 1)
    one_line_error(code, err, str(other), "notes.txt", "not a post-training quickstart's", "--out")
    assert out == "" and sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    with pytest.raises(ConfigError, match="not a post-training quickstart's"):
        run_posttrain_quickstart(other, {**TINY, **STEPS})
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, out, err = run_cli(capsys, "quickstart", "post-training", "--out", a_file)
    one_line_error(code, err, str(a_file), "file")


@pytest.mark.parametrize("args, words", [
    (["quickstart", "post-training", "--src-lang", "fr"], ["--src-lang", "translation quickstart"]),
    (["quickstart", "post-training", "--steps", "5"], ["--steps", "--base-steps"]),
    (["quickstart", "--sft-steps", "5"], ["--sft-steps", "quickstart post-training"]),
    (["quickstart", "post-training", "--rl-steps", "0"], ["--rl-steps", "0"]),
    (["quickstart", "post-training", "--time-budget", "-1"], ["--time-budget"]),
    (["quickstart", "rlhf"], ["rlhf", "post-training"]),
])
def test_bad_flags_are_refused_in_one_line_before_any_work(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, *args, "--out", out)
    one_line_error(code, err, *words)
    assert stdout == "" and not out.exists()


def test_bad_chain_settings_are_refused_in_one_line(tmp_path, capsys):
    config = tmp_path / "chain.json"
    for settings, words in (({"sft": {"lerning_rate": 1}}, ["sft", "lerning_rate", "SFTSettings"]),
                            ({"steps": 3}, ["steps", "base_steps"]),
                            ({"test_questions": 0}, ["test_questions"]),
                            ({"sft": {"lr": "fast"}}, ["the sft stage", "lr", "'fast'"]),
                            ({"rl": {"group": 1}}, ["the rl stage", "group=1"]),
                            ({"model": {"n_layerz": 2}}, ["the base stage", "n_layerz"])):
        config.write_text(json.dumps(settings))
        code, out, err = run_cli(capsys, "quickstart", "post-training", "--config", config, "--out", tmp_path / "run")
        one_line_error(code, err, *words)
        assert out == "" and not (tmp_path / "run").exists()


def test_the_time_budget_is_shared_as_the_stage_limits():
    settings = ChainSettings(time_budget=TIME_BUDGET / 2)
    assert {s: settings.time_limit(s) for s in STAGES} == {s: STAGE_TIME_LIMITS[s] / 2 for s in STAGES}
    assert ChainSettings(time_budget=None).time_limit("rl") is None
    assert ChainSettings(rl_steps=7).stage_settings("rl", base="b")["steps"] == 7
    assert ChainSettings(sft={"lr": 1e-3}).stage_settings("sft", base="b")["lr"] == 1e-3
