"""`--resume RUN_DIR` continues the run that was started: every setting and the data it was started
with are the defaults, `--extend` lengthens it (saying what that does to the learning rate), a run of
another task is named with the command that resumes it, and a checkpoint that lacks a weight is refused.

Tiny runs (gpt-tiny on 16-token windows of 10,000 characters, vaswani-tiny on 140 numbers), in-process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from glassformer.data.numbers import number_corpus
from glassformer.training import trainer as trainer_module
from glassformer.training.metrics import MetricsLog
from glassformer.training.schedules import cosine_lr
from helpers import one_line_error, run_cli

SHAKESPEARE = Path(__file__).resolve().parents[1] / "glassformer" / "data" / "corpora" / "tinyshakespeare.txt"


@pytest.fixture(scope="module")
def lm_args(tmp_path_factory):
    """`train lm` of gpt-tiny on the first 10,000 characters of Tiny Shakespeare (add --steps, --out ...)."""
    text = tmp_path_factory.mktemp("corpus") / "text.txt"
    text.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:10_000], encoding="utf-8")
    return ["train", "lm", "--data", text, "--preset", "gpt-tiny", "--block-size", "16", "--batch-size", "2",
            "--warmup", "1", "--device", "cpu"]


def stop_during_step(monkeypatch, step: int) -> None:
    """Interrupt the next run as it begins ``step`` (Ctrl-C): ``last/`` holds its last evaluation."""
    original = trainer_module.Trainer.train_step

    def interrupted(self, batches):
        if self.step + 1 == step:
            raise KeyboardInterrupt
        return original(self, batches)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", interrupted)


def logged(run: Path, kind: str) -> list[int]:
    return [r["step"] for r in MetricsLog.records(run) if r["kind"] == kind]


# -- 1. every setting the run was started with --------------------------------------------------------
def test_resume_restores_every_setting_and_an_explicit_flag_still_wins(tmp_path, capsys, monkeypatch, lm_args):
    run = tmp_path / "run"
    stop_during_step(monkeypatch, 3)
    code, _, err = run_cli(capsys, *lm_args, "--steps", "8", "--eval-every", "2", "--keep-checkpoints", "2",
                           "--log-every", "1", "--out", run)
    assert code == 130, err
    monkeypatch.undo()
    code, out, err = run_cli(capsys, "train", "lm", "--resume", run, "--log-every", "2")
    assert code == 0, err
    assert "resuming at step 2" in out and "trained 8 steps" in out
    assert logged(run, "eval") == [2, 4, 6, 8]                    # --eval-every 2, not the default 250
    assert logged(run, "train") == [1, 2, 4, 6, 8]                # --log-every 1 before, 2 (given) after
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000006", "step-00000008"]
    saved = json.loads((run / "last" / "training.json").read_text())["fingerprint"]
    assert saved["resumable"]["log_every"] == 2 and saved["resumable"]["keep_checkpoints"] == 2


def test_a_checkpoint_saved_before_every_setting_was_recorded_still_resumes(tmp_path, capsys, monkeypatch, lm_args):
    run = tmp_path / "run"
    stop_during_step(monkeypatch, 3)
    assert run_cli(capsys, *lm_args, "--steps", "4", "--eval-every", "2", "--out", run)[0] == 130
    monkeypatch.undo()
    info_file = run / "last" / "training.json"
    info = json.loads(info_file.read_text())
    del info["max_steps"], info["fingerprint"]["task"], info["fingerprint"]["resumable"]   # as older runs wrote it
    info_file.write_text(json.dumps(info))
    code, out, err = run_cli(capsys, "train", "lm", "--resume", run)
    assert code == 0, err
    assert "resuming at step 2" in out and logged(run, "eval") == [2, 4]       # the defaults: evaluated at the end


# -- 2. the data it was started with --------------------------------------------------------------------
@pytest.fixture()
def parallel_files(tmp_path):
    corpus = number_corpus("de", "en", max_number=149, n_valid=10, n_test=10, seed=0)
    src, tgt = tmp_path / "train.de", tmp_path / "train.en"
    src.write_text("".join(s + "\n" for s, _ in corpus.train), encoding="utf-8")
    tgt.write_text("".join(t + "\n" for _, t in corpus.train), encoding="utf-8")
    return src, tgt


TRANSLATION = ["--preset", "vaswani-tiny", "--vocab-size", "80", "--max-tokens", "300", "--eval-every", "2",
               "--device", "cpu"]


def test_translation_resumes_with_the_run_alone_and_refuses_changed_data(tmp_path, capsys, parallel_files):
    src, tgt = parallel_files
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "translation", "--src", src, "--tgt", tgt, "--valid-fraction", "0.1",
                           "--steps", "2", *TRANSLATION, "--out", run)
    assert code == 0, err
    code, out, err = run_cli(capsys, "train", "translation", "--resume", run)     # its files and its 10% split
    assert code == 0, err
    assert "resuming at step 2" in out and "trained 2 steps" in out
    with src.open("a", encoding="utf-8") as f, tgt.open("a", encoding="utf-8") as g:
        f.write("hundertfünfzig\n")
        g.write("one hundred fifty\n")
    code, _, err = run_cli(capsys, "train", "translation", "--resume", run)
    one_line_error(code, err, "its data differ", "digest")


# -- 3. --extend ---------------------------------------------------------------------------------------
def test_extend_trains_a_finished_run_for_more_steps_on_the_stretched_schedule(tmp_path, capsys, monkeypatch, lm_args):
    run = tmp_path / "run"
    assert run_cli(capsys, *lm_args, "--steps", "4", "--eval-every", "2", "--out", run)[0] == 0
    code, _, err = run_cli(capsys, "train", "lm", "--resume", run, "--steps", "6")
    one_line_error(code, err, "its settings differ (steps: 4 there, 6 now)", "add --extend")

    used = {}                                         # the learning rate each step is taken with
    original = trainer_module.Trainer.train_step

    def recording(self, batches):
        used[self.step + 1] = self.optimizer.param_groups[0]["lr"]
        return original(self, batches)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", recording)
    code, out, err = run_cli(capsys, "train", "lm", "--resume", run, "--steps", "6", "--extend")
    assert code == 0, err
    lr5, lr6 = (1e-3 * cosine_lr(step - 1, 1.0, 1, 6, 0.1) for step in (5, 6))   # --lr default 1e-3, --warmup 1
    assert used == pytest.approx({5: lr5, 6: lr6}, rel=1e-12)      # the 6-step cosine from step 5 on
    assert (f"extending from 4 to 6 steps: the cosine schedule is stretched to 6 steps: the learning rate at step 5 "
            f"is {lr5:.3g} (the 4-step schedule gives {1e-3 * 0.1:.3g}) and {lr6:.3g} at step 6") in out
    assert "resuming at step 4" in out and "trained 6 steps" in out and logged(run, "eval") == [2, 4, 6]
    assert json.loads((run / "last" / "training.json").read_text())["max_steps"] == 6

    code, _, err = run_cli(capsys, "train", "lm", "--resume", run, "--steps", "6", "--extend")
    one_line_error(code, err, "--extend", "more steps than its 6", "N > 6")
    code, _, err = run_cli(capsys, *lm_args, "--steps", "6", "--extend", "--out", tmp_path / "new")
    one_line_error(code, err, "--extend", "--resume")
    assert not (tmp_path / "new").exists()


def test_extending_a_translation_keeps_its_inverse_square_root_schedule(tmp_path, capsys, parallel_files):
    src, tgt = parallel_files
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "translation", "--src", src, "--tgt", tgt, "--steps", "2", *TRANSLATION,
                   "--out", run)[0] == 0
    code, out, err = run_cli(capsys, "train", "translation", "--resume", run, "--steps", "3", "--extend")
    assert code == 0, err
    assert ("extending from 2 to 3 steps: the inverse-square-root schedule does not depend on the number of steps"
            in out) and "trained 3 steps" in out


# -- 4. a run of another task ------------------------------------------------------------------------
def test_resuming_a_run_of_another_task_names_the_command_that_resumes_it(tmp_path, capsys, lm_args):
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. the dog sat on the log.\n" * 40, encoding="utf-8")
    mlm = tmp_path / "mlm"
    assert run_cli(capsys, "train", "mlm", "--data", text, "--preset", "bert-tiny", "--vocab-size", "60",
                   "--block-size", "16", "--batch-size", "2", "--steps", "1", "--device", "cpu", "--out", mlm)[0] == 0
    code, _, err = run_cli(capsys, "train", "lm", "--resume", mlm)
    one_line_error(code, err, f"{mlm} is a masked-LM (mlm) run", f"`glassformer train mlm --resume {mlm}`")
    assert "unknown" not in err

    lm = tmp_path / "lm"
    assert run_cli(capsys, *lm_args, "--steps", "1", "--out", lm)[0] == 0
    for command in (["train", "mlm"], ["train", "translation"], ["train", "vit"], ["train", "caption"],
                    ["finetune", "classify"]):
        code, _, err = run_cli(capsys, *command, "--resume", lm)
        one_line_error(code, err, f"{lm} is a language-model (lm) run", f"`glassformer train lm --resume {lm}`")


# -- 5. a weight missing from the checkpoint ---------------------------------------------------------
def test_a_checkpoint_without_an_untied_weight_is_refused(tmp_path, capsys, lm_args):
    run = tmp_path / "run"
    assert run_cli(capsys, *lm_args, "--steps", "2", "--out", run)[0] == 0
    weights_file = run / "last" / "model.safetensors"
    weights = load_file(str(weights_file))
    assert "lm_head.weight" not in weights            # tied to embed.token.weight: stored once, and resumed from
    assert run_cli(capsys, "train", "lm", "--resume", run)[0] == 0
    missing = "decoder.layers.1.feed_forward.linear2.weight"
    save_file({k: v for k, v in weights.items() if k != missing}, str(weights_file), metadata={"format": "pt"})
    code, _, err = run_cli(capsys, "train", "lm", "--resume", run)
    one_line_error(code, err, str(weights_file), missing)
