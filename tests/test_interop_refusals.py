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
