"""Each Hugging Face family refuses another family's config.json in the same words (one shared check)."""

import pytest

from glassformer.errors import ConfigError
from glassformer.interop.hf_bert import config_from_hf_bert
from glassformer.interop.hf_gpt2 import config_from_hf_gpt2
from glassformer.interop.hf_llama import config_from_hf_llama
from glassformer.interop.hf_marian import config_from_hf_marian
from glassformer.interop.hf_t5 import config_from_hf_t5
from glassformer.interop.hf_vit import config_from_hf_vit


@pytest.mark.parametrize("config_from, message", [
    (config_from_hf_bert, "model_type='roberta' is not a BERT checkpoint (expected 'bert')"),
    (config_from_hf_gpt2, "model_type='roberta' is not a GPT-2 checkpoint (expected 'gpt2')"),
    (config_from_hf_llama, "model_type='roberta' is not a Llama checkpoint (expected 'llama')"),
    (config_from_hf_marian, "model_type='roberta' is not a Marian checkpoint (expected 'marian')"),
    (config_from_hf_t5, "model_type='roberta' is not a T5 checkpoint (expected 't5')"),
    (config_from_hf_vit, "model_type='roberta' is not a ViT checkpoint (expected 'vit')"),
])
def test_another_model_type_is_refused_word_for_word(config_from, message):
    with pytest.raises(ConfigError) as refused:
        config_from({"model_type": "roberta", "vocab_size": 10})
    assert str(refused.value) == message


LLAMA = {"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "vocab_size": 5, "num_hidden_layers": 1,
         "intermediate_size": 4}


@pytest.mark.parametrize("config_from, hf, message", [
    (config_from_hf_bert, {"model_type": "bert"}, "the BERT config lacks the field 'vocab_size'"),
    (config_from_hf_gpt2, {"model_type": "gpt2"}, "GPT-2 config lacks the field 'vocab_size'"),
    (config_from_hf_llama, {"model_type": "llama"}, "the Llama config lacks the field 'hidden_size'"),
    (config_from_hf_llama, {**LLAMA, "rope_parameters": {"rope_type": "llama3", "factor": 8.0}},
     "rope scaling llama3 lacks the field 'low_freq_factor'"),
    (config_from_hf_marian, {"model_type": "marian"}, "the Marian config lacks the field 'encoder_attention_heads'"),
    (config_from_hf_t5, {"model_type": "t5"}, "the T5 config lacks the field 'd_kv'"),
    (config_from_hf_vit, {"model_type": "vit"}, "the ViT config lacks the field 'image_size'"),
])
def test_a_missing_field_is_refused_word_for_word(config_from, hf, message):
    with pytest.raises(ConfigError) as refused:
        config_from(hf)
    assert str(refused.value) == message and refused.value.__suppress_context__       # one line, no KeyError chain
