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

from .hf_bert import config_from_hf_bert, convert_hf_bert, load_hf_bert, state_dict_from_hf_bert


def load_hf_directory(path, model_type: str):
    """A Hugging Face directory of ``model_type`` as a :class:`~glassformer.model_dir.ModelDir`
    (what ``load_model_dir`` returns for glassformer's own directories)."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..model_dir import ModelDir
    from ..tokenizers import Tokenizer

    if model_type == "bert":
        return load_hf_bert(path)
    if model_type == "vit":
        from .hf_vit import load_hf_vit

        return load_hf_vit(path)
    if model_type == "t5":
        from .hf_t5 import load_hf_t5

        return load_hf_t5(path)
    loaders = {"gpt2": load_hf_gpt2, "llama": load_hf_llama}
    if model_type not in loaders:
        raise ConfigError(f"{path}: Hugging Face model_type {model_type!r} is not supported; glassformer reads "
                          f"{sorted(['bert', 't5', 'vit', *loaders])} (convert Marian with glassformer.interop.hf_marian)")
    model = loaders[model_type](path)
    tokenizer_file = Path(path) / "tokenizer.json"
    return ModelDir(model, model.config, Tokenizer.load(tokenizer_file) if tokenizer_file.is_file() else None)


__all__ = ["load_hf_directory", "config_from_hf_bert", "convert_hf_bert", "load_hf_bert", "state_dict_from_hf_bert",
           "config_from_hf_gpt2", "convert_hf_gpt2", "load_hf_gpt2", "state_dict_from_hf_gpt2",
           "config_from_hf_llama", "convert_hf_llama", "load_hf_llama", "state_dict_from_hf_llama"]
