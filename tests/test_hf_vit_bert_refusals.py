"""A ViT or BERT checkpoint loads as transformers loads it, or is refused naming the setting: a ViT whose
query/key/value projections have no bias (qkv_bias=false), and a BertForMaskedLM whose config says tied
while model.safetensors holds a decoder matrix (or bias) of its own."""

from __future__ import annotations

import pytest
import torch

from glassformer.errors import ConfigError
from glassformer.model_dir import load_model_dir
from test_bert import batch, hf_dir

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")


def test_a_vit_without_query_key_value_biases_is_refused_naming_qkv_bias(tmp_path):
    cfg = transformers.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=4, intermediate_size=64, num_labels=3, qkv_bias=False)
    transformers.ViTForImageClassification(cfg).save_pretrained(tmp_path / "hf", safe_serialization=True)
    with pytest.raises(ConfigError, match="qkv_bias=false") as e:
        load_model_dir(tmp_path / "hf")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("own", ["weight", "bias", "both"])
def test_a_tied_masked_lm_whose_file_holds_its_own_decoder_loads_it_as_transformers_does(tmp_path, own):
    _, path = hf_dir(tmp_path, "BertForMaskedLM")
    assert transformers.BertConfig.from_pretrained(path).tie_word_embeddings
    weights = safetensors_torch.load_file(path / "model.safetensors")
    g = torch.Generator().manual_seed(2)
    embedding, bias = weights["bert.embeddings.word_embeddings.weight"].clone(), weights["cls.predictions.bias"].clone()
    if own in ("weight", "both"):
        weights["cls.predictions.decoder.weight"] = torch.randn(embedding.shape, generator=g) * 0.1
    if own in ("bias", "both"):
        weights["cls.predictions.decoder.bias"] = torch.randn(bias.shape, generator=g)
    safetensors_torch.save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    hf = transformers.BertForMaskedLM.from_pretrained(path).eval()
    tokens, segments, mask = batch()
    real = mask.bool()
    with torch.no_grad():
        expected = hf(input_ids=tokens, token_type_ids=segments, attention_mask=mask).logits
        mine = load_model_dir(path).model(tokens, segments)
        hidden = hf.bert(input_ids=tokens, token_type_ids=segments, attention_mask=mask).last_hidden_state
        with_embedding = hf.cls.predictions.transform(hidden) @ embedding.T + bias
    assert (expected - with_embedding)[real].abs().max() > 0.1      # the file's decoder matters here
    torch.testing.assert_close(mine[real], expected[real], atol=1e-4, rtol=1e-4)
