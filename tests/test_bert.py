"""BERT against Hugging Face ``transformers`` with the same weights (tiny random models, every head),
the paper's sizes, and checkpoints whose config and weights disagree."""

from __future__ import annotations

import json

import pytest
import torch

from glassformer.errors import CheckpointError
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import build_model, num_parameters, preset
from glassformer.tokenizers import Tokenizer
from helpers import run_cli

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def hf_dir(tmp_path, cls_name: str, **config):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**{**TINY, **config})
    model = getattr(transformers, cls_name)(cfg).eval()
    with torch.no_grad():                 # non-trivial LayerNorms and biases, so a mapping mistake shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / cls_name
    model.save_pretrained(path, safe_serialization=True)
    Tokenizer.train_wordpiece(["the quick brown fox jumps over the lazy dog"] * 20, 120).save(path / "tokenizer.json")
    return model, path


def batch():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(5, 120, (3, 11), generator=g)
    tokens[1, 7:] = 0                      # padding
    tokens[2, 4:] = 0
    segments = torch.zeros_like(tokens)
    segments[0, 6:] = 1
    return tokens, segments, (tokens != 0).long()


@pytest.mark.parametrize("cls_name, config", [
    ("BertModel", {}),
    ("BertForMaskedLM", {}),
    ("BertForSequenceClassification", {"num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"}}),
    ("BertForSequenceClassification", {"num_labels": 1}),
    ("BertForTokenClassification", {"num_labels": 4}),
])
def test_every_head_equals_hugging_face(tmp_path, cls_name, config):
    hf, path = hf_dir(tmp_path, cls_name, **config)
    ours = load_model_dir(path).model
    tokens, segments, mask = batch()
    with torch.no_grad():
        out = hf(input_ids=tokens, token_type_ids=segments, attention_mask=mask)
        mine = ours(tokens, segments)
    real = mask.bool()
    if cls_name == "BertModel":
        torch.testing.assert_close(mine[real], out.last_hidden_state[real], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.pool(mine), out.pooler_output, atol=1e-5, rtol=1e-5)
    elif cls_name == "BertForSequenceClassification":
        expected = out.logits.squeeze(-1) if config["num_labels"] == 1 else out.logits
        torch.testing.assert_close(mine, expected, atol=1e-5, rtol=1e-5)
        assert ours.config.regression == (config["num_labels"] == 1)
        if not ours.config.regression:
            assert ours.config.labels == ["a", "b", "c"]
    else:
        torch.testing.assert_close(mine[real], out.logits[real], atol=1e-5, rtol=1e-5)


def test_masked_lm_loss_equals_hugging_face_on_the_selected_positions(tmp_path):
    hf, path = hf_dir(tmp_path, "BertForMaskedLM")
    ours = load_model_dir(path).model
    tokens, segments, mask = batch()
    labels = torch.full_like(tokens, -100)
    labels[0, 2], labels[0, 5], labels[1, 3], labels[2, 1] = 7, 9, 11, 13
    with torch.no_grad():
        expected = hf(input_ids=tokens, token_type_ids=segments, attention_mask=mask, labels=labels).loss
        mine = ours(tokens, segments, targets=labels)
    torch.testing.assert_close(mine, expected, atol=1e-5, rtol=1e-5)


def test_the_round_trip_through_our_directory_keeps_every_tensor(tmp_path):
    _, path = hf_dir(tmp_path, "BertForMaskedLM")
    loaded = load_model_dir(path)
    save_model_dir(tmp_path / "ours", loaded.model, loaded.tokenizer)
    again = load_model_dir(tmp_path / "ours")
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name
    assert again.tokenizer.encode_sentences(["the lazy fox"]) == loaded.tokenizer.encode_sentences(["the lazy fox"])


def test_presets_have_the_papers_sizes():
    with torch.device("meta"):
        base = num_parameters(build_model(preset("bert-base")))
        large = num_parameters(build_model(preset("bert-large")))
    assert base == 109_482_240                       # transformers.BertModel(BertConfig()) with its pooler
    assert abs(base - 110e6) / 110e6 < 0.01 and abs(large - 340e6) / 340e6 < 0.02


def test_a_config_that_does_not_match_its_weights_names_the_tensor(tmp_path, capsys):
    _, path = hf_dir(tmp_path, "BertModel")
    cfg = json.loads((path / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"tensor 'encoder.layers.0.feed_forward.linear1.weight' has shape "
                                              r"\[64, 32\] but the config makes it \[48, 32\]"):
        load_model_dir(path)
    # the same for a glassformer directory
    model = build_model(preset("bert-tiny"))
    save_model_dir(tmp_path / "ours", model)
    cfg = json.loads((tmp_path / "ours" / "config.json").read_text())
    cfg["d_ff"] = 100
    (tmp_path / "ours" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"tensor 'encoder.layers.0.feed_forward.linear1.\w+' has shape \[128"
                                              r".* but the config makes it \[100"):
        load_model_dir(tmp_path / "ours")


def test_unsupported_architectures_are_refused_by_name(tmp_path):
    _, path = hf_dir(tmp_path, "BertModel")
    cfg = json.loads((path / "config.json").read_text())
    cfg["architectures"] = ["BertForQuestionAnswering"]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="BertForQuestionAnswering"):
        load_model_dir(path)
    cfg["model_type"] = "roberta"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="roberta"):
        load_model_dir(path)


def test_params_prints_bert_base(capsys):
    code, out, err = run_cli(capsys, "params", "bert-base")
    assert code == 0, err
    assert "109,482,240" in out or "109.48M" in out
