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
from test_inference_options import sharp_gpt_dir

from glassformer.cli.main import main
from glassformer.data.instructions import KINDS, numbers_instructions
from glassformer.errors import ConfigError, TrainingInterrupted
from glassformer.model_dir import load_model_dir
from glassformer.training.posttrain_quickstart import (PAIRS_FILES, RL_FILES, RL_PROBE, STAGE_TIME_LIMITS, STAGES,
                                                       TIME_BUDGET, ChainSettings, held_out_accuracy, model_answers,
                                                       partly_right_kinds,
                                                       pretraining_text, run_posttrain_quickstart, self_made_pairs,
                                                       stage_notes)

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


def test_self_made_pairs_set_the_right_answer_over_the_models_own_wrong_one(tmp_path):
    # a random GPT that says something (the tiny chain's models mostly end at once) over the task's characters;
    # its context of 64 holds the short questions: sums and comparisons
    out = sharp_gpt_dir(tmp_path / "model", pretraining_text(200), {"task": "lm"})
    questions = [q for q in numbers_instructions("train", 48) if q.kind in ("add", "compare")]
    said = model_answers(out, questions)
    # every third question's answer made what the model says (so it is right there and no pair is made); the
    # longest answer kept, so that the answers are decoded as long as before (and come out the same)
    longest = max(len(q.answer) for q in questions)
    asked = [q.__class__(q.prompt, s, q.kind) if i % 3 == 0 and s and len(q.answer) < longest and len(s) <= longest
             else q for i, (q, s) in enumerate(zip(questions, said))]
    assert model_answers(out, asked) == said
    pairs = self_made_pairs(out, asked)
    wrong = [(q, s) for q, s in zip(asked, said) if s and s != q.answer]
    assert 0 < len(wrong) < len(asked)
    assert pairs == [{"prompt": q.prompt, "chosen": q.answer, "rejected": s} for q, s in wrong]
    # by kind, the share answered right: the same greedy answers counted
    right = {}
    for q, s in zip(asked, said):
        right.setdefault(q.kind, []).append(s == q.answer)
    shares = partly_right_kinds(out, asked)
    assert shares == {k: sum(right[k]) / len(right[k]) for k in KINDS if k in right}
    assert list(shares) == ["add", "compare"] and any(0 < share < 1 for share in shares.values())


def test_dpo_trains_on_the_sft_models_mistakes_and_rl_on_partly_right_kinds(chain):
    out, summary, printed = chain
    dpo = summary["stages"]["dpo"]
    if dpo["pairs"] == "self-made":          # the files DPO read: the SFT model's mistakes, as self_made_pairs makes them
        rows = [json.loads(line) for line in (out / PAIRS_FILES["train"]).read_text().splitlines()]
        assert rows == self_made_pairs(out / "sft" / "best", numbers_instructions("train", TINY["dpo"]["examples"]))
        assert len(rows) == dpo["train_pairs"] and "answered wrongly by the sft model" in printed
    else:
        assert "too few for pairs of its own" in printed
    rl = summary["stages"]["rl"]
    probe = numbers_instructions("train", TINY["rl"]["examples"])
    assert rl["probe"] == partly_right_kinds(out / "dpo" / "best", probe[:RL_PROBE])
    partly = [k for k, share in rl["probe"].items() if 0 < share < 1]
    assert rl["kinds"] == (partly or list(rl["probe"]))
    rows = [json.loads(line) for line in (out / RL_FILES["train"]).read_text().splitlines()]
    assert rows == [{"prompt": q.prompt, "answer": q.answer, "kind": q.kind} for q in probe if q.kind in rl["kinds"]]


def test_a_stage_that_does_not_help_is_named_with_its_figures(chain):
    out, summary, printed = chain
    for note in summary["notes"]:
        assert note in printed and note in (out / "summary.md").read_text()
    shares = {"base": 0.1, "sft": 0.3, "dpo": 0.2, "rl": 0.45}      # DPO lowers it; SFT and RL raise it
    made = {**summary, "stages": {name: {**stage, "exact_match": {**stage["exact_match"], "all": shares[name]}}
                                  for name, stage in summary["stages"].items()}}
    notes = stage_notes(made, out)
    assert len(notes) == 1 and notes[0].startswith("DPO did not raise the held-out exact match (30.0% after sft, "
                                                   "20.0% after it)")
    assert "validation pairs" in notes[0]
    shares.update(rl=0.2)                    # RL: no higher than DPO
    notes = stage_notes(made | {"stages": {n: {**s, "exact_match": {**s["exact_match"], "all": shares[n]}}
                                           for n, s in made["stages"].items()}}, out)
    assert [n.split(" ")[0] for n in notes] == ["DPO", "RL"] and "groups scored all alike" in notes[1]
    # a gain under one standard error of the share before (over the 24 questions: sqrt(0.2 * 0.8 / 24) = 8.2%)
    # may be chance: named, with its size
    for rl, noted in ((0.2 + 1 / 24, True), (0.2 + 2 / 24, False)):
        shares.update(rl=rl)
        notes = stage_notes(made | {"stages": {n: {**s, "exact_match": {**s["exact_match"], "all": shares[n]}}
                                               for n, s in made["stages"].items()}}, out)
        assert [n.split(" ")[0] for n in notes] == (["DPO", "RL"] if noted else ["DPO"])
        if noted:
            assert notes[1].startswith("RL raised the held-out exact match by only 1 of 24 questions (20.0% after "
                                       "dpo, 24.2% after it), less than one standard error (8.2%): ")


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
