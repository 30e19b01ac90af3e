"""hf -> glassformer -> hf reproduces every tensor of the original checkpoint bit for bit, and the
exported directory loads in transformers with the same outputs (every family with an exporter)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from helpers import run_cli

transformers = pytest.importorskip("transformers")


def _bert(cls):
    return lambda: getattr(transformers, cls)(transformers.BertConfig(
        vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=20, num_labels=3))


FAMILIES = {
    "bert": _bert("BertModel"),
    "bert-mlm": _bert("BertForMaskedLM"),
    "bert-classify": _bert("BertForSequenceClassification"),
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=60, n_embd=16, n_layer=2, n_head=2, n_positions=20, bos_token_id=0, eos_token_id=0)),
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=32, max_position_embeddings=32)),
    "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=60, d_model=16, d_kv=4, num_heads=4, d_ff=32, num_layers=2, feed_forward_proj="gated-gelu",
        decoder_start_token_id=0)),
    "marian": lambda: transformers.MarianMTModel(transformers.MarianConfig(
        vocab_size=60, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=20,
        pad_token_id=59, decoder_start_token_id=59, eos_token_id=0)),
    "vit": lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=3)),
}


def inputs(name: str):
    g = torch.Generator().manual_seed(0)
    if name == "vit":
        return {"pixel_values": torch.rand(2, 1, 8, 8, generator=g)}
    ids = torch.randint(1, 60, (2, 9), generator=g)
    if name in ("t5", "marian"):
        return {"input_ids": ids, "decoder_input_ids": ids[:, :5]}
    return {"input_ids": ids}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_hf_to_ours_to_hf_is_bit_for_bit(name, tmp_path, capsys):
    torch.manual_seed(0)
    hf = FAMILIES[name]().eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    code, _, err = run_cli(capsys, "convert", "--from", "hf", str(tmp_path / "hf"), str(tmp_path / "ours"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "convert", "--to", "hf", str(tmp_path / "ours"), str(tmp_path / "back"))
    assert code == 0, err
    original = load_file(str(tmp_path / "hf" / "model.safetensors"))
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(back) == sorted(original)
    different = [k for k in original if not torch.equal(original[k], back[k])]
    assert not different, different[:5]
    again = type(hf).from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        first, second = hf(**inputs(name)), again(**inputs(name))
    key = "logits" if hasattr(first, "logits") else "last_hidden_state"
    assert torch.equal(getattr(first, key), getattr(second, key))


def test_convert_refuses_the_wrong_direction(tmp_path, capsys):
    hf = FAMILIES["bert"]()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    code, _, err = run_cli(capsys, "convert", "--to", "hf", str(tmp_path / "hf"), str(tmp_path / "x"))
    assert code == 2 and "already a Hugging Face directory" in err and not (tmp_path / "x").exists()


def test_sharded_checkpoints_load_and_bad_ones_are_one_line(tmp_path, capsys):
    from glassformer.model_dir import load_model_dir

    torch.manual_seed(0)
    hf = FAMILIES["llama"]().eval()
    hf.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    ours = load_model_dir(tmp_path / "sharded").model
    x = inputs("llama")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=1e-5, rtol=1e-5)
    next((tmp_path / "sharded").glob("model-*.safetensors")).unlink()          # a shard missing
    code, _, err = run_cli(capsys, "convert", "--from", "hf", str(tmp_path / "sharded"), str(tmp_path / "out"))
    ours_lines = [line for line in err.splitlines() if line.startswith("glassformer")]   # (HF's save bar above)
    assert code == 2 and "lists the shard" in err and len(ours_lines) == 1
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "empty" / "pytorch_model.bin").write_bytes(b"pickle")
    code, _, err = run_cli(capsys, "convert", "--from", "hf", str(tmp_path / "empty"), str(tmp_path / "out"))
    assert code == 2 and "never loads" in err and not (tmp_path / "out").exists()
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "mamba"}')
    code, _, err = run_cli(capsys, "convert", "--from", "hf", str(tmp_path / "empty"), str(tmp_path / "out"))
    assert code == 2 and "'mamba' is not supported" in err
