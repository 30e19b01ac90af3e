"""Checkpoints in other libraries' layouts, mapped onto glassformer models; one small file per family.

Nothing here imports ``transformers``: a Hugging Face checkpoint is a directory of
plain files (``config.json`` + ``model.safetensors``), read directly.
"""

from pathlib import Path
from typing import Callable, NamedTuple

from ..errors import CheckpointError, ConfigError
from ..files import read_json
from ..model_format import CONFIG, ModelDir
from .hf_bert import _HEADS as _BERT_HEADS
from .hf_bert import config_from_hf_bert, load_hf_bert, state_dict_from_hf_bert, to_hf_bert
from .hf_files import GENERATION_CONFIG, generation_from_hf, generation_to_hf, with_own_tokenizer
from .hf_gpt2 import config_from_hf_gpt2, convert_hf_gpt2, load_hf_gpt2, state_dict_from_hf_gpt2, to_hf_gpt2
from .hf_llama import config_from_hf_llama, convert_hf_llama, load_hf_llama, state_dict_from_hf_llama, to_hf_llama
from .hf_marian import load_hf_marian, load_hf_marian_tokenizers, to_hf_marian
from .hf_t5 import load_hf_t5, to_hf_t5
from .hf_vit import load_hf_vit, to_hf_vit


def _load_marian(path) -> ModelDir:
    model = load_hf_marian(path)
    source, target = load_hf_marian_tokenizers(path, model.config)
    return ModelDir(model, model.config, target, source)


class HFFamily(NamedTuple):
    """How one Hugging Face ``model_type`` maps onto a glassformer model, in and out."""

    architectures: tuple[str, ...]       # config.json's "architectures" that its loader implements
    load: Callable[..., ModelDir]        # path -> the directory, loaded
    export: Callable[..., tuple]         # model -> (config dict, weights) in its layout
    exports: Callable[..., bool]         # whether a glassformer config is written in this layout
    generates: bool                      # text out: generation_config.json is read and written


# model_type -> its mapping.  Any other architecture (a classifier over a decoder, a bare model without
# its head) is refused by name.  GPT2Model: the output layer is wte, as in GPT2LMHeadModel.
FAMILIES = {
    "bert": HFFamily(tuple(_BERT_HEADS), load_hf_bert, to_hf_bert, lambda c: c.family == "bert", False),
    "vit": HFFamily(("ViTForImageClassification",), load_hf_vit, to_hf_vit, lambda c: c.family == "vit", False),
    "gpt2": HFFamily(("GPT2LMHeadModel", "GPT2Model"), lambda path: with_own_tokenizer(load_hf_gpt2(path), path),
                     to_hf_gpt2, lambda c: c.family == "gpt" and c.norm != "rmsnorm", True),
    "llama": HFFamily(("LlamaForCausalLM",), lambda path: with_own_tokenizer(load_hf_llama(path), path), to_hf_llama,
                      lambda c: c.family == "gpt" and c.norm == "rmsnorm", True),
    "t5": HFFamily(("T5ForConditionalGeneration",), load_hf_t5, to_hf_t5,
                   lambda c: c.family == "transformer" and c.positional == "relative", True),
    "marian": HFFamily(("MarianMTModel",), _load_marian, to_hf_marian,
                       lambda c: c.family == "transformer" and c.positional != "relative", True),
}


def hugging_face_type(path: Path) -> str | None:
    """The ``model_type`` of a Hugging Face directory (its config.json has one and no glassformer
    ``family``), or None for a glassformer model directory."""
    cfg = Path(path) / CONFIG
    if not cfg.is_file():
        return None
    data = read_json(cfg, what="config", error=CheckpointError)
    if isinstance(data, dict) and "family" not in data and "model_type" in data:
        return str(data["model_type"])
    return None


def _check_architecture(path, family: HFFamily, model_type: str) -> None:
    """Refuse a directory whose config.json names an architecture its ``model_type``'s loader does
    not implement.  A config without ``architectures`` is read by its model_type (as transformers'
    Auto classes read it)."""
    hf = read_json(Path(path) / "config.json", what="Hugging Face config", error=CheckpointError)
    names = hf.get("architectures") if isinstance(hf, dict) else None
    if names and names[0] not in family.architectures:
        known = sorted(name for f in FAMILIES.values() for name in f.architectures)
        raise ConfigError(f"{path} holds a {names[0]} (config.json's architectures, model_type "
                          f"{model_type!r}); glassformer reads only {', '.join(known)}: other heads and "
                          "bare models without their head are not supported yet")


def load_hf_directory(path, model_type: str) -> ModelDir:
    """A Hugging Face directory of ``model_type`` as a :class:`~glassformer.model_format.ModelDir`
    (what ``load_model_dir`` returns for glassformer's own directories); an architecture that its
    loader does not implement is refused by name."""
    family = FAMILIES.get(model_type)
    if family is None:
        raise ConfigError(f"{path}: Hugging Face model_type {model_type!r} is not supported; glassformer reads "
                          f"{sorted(FAMILIES)}")
    _check_architecture(path, family, model_type)
    loaded = family.load(path)
    if family.generates:
        loaded.generation = generation_from_hf(path)
    return loaded


def _family_of(model) -> HFFamily:
    for family in FAMILIES.values():
        if family.exports(model.config):
            return family
    raise ConfigError(f"a {model.config.family} model with positional={getattr(model.config, 'positional', None)!r} "
                      "has no Hugging Face exporter here (BERT, ViT, GPT-2, Llama, T5 and Marian have)")


def to_hugging_face(model) -> tuple[dict, dict]:
    """(config dict, weights) of ``model`` in the Hugging Face layout of its family: BERT, ViT,
    GPT-2 or Llama (by the GPT's options), T5 or Marian (by the encoder–decoder's)."""
    return _family_of(model).export(model)


def save_hf_directory(model, out_dir, tokenizer=None, generation=None):
    """Write ``model`` as a Hugging Face directory: config.json, model.safetensors (and tokenizer.json
    with the tokenizer_config.json naming its special tokens, and generation_config.json from ``generation``, our generation.json settings), atomically."""
    import json

    from safetensors.torch import save_file

    from ..files import write_atomically

    family = _family_of(model)
    config, weights = family.export(model)
    hf_generation = None
    if family.generates:
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


__all__ = ["FAMILIES", "hugging_face_type", "to_hugging_face", "save_hf_directory", "load_hf_directory", "config_from_hf_bert", "load_hf_bert", "state_dict_from_hf_bert",
           "config_from_hf_gpt2", "convert_hf_gpt2", "load_hf_gpt2", "state_dict_from_hf_gpt2",
           "config_from_hf_llama", "convert_hf_llama", "load_hf_llama", "state_dict_from_hf_llama"]
