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

from .hf_bert import _HEADS as _BERT_HEADS
from .hf_bert import config_from_hf_bert, convert_hf_bert, load_hf_bert, state_dict_from_hf_bert
from .hf_files import GENERATION_CONFIG, generation_from_hf, generation_to_hf

# The architectures (config.json's "architectures") that each model_type's loader implements: any
# other (a classifier over a decoder, a bare model without its head) is refused by name.
_ARCHITECTURES = {
    "bert": tuple(_BERT_HEADS),
    "gpt2": ("GPT2LMHeadModel", "GPT2Model"),       # GPT2Model: the output layer is wte, as in GPT2LMHeadModel
    "llama": ("LlamaForCausalLM",),
    "marian": ("MarianMTModel",),
    "t5": ("T5ForConditionalGeneration",),
    "vit": ("ViTForImageClassification",),
}


def _check_architecture(path, model_type: str) -> None:
    """Refuse a directory whose config.json names an architecture its ``model_type``'s loader does
    not implement.  A config without ``architectures`` is read by its model_type (as transformers'
    Auto classes read it)."""
    from pathlib import Path

    from ..errors import CheckpointError, ConfigError
    from ..files import read_json

    hf = read_json(Path(path) / "config.json", what="Hugging Face config", error=CheckpointError)
    names = hf.get("architectures") if isinstance(hf, dict) else None
    if not names:
        return
    architecture = names[0]
    if architecture not in _ARCHITECTURES.get(model_type, (architecture,)):
        known = sorted(name for names in _ARCHITECTURES.values() for name in names)
        raise ConfigError(f"{path} holds a {architecture} (config.json's architectures, model_type "
                          f"{model_type!r}); glassformer reads only {', '.join(known)}: other heads and "
                          "bare models without their head are not supported yet")


def load_hf_directory(path, model_type: str):
    """A Hugging Face directory of ``model_type`` as a :class:`~glassformer.model_dir.ModelDir`
    (what ``load_model_dir`` returns for glassformer's own directories); an architecture that its
    loader does not implement is refused by name."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..model_dir import ModelDir
    from ..tokenizers import Tokenizer

    _check_architecture(path, model_type)

    if model_type == "bert":
        return load_hf_bert(path)
    if model_type == "vit":
        from .hf_vit import load_hf_vit

        return load_hf_vit(path)
    if model_type == "marian":
        from .hf_marian import load_hf_marian, load_hf_marian_tokenizers

        model = load_hf_marian(path)
        source, target = load_hf_marian_tokenizers(path, model.config)
        return ModelDir(model, model.config, target, source, generation=generation_from_hf(path))
    if model_type == "t5":
        from .hf_t5 import load_hf_t5

        loaded = load_hf_t5(path)
        loaded.generation = generation_from_hf(path)
        return loaded
    loaders = {"gpt2": load_hf_gpt2, "llama": load_hf_llama}
    if model_type not in loaders:
        raise ConfigError(f"{path}: Hugging Face model_type {model_type!r} is not supported; glassformer reads "
                          f"{sorted(['bert', 'marian', 't5', 'vit', *loaders])}")
    model = loaders[model_type](path)
    # The checkpoint's own tokenizer: its special tokens and their roles as its files state them.
    tokenizer = Tokenizer.load_checkpoint(path) if (Path(path) / "tokenizer.json").is_file() else None
    return ModelDir(model, model.config, tokenizer, generation=generation_from_hf(path))


def to_hugging_face(model) -> tuple[dict, dict]:
    """(config dict, weights) of ``model`` in the Hugging Face layout of its family: BERT, ViT,
    GPT-2 or Llama (by the GPT's options), T5 or Marian (by the encoder–decoder's)."""
    from ..errors import ConfigError
    from .hf_gpt2 import to_hf_gpt2
    from .hf_llama import to_hf_llama
    from .hf_t5 import to_hf_t5
    from .hf_vit import to_hf_vit
    from .hf_bert import to_hf_bert

    family = model.config.family
    if family == "bert":
        return to_hf_bert(model)
    if family == "vit":
        return to_hf_vit(model)
    if family == "gpt":
        return to_hf_llama(model) if model.config.norm == "rmsnorm" else to_hf_gpt2(model)
    if family == "transformer" and model.config.positional == "relative":
        return to_hf_t5(model)
    if family == "transformer":
        from .hf_marian import to_hf_marian

        return to_hf_marian(model)
    raise ConfigError(f"a {family} model with positional={getattr(model.config, 'positional', None)!r} has no "
                      "Hugging Face exporter here (BERT, ViT, GPT-2, Llama, T5 and Marian have)")


# Families that generate text: their export states the special-token ids in config.json and the decoding
# defaults (generation.json) in generation_config.json.
_GENERATING_FAMILIES = ("gpt", "transformer")


def save_hf_directory(model, out_dir, tokenizer=None, generation=None):
    """Write ``model`` as a Hugging Face directory: config.json, model.safetensors (and tokenizer.json
    with the tokenizer_config.json naming its special tokens, and generation_config.json from ``generation``, our generation.json settings), atomically."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from ..files import write_atomically

    config, weights = to_hugging_face(model)
    hf_generation = None
    if model.config.family in _GENERATING_FAMILIES:
        ids, hf_generation = generation_to_hf(generation or {}, config, tokenizer)
        config = {**config, **ids}

    def fill(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if hf_generation:
            (tmp / GENERATION_CONFIG).write_text(json.dumps(hf_generation, indent=2) + "\n", encoding="utf-8")
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_hf(tmp)

    return write_atomically(out_dir, fill)


__all__ = ["to_hugging_face", "save_hf_directory", "load_hf_directory", "config_from_hf_bert", "convert_hf_bert", "load_hf_bert", "state_dict_from_hf_bert",
           "config_from_hf_gpt2", "convert_hf_gpt2", "load_hf_gpt2", "state_dict_from_hf_gpt2",
           "config_from_hf_llama", "convert_hf_llama", "load_hf_llama", "state_dict_from_hf_llama"]
