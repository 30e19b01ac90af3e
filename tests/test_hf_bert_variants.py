"""BERT checkpoints whose config.json changes what transformers computes: an untied masked-LM output,
a causal (decoder) BERT, multi-label and multi-output regression heads.  Each is reproduced (same
logits, same loss as transformers) or refused in one line naming the setting."""

from __future__ import annotations

import json

import pytest
import torch

from glassformer.errors import ConfigError
from glassformer.model_dir import load_model_dir
from helpers import run_cli
from test_bert import batch, hf_dir

transformers = pytest.importorskip("transformers")


def test_an_untied_masked_lm_output_equals_transformers_and_survives_the_round_trip(tmp_path, capsys):
    hf, path = hf_dir(tmp_path, "BertForMaskedLM", tie_word_embeddings=False)
    assert not torch.equal(hf.cls.predictions.decoder.weight, hf.bert.embeddings.word_embeddings.weight)
    tokens, segments, mask = batch()
    with torch.no_grad():
        expected = hf(input_ids=tokens, token_type_ids=segments, attention_mask=mask).logits
        ours = load_model_dir(path).model
        mine = ours(tokens, segments)
    real = mask.bool()
    torch.testing.assert_close(mine[real], expected[real], atol=1e-4, rtol=1e-4)
    targets = torch.where(real, tokens, -100)
    with torch.no_grad():
        hf_loss = hf(input_ids=tokens, token_type_ids=segments, attention_mask=mask, labels=targets).loss
        torch.testing.assert_close(ours(tokens, segments, targets=targets), hf_loss, atol=1e-5, rtol=1e-5)

    code, _, err = run_cli(capsys, "convert", "--from", "hf", str(path), str(tmp_path / "ours"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "convert", "--to", "hf", str(tmp_path / "ours"), str(tmp_path / "back"))
    assert code == 0, err
    assert json.loads((tmp_path / "back" / "config.json").read_text())["tie_word_embeddings"] is False
    again = transformers.BertForMaskedLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        back = again(input_ids=tokens, token_type_ids=segments, attention_mask=mask).logits
    torch.testing.assert_close(back[real], expected[real], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("setting", ["is_decoder", "add_cross_attention"])
def test_a_causal_or_cross_attending_bert_is_refused_by_name(tmp_path, setting):
    _, path = hf_dir(tmp_path, "BertModel", is_decoder=True, add_cross_attention=setting == "add_cross_attention")
    if setting == "add_cross_attention":      # the refusal names the setting that is on
        cfg = json.loads((path / "config.json").read_text())
        cfg["is_decoder"] = False
        (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=setting):
        load_model_dir(path)


def test_a_multi_label_classifier_has_transformers_logits_loss_and_round_trip(tmp_path, capsys):
    hf, path = hf_dir(tmp_path, "BertForSequenceClassification", num_labels=4,
                      problem_type="multi_label_classification")
    tokens, segments, mask = batch()
    targets = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    ours = load_model_dir(path).model
    assert ours.config.multi_label
    with torch.no_grad():
        expected = hf(input_ids=tokens, token_type_ids=segments, attention_mask=mask, labels=targets)
        torch.testing.assert_close(ours(tokens, segments), expected.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(tokens, segments, targets=targets), expected.loss, atol=1e-5, rtol=1e-5)
        summed = ours(tokens, segments, targets=targets, reduction="sum")
    torch.testing.assert_close(summed / len(tokens), expected.loss, atol=1e-5, rtol=1e-5)   # per example, as trained

    code, _, err = run_cli(capsys, "convert", "--from", "hf", str(path), str(tmp_path / "ours"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "convert", "--to", "hf", str(tmp_path / "ours"), str(tmp_path / "back"))
    assert code == 0, err
    again = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    assert again.config.problem_type == "multi_label_classification"
    with torch.no_grad():
        back = again(input_ids=tokens, token_type_ids=segments, attention_mask=mask, labels=targets)
    torch.testing.assert_close(back.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.loss, expected.loss, atol=1e-5, rtol=1e-5)


def test_single_label_targets_do_not_fit_a_multi_label_head_nor_the_reverse(tmp_path):
    _, path = hf_dir(tmp_path, "BertForSequenceClassification", num_labels=3)
    tokens, segments, _ = batch()
    with pytest.raises(Exception, match="multi_label"):
        load_model_dir(path).model(tokens, segments, targets=torch.ones(3, 3))


def test_a_regression_over_several_numbers_is_refused_naming_num_labels_and_problem_type(tmp_path):
    _, path = hf_dir(tmp_path, "BertForSequenceClassification", num_labels=3, problem_type="regression")
    with pytest.raises(ConfigError, match="problem_type='regression' with num_labels=3"):
        load_model_dir(path)


def test_a_multi_label_classifier_gives_each_label_its_own_probability(tmp_path):
    from glassformer.tasks import classify_texts

    hf, path = hf_dir(tmp_path, "BertForSequenceClassification", num_labels=4,
                      problem_type="multi_label_classification")
    loaded = load_model_dir(path)
    text = "the quick brown fox"
    predictions, _ = classify_texts(loaded.model, loaded.tokenizer, [text], top_k=4)
    ids, segments, _ = loaded.tokenizer.encode_sentences([text], None, max_len=40)
    with torch.no_grad():
        probabilities = hf(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(segments)).logits[0].sigmoid()
    expected = sorted(((f"LABEL_{i}", p) for i, p in enumerate(probabilities.tolist())), key=lambda t: -t[1])
    assert [name for name, _ in predictions[0].top] == [name for name, _ in expected]
    torch.testing.assert_close(torch.tensor([p for _, p in predictions[0].top]), torch.tensor([p for _, p in expected]),
                               atol=1e-5, rtol=1e-5)


# -- fine-tuning with several labels per example --------------------------------------------------------
MULTI = [("rockets reach orbit", "sci,space"), ("the telescope saw a comet", "space"),
         ("cells divide", "sci"), ("a quiet evening", ""), ("stars and planets", "space,sci"), ("good food", "")]


def write_multi(path, rows=MULTI):
    if path.suffix == ".jsonl":
        lines = [json.dumps({"text": t, "label": [n for n in labels.split(",") if n]}) for t, labels in rows]
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        lines = [f"text{sep}label"] + [f'{t}{sep}"{labels}"' if sep == "," else f"{t}\t{labels}" for t, labels in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_multi_label_files_give_one_zero_or_one_per_label(tmp_path):
    from glassformer.data.classify import encode_examples, label_names, read_examples
    from glassformer.tokenizers import Tokenizer

    tok = Tokenizer.train_wordpiece([t for t, _ in MULTI], 100)
    expected = [[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]    # labels ["sci", "space"]
    for suffix in (".csv", ".tsv", ".jsonl"):
        rows = read_examples(write_multi(tmp_path / f"train{suffix}"), multi_label=True)
        assert label_names(rows) == ["sci", "space"]
        data, _ = encode_examples(rows, tok, ["sci", "space"], 32, multi_label=True)
        assert data.batch(range(6)).targets.tolist() == expected, suffix
    with pytest.raises(Exception, match="multi_label is off"):
        encode_examples(rows, tok, ["sci", "space"], 32)


def test_finetune_multi_label_trains_on_transformers_loss(tmp_path, capsys):
    from glassformer.data.classify import encode_examples, read_examples

    train, valid = write_multi(tmp_path / "train.csv", MULTI * 3), write_multi(tmp_path / "valid.csv")
    code, out, err = run_cli(capsys, "finetune", "classify", "--train", train, "--valid", valid, "--multi-label",
                             "--model", "bert-tiny", "--vocab-size", "100", "--steps", "3", "--eval-every", "3",
                             "--device", "cpu", "--out", tmp_path / "run")
    assert code == 0, err
    best = tmp_path / "run" / "best"
    config = json.loads((best / "config.json").read_text())
    assert config["multi_label"] and config["labels"] == ["sci", "space"]
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    loss = [r for r in logged if r["kind"] == "eval"][-1]["loss"]                  # the validation loss, step 3

    code, _, err = run_cli(capsys, "convert", "--to", "hf", best, tmp_path / "hf")
    assert code == 0, err
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.problem_type == "multi_label_classification"
    loaded = load_model_dir(best)
    data, _ = encode_examples(read_examples(valid, multi_label=True), loaded.tokenizer, ["sci", "space"],
                              loaded.config.max_len, multi_label=True)
    batch = data.batch(range(len(data)))
    with torch.no_grad():
        expected = hf(input_ids=batch.tokens, token_type_ids=batch.segments, attention_mask=batch.mask.long(),
                      labels=batch.targets).loss
    assert abs(loss - float(expected)) < 1e-5


def test_multi_label_scores_equal_scikit_learn():
    from glassformer.training.classify import scores

    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(40, 5, generator=g)
    targets = (torch.rand(40, 5, generator=g) < 0.3).float()
    targets[:, 4] = 0                                   # a label nobody has
    outputs[:, 4] = -1.0                                # nor is predicted: left out of the mean, as in macro_f1
    figures = scores(outputs, targets.tolist(), regression=False, multi_label=True)
    predicted = (outputs.sigmoid() > 0.5).int().numpy()
    true = targets.int().numpy()
    assert figures["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(
        true, predicted, average="macro", labels=[0, 1, 2, 3], zero_division=0), abs=1e-12)
    assert figures["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(true, predicted), abs=1e-12)
    assert figures["loss"] == pytest.approx(float(torch.nn.BCEWithLogitsLoss()(outputs, targets)), abs=1e-6)
