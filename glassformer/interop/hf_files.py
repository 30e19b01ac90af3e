"""What every Hugging Face family shares: reading a model directory (``config.json`` and
``model.safetensors``, never pickles), renaming tensors by a key map, and the names of activation
functions."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..files import read_json
from ..model_format import ModelDir, check_shapes
from ..tokenizers import Tokenizer


@contextmanager
def refuse_missing_fields(what: str):
    """Inside: a field that ``what`` (a config) lacks, read as ``hf[name]``, is refused by name."""
    try:
        yield
    except KeyError as e:
        raise ConfigError(f"{what} lacks the field {e.args[0]!r}") from None


def check_model_type(hf: dict[str, Any], model_type: str, family: str) -> None:
    """Refuse a config of another ``model_type`` (one without it is read as ``model_type``)."""
    if hf.get("model_type", model_type) != model_type:
        raise ConfigError(f"model_type={hf.get('model_type')!r} is not a {family} checkpoint (expected {model_type!r})")


def model_with_weights(model_cls, config, state: dict[str, Tensor], source: str | Path,
                       dtype: torch.dtype = torch.float32):
    """``model_cls(config)`` holding ``state``, in eval mode, without initialising weights that are
    overwritten: built on the meta device, loaded strictly with ``assign=True``, tied again (the
    assignment replaced the shared Parameters), and its config-derived buffers (positional
    tables) computed for real.  A mismatch is a CheckpointError naming ``source``."""
    with torch.device("meta"):
        model = model_cls(config)
    check_shapes(model, {k: tuple(v.shape) for k, v in state.items()}, source)
    try:
        model.load_state_dict({k: v.detach().to(dtype) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source} does not match its config.json ({str(e).splitlines()[0]})") from None
    model.tie_weights()
    for module in model.modules():
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()
    return model.eval()


def tensor_taker(weights: dict[str, Tensor], family: str, prefix: str):
    """``take(name)``: the checkpoint tensor ``name`` (with or without the leading ``prefix``, which
    checkpoints saved from the bare model lack), or a CheckpointError naming it."""
    hf = {k.removeprefix(prefix): v for k, v in weights.items()}

    def take(name: str) -> Tensor:
        if name not in hf:
            raise CheckpointError(f"the {family} checkpoint lacks the tensor {name!r}")
        return hf[name]
    return take


def module_map(pairs, params: tuple[str, ...] = ("weight", "bias")) -> dict[str, list[str]]:
    """A key map (our parameter -> the checkpoint's) of whole modules: each pair is our module and
    theirs, or the list of theirs fused into ours; each of ``params`` is mapped."""
    return {f"{mine}.{p}": [f"{t}.{p}" for t in ([theirs] if isinstance(theirs, str) else theirs)]
            for mine, theirs in pairs for p in params}


def tensors_by_map(take, key_map: dict[str, list[str]]) -> dict[str, Tensor]:
    """Our tensors from a checkpoint's (``take(name)`` reads one) by ``key_map``: several of theirs
    are concatenated along dim 0 into our fused matrix."""
    return {mine: torch.cat([take(t) for t in theirs]) if len(theirs) > 1 else take(theirs[0])
            for mine, theirs in key_map.items()}


def weights_by_map(ours: dict[str, Tensor], key_map: dict[str, list[str]], rows=None) -> dict[str, Tensor]:
    """The checkpoint's tensors from ours: the inverse of :func:`tensors_by_map`, a fused matrix split
    along dim 0 into contiguous parts (equal ones, unless ``rows(our name)`` gives their sizes)."""
    out = {}
    for mine, theirs in key_map.items():
        if len(theirs) == 1:
            out[theirs[0]] = ours[mine]
        else:
            sizes = rows(mine) if rows else [len(ours[mine]) // len(theirs)] * len(theirs)
            out.update(zip(theirs, (part.contiguous() for part in ours[mine].split(sizes, dim=0))))
    return out


def encoder_pairs(n_layers: int, theirs: str, attention: str, layer_map) -> list:
    """The modules of a BERT-style encoder's layers (ViT's too), ours <- theirs (``theirs``: their
    stack of layers, ``attention``: the self-attention in each): query, key and value fused into our
    ``qkv_proj``, then ``layer_map``."""
    pairs = []
    for i in range(n_layers):
        mine, layer = f"encoder.layers.{i}", f"{theirs}.{i}"
        qkv = [f"{layer}.{attention}.{p}" for p in ("query", "key", "value")]
        pairs.append((f"{mine}.self_attention.qkv_proj", qkv))
        pairs += [(f"{mine}.{m}", f"{layer}.{t}") for m, t in layer_map]
    return pairs


def load_weights(path: str | Path, family: str, model_cls, config_from, state_dict_from, dtype: torch.dtype):
    """``model_cls`` with the weights of a Hugging Face ``family`` directory: its config from
    ``config_from(hf_config, weights)``, its tensors renamed by ``state_dict_from(weights, config)``."""
    hf_config, weights, weights_file = read_hf_directory(path, family)
    config = config_from(hf_config, weights)
    return model_with_weights(model_cls, config, state_dict_from(weights, config), weights_file, dtype)


def with_own_tokenizer(model, path: str | Path) -> ModelDir:
    """``model`` and the checkpoint's own tokenizer (None without a tokenizer.json), its special
    tokens and their roles as its files state them."""
    tokenizer = Tokenizer.load_checkpoint(path) if (Path(path) / "tokenizer.json").is_file() else None
    return ModelDir(model, model.config, tokenizer)


def output_is_tied(hf: dict[str, Any], weights: dict[str, Tensor] | None, head: str, embedding: str,
                   default: bool = True) -> bool:
    """Whether the output projection is the token-embedding matrix: what ``tie_word_embeddings``
    says (``default`` where it is absent), unless the ``weights`` hold an output matrix (named
    ``head``) that differs from the embedding (named ``embedding``, or without its first part, as
    saved from the bare model).  transformers (5.x) then loads the file's matrix untied, with a
    warning; so do we, silently."""
    tied = bool(hf.get("tie_word_embeddings", default))
    if weights is None:
        return tied
    output, embedded = weights.get(head), weights.get(embedding, weights.get(embedding.split(".", 1)[1]))
    return tied and (output is None or embedded is None or torch.equal(output, embedded))


def read_hf_directory(path: str | Path, family: str) -> tuple[dict[str, Any], dict[str, Tensor], Path]:
    """(config dict, weights by name, weights file) of a Hugging Face ``family`` directory: one
    ``model.safetensors``, or shards listed by ``model.safetensors.index.json`` (its ``weight_map``:
    tensor name -> shard file), read and merged."""
    path = Path(path)
    cfg_file, weights_file = path / "config.json", path / "model.safetensors"
    index_file = path / "model.safetensors.index.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file} is missing; a Hugging Face {family} directory needs config.json "
                              "and model.safetensors")
    hf_config = read_json(cfg_file, what="Hugging Face config", error=CheckpointError)
    if weights_file.is_file():
        return hf_config, _read_safetensors(weights_file), weights_file
    if not index_file.is_file():
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        also = f" (it has {', '.join(pickles[:2])}: pickles, which glassformer never loads)" if pickles else ""
        raise CheckpointError(f"{weights_file} is missing and there is no model.safetensors.index.json{also}")
    index = read_json(index_file, what="shard index", error=CheckpointError)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_file} has no weight_map (tensor name -> shard file)")
    weights: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_file = path / shard
        if Path(shard).name != shard or not shard_file.is_file():
            raise CheckpointError(f"{index_file} lists the shard {shard!r}, which is not a file in {path}")
        weights.update(_read_safetensors(shard_file))
    missing = sorted(set(weight_map) - set(weights))
    if missing:
        raise CheckpointError(f"{index_file} maps {missing[0]!r} to a shard that does not hold it")
    return hf_config, weights, index_file


def _read_safetensors(file: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file} is corrupt ({str(e).splitlines()[0]})") from None


# Hugging Face's activation names (``transformers.activations.ACT2FN``) -> ours (``glassformer.nn.ACTIVATIONS``):
# the one place the two vocabularies meet.
_ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",                      # exact (erf) GELU
    "gelu_new": "gelu_tanh",             # GPT-2's tanh approximation ...
    "gelu_pytorch_tanh": "gelu_tanh",    # ... and PyTorch's implementation of the same
    "silu": "silu",                      # Llama
    "swish": "swish",                    # Marian's name for SiLU
}


def activation_to_hf(name: str) -> str:
    """The Hugging Face name of our activation ``name`` (the first of its spellings above)."""
    for theirs, ours in _ACTIVATIONS.items():
        if ours == name:
            return theirs
    raise ConfigError(f"activation {name!r} has no Hugging Face name; known: {sorted(set(_ACTIVATIONS.values()))}")


def activation_from_hf(name: str, field: str = "activation_function") -> str:
    """Our name for the Hugging Face activation ``name`` (read from the config field ``field``)."""
    if name not in _ACTIVATIONS:
        raise ConfigError(f"{field}={name!r} is not supported; known: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


# -- special tokens and decoding defaults ----------------------------------------------------------
# A Hugging Face directory states them in config.json (the ids) and generation_config.json (the
# ids again, and how to decode); a glassformer directory in tokenizer.json and generation.json.
GENERATION_CONFIG = "generation_config.json"
SPECIAL_TOKENS = ("bos_token_id", "eos_token_id", "pad_token_id")


def generation_from_hf(path: str | Path) -> dict[str, Any]:
    """Our decoding defaults (generation.json) from a Hugging Face directory.

    transformers samples only with ``do_sample`` (then with top_k 50 and top_p 1 unless told
    otherwise) and otherwise decodes greedily whatever ``temperature`` says: our temperature 0.
    What our decoders do not read — the special-token ids (an EOS id may be a list), num_beams,
    max_length, bad_words_ids, forced_eos_token_id, ... — is kept verbatim under ``hugging_face``,
    so that :func:`generation_to_hf` writes it back unchanged."""
    path = Path(path)
    hf_config = read_json(path / "config.json", what="Hugging Face config", error=CheckpointError)
    file = path / GENERATION_CONFIG
    hf_generation = read_json(file, what="generation config", error=CheckpointError) if file.is_file() else {}
    if not isinstance(hf_generation, dict):
        raise CheckpointError(f"{file} must hold a JSON object")
    hf_generation = {k: v for k, v in hf_generation.items() if k != "transformers_version"}
    ids = {k: hf_config[k] for k in SPECIAL_TOKENS if hf_config.get(k) is not None}
    if not hf_generation and not ids:
        return {}
    ours: dict[str, Any] = {}
    if hf_generation.get("do_sample"):
        given = {k: v for k, v in hf_generation.items() if v is not None}
        ours = {"temperature": given.get("temperature", 1.0), "top_k": given.get("top_k", 50) or None,
                "top_p": given.get("top_p", 1.0)}
        ours = {k: v for k, v in ours.items() if v is not None and not (k == "top_p" and v == 1.0)}
    elif hf_generation:
        ours["temperature"] = 0.0
    return {**ours, "hugging_face": {"config": ids, "generation_config": hf_generation}}


def generation_to_hf(generation: dict[str, Any], hf_config: dict[str, Any],
                     tokenizer=None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(special-token ids for config.json, generation_config.json) from our decoding defaults: the
    inverse of :func:`generation_from_hf`.  The ids are those carried from a Hugging Face directory;
    else those the family's exporter wrote in ``hf_config`` (an encoder–decoder's, from its config);
    else the tokenizer's end-of-text token (which also begins a text, as GPT-2's does) and padding.
    An unknown id is written as null, never left to transformers' default (GPT-2's 50256, Llama's 2)."""
    carried = generation.get("hugging_face") or {}
    ids = dict(carried.get("config") or {})
    if not ids and "eos_token_id" in hf_config:
        ids = {k: hf_config[k] for k in SPECIAL_TOKENS if k in hf_config}
    if not ids and tokenizer is not None:
        ids = {"bos_token_id": tokenizer.eos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    ids = {k: ids.get(k) for k in SPECIAL_TOKENS}
    stated = {k: v for k, v in {**hf_config, **ids}.items() if k.endswith("_token_id") and v is not None}
    hf_generation = {**stated, **(carried.get("generation_config") or {})}
    temperature = generation.get("temperature")
    if temperature == 0:
        if hf_generation.get("do_sample"):
            hf_generation["do_sample"] = False          # greedy
    elif temperature is not None:
        hf_generation.update(do_sample=True, temperature=temperature, top_k=generation.get("top_k") or 0,
                             top_p=generation.get("top_p", 1.0))
    return ids, hf_generation
