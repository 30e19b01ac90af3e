"""Checkpoints in other libraries' layouts, mapped onto glassformer models; one small file per family.

Nothing here imports ``transformers``: a Hugging Face checkpoint is a directory of
plain files (``config.json`` + ``model.safetensors``), read directly.
"""

from .hf_gpt2 import (
    config_from_hf_gpt2,
    convert_hf_gpt2,
    load_hf_gpt2,
    state_dict_from_hf_gpt2,
)
from .hf_llama import (
    config_from_hf_llama,
    convert_hf_llama,
    load_hf_llama,
    state_dict_from_hf_llama,
)

__all__ = ["config_from_hf_gpt2", "convert_hf_gpt2", "load_hf_gpt2", "state_dict_from_hf_gpt2",
           "config_from_hf_llama", "convert_hf_llama", "load_hf_llama", "state_dict_from_hf_llama"]
