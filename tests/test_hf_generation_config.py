"""The round trip keeps more than tensors: special-token ids (config.json) and generation settings
(generation_config.json) survive ``convert --from hf`` then ``--to hf``; our own decoding defaults
(generation.json) become generation_config.json and come back; and an export of our char-level GPT
names its own end-of-text token, not GPT-2's 50256 (outside its vocabulary)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers import run_cli, untrained_gpt

transformers = pytest.importorskip("transformers")

SETTINGS = dict(num_beams=3, max_length=40, do_sample=True, temperature=0.7, top_k=5, top_p=0.9,
                bad_words_ids=[[7], [8, 9]], forced_eos_token_id=101)
IDS = dict(bos_token_id=1, eos_token_id=[100, 101], pad_token_id=0)


def _convert(capsys, way: str, source, out) -> None:
    code, _, err = run_cli(capsys, "convert", f"--{way}", "hf", source, out)
    assert code == 0, err


def _tiny_llama(path) -> None:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=120, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=32, max_position_embeddings=64,
                                      **IDS)
    model = transformers.LlamaForCausalLM(config)
    model.generation_config = transformers.GenerationConfig(**SETTINGS, **IDS)
    model.save_pretrained(path, safe_serialization=True)


def test_llama_special_tokens_and_generation_config_survive_the_round_trip(tmp_path, capsys):
    _tiny_llama(tmp_path / "hf")
    _convert(capsys, "from", tmp_path / "hf", tmp_path / "ours")
    ours = json.loads((tmp_path / "ours" / "generation.json").read_text())
    assert (ours["temperature"], ours["top_k"], ours["top_p"]) == (0.7, 5, 0.9)     # what `generate` samples with
    _convert(capsys, "to", tmp_path / "ours", tmp_path / "back")

    before, after = (transformers.AutoConfig.from_pretrained(tmp_path / d) for d in ("hf", "back"))
    for name, value in IDS.items():
        assert getattr(after, name) == getattr(before, name) == value, name
    before, after = (transformers.GenerationConfig.from_pretrained(tmp_path / d) for d in ("hf", "back"))
    for name, value in {**SETTINGS, **IDS}.items():
        assert getattr(after, name) == getattr(before, name) == value, name


def test_greedy_hugging_face_settings_stay_greedy(tmp_path, capsys):
    """do_sample=False (transformers' default) decodes greedily whatever temperature says: so do we."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=120, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=32, max_position_embeddings=64, **IDS)
    model = transformers.LlamaForCausalLM(config)
    model.generation_config = transformers.GenerationConfig(do_sample=False, num_beams=1, **IDS)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    _convert(capsys, "from", tmp_path / "hf", tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "generation.json").read_text())["temperature"] == 0.0
    _convert(capsys, "to", tmp_path / "ours", tmp_path / "back")
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "back").do_sample is False


def test_char_gpt_exports_its_own_end_of_text_and_decoding_defaults(tmp_path, capsys, caplog):
    text = "to be or not to be, that is the question"
    ours = untrained_gpt(tmp_path / "ours", text, temperature=0.8, top_k=20)
    from glassformer.model_dir import load_model_dir

    tok = load_model_dir(ours).tokenizer
    _convert(capsys, "to", ours, tmp_path / "hf")

    config = transformers.AutoConfig.from_pretrained(tmp_path / "hf")
    assert config.bos_token_id == config.eos_token_id == tok.eos_id < config.vocab_size
    generation = transformers.GenerationConfig.from_pretrained(tmp_path / "hf")
    assert (generation.do_sample, generation.temperature, generation.top_k) == (True, 0.8, 20)
    assert generation.eos_token_id == tok.eos_id and generation.pad_token_id == tok.pad_id
    with caplog.at_level(logging.WARNING):
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert not [r for r in caplog.records if "token_id" in r.getMessage()], caplog.text
    assert hf.generation_config.eos_token_id == tok.eos_id

    _convert(capsys, "from", tmp_path / "hf", tmp_path / "again")
    again = json.loads((tmp_path / "again" / "generation.json").read_text())
    assert (again["temperature"], again["top_k"]) == (0.8, 20)


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_translator_generation_config_survives_the_round_trip(tmp_path, capsys, family):
    """An encoder–decoder's beam size, length limit, banned and forced tokens come back as they were;
    its ids are its config's (pad, eos, decoder start), written by its exporter."""
    torch.manual_seed(0)
    if family == "marian":
        model = transformers.MarianMTModel(transformers.MarianConfig(
            vocab_size=60, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=20,
            pad_token_id=59, decoder_start_token_id=59, eos_token_id=0))
        settings = dict(num_beams=4, max_length=30, bad_words_ids=[[59]], forced_eos_token_id=0,
                        pad_token_id=59, eos_token_id=0, decoder_start_token_id=59)
    else:
        model = transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=60, d_model=16, d_kv=4, num_heads=4, d_ff=32, num_layers=1, decoder_start_token_id=0))
        settings = dict(num_beams=3, max_length=25, no_repeat_ngram_size=2, pad_token_id=0, eos_token_id=1,
                        decoder_start_token_id=0)
    model.generation_config = transformers.GenerationConfig(**settings)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    _convert(capsys, "from", tmp_path / "hf", tmp_path / "ours")
    _convert(capsys, "to", tmp_path / "ours", tmp_path / "back")
    before, after = (transformers.GenerationConfig.from_pretrained(tmp_path / d) for d in ("hf", "back"))
    assert after.to_diff_dict() == before.to_diff_dict()
    for name, value in settings.items():
        assert getattr(after, name) == value, name
    before, after = (transformers.AutoConfig.from_pretrained(tmp_path / d) for d in ("hf", "back"))
    for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id", "bos_token_id"):
        assert getattr(after, name, None) == getattr(before, name, None), name
