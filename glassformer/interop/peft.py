"""LoRA adapters in ``peft``'s layout, for the Hugging Face model our base converts to.

    ADAPTER_DIR/adapter_config.json         peft's LoraConfig: r, lora_alpha, target_modules, ... and
                                            base_model_name_or_path = the base model directory
    ADAPTER_DIR/adapter_model.safetensors   base_model.model.<HF module>.lora_A.weight  (r, d_in)
                                            base_model.model.<HF module>.lora_B.weight  (d_out, r)
                                            (+ our LoRAConfig in the file's metadata)

The key names are those of the Hugging Face model that ``glassformer convert --to hf`` writes for the
base, so ``PeftModel.from_pretrained(<that model>, ADAPTER_DIR)`` computes what our adapted model
computes:

* GPT-2 fuses Q, K and V in one ``Conv1D`` ``c_attn``, as we fuse them in ``qkv_proj``.  Our separate
  q and v adapters of rank r become ONE c_attn adapter of rank 2r: A = [A_q; A_v] and B block-diagonal
  (zero on the rows of K), with ``lora_alpha`` chosen so that its scale equals ours (α/r → 2α/2r) —
  the update B·A·scale is the same matrix.  peft keeps lora_A/lora_B in ``nn.Linear``'s orientation
  even over a ``Conv1D``; ``fan_in_fan_out: true`` tells it that the base weight is transposed.
* Llama's q_proj/k_proj/v_proj (gate_proj/up_proj) are the row blocks of our fused layers, each
  part's A and B as they are.  Our rotary positions use Hugging Face's half-split layout, so the
  query and key rows need no permutation (see ``hf_llama``).

Layers adapted with different ranks (c_attn of rank 3r beside c_proj of rank r) are written with peft's
``rank_pattern`` / ``alpha_pattern``.  Loading reads our LoRAConfig from the weights' metadata (for an
adapter that peft wrote itself, from its adapter_config.json), builds the base directory's model (ours
or a Hugging Face one), adds the adapters and splits the tensors back into parts; an adapter whose
base is missing or has other shapes is refused in one line.  peft itself loads such a directory with
``PeftModel.from_pretrained(model, ADAPTER_DIR)`` over the converted model (its
``base_model_name_or_path`` names our directory, which transformers alone cannot read when it is in
glassformer's layout).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..files import read_json, why_unreadable, write_atomically
from ..model_format import ModelDir, read_model_dir
from ..nn.lora import LoRAConfig, LoRALinear, adaptable, add_lora, has_lora, lora_layers
from . import FAMILIES, hugging_face_type, load_hf_directory
from .hf_gpt2 import _LAYER_MAP as _GPT2_LAYERS
from .hf_llama import _LINEARS as _LLAMA_LINEARS

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_PREFIX = "base_model.model."                  # peft's name for the wrapped model
_OURS = "glassformer_lora"                     # the metadata key holding our LoRAConfig

# our linear layer's full name -> [(the Hugging Face module, the rows [first, end) of ours it holds)]
Modules = dict[str, list[tuple[str, tuple[int, int]]]]


def _gpt2_modules(model) -> Modules:
    """GPT-2: one Conv1D per linear layer of ours (c_attn = all of qkv_proj)."""
    out = {}
    for i in range(model.config.n_layers):
        for mine, theirs, conv1d in _GPT2_LAYERS:
            if conv1d:                         # the linear layers (the norms are not)
                rows = model.get_submodule(f"decoder.layers.{i}.{mine}").out_features
                out[f"decoder.layers.{i}.{mine}"] = [(f"transformer.h.{i}.{theirs}", (0, rows))]
    return out


def _llama_modules(model) -> Modules:
    """Llama: q/k/v_proj the row blocks of qkv_proj, gate/up_proj those of linear1."""
    c = model.config
    d_kv = (c.n_kv_heads or c.n_heads) * (c.d_model // c.n_heads)
    out = {}
    for i in range(c.n_layers):
        for mine, theirs in _LLAMA_LINEARS:
            name = f"decoder.layers.{i}.{mine}"
            sizes = {"self_attention.qkv_proj": [c.d_model, d_kv, d_kv],
                     "feed_forward.linear1": [c.d_ff, c.d_ff]}.get(mine, [model.get_submodule(name).out_features])
            ends = [sum(sizes[: k + 1]) for k in range(len(sizes))]
            out[name] = [(f"model.layers.{i}.{t}", (end - size, end)) for t, size, end in zip(theirs, sizes, ends)]
    return out


@dataclass(frozen=True)
class PeftLayout:
    modules: Callable[..., Modules]
    fan_in_fan_out: bool                       # the Hugging Face layer stores its weight as (d_in, d_out)


# Hugging Face model_type (interop.FAMILIES) -> how its adapters are laid out
LAYOUTS = {"gpt2": PeftLayout(_gpt2_modules, True), "llama": PeftLayout(_llama_modules, False)}


def _model_type(model) -> str:
    for model_type, family in FAMILIES.items():
        if model_type in LAYOUTS and family.exports(model.config):
            return model_type
    raise ConfigError(f"LoRA adapters in peft's layout are written for GPT-2- and Llama-shaped GPTs, "
                      f"not for a {model.config.family} model")


def _parts_in(layer: LoRALinear, rows: tuple[int, int]) -> list[str]:
    """The layer's parts inside ``rows``, in the order of their rows (the order of their columns in peft's A, B)."""
    return [name for name, (first, end) in sorted(layer.parts.items(), key=lambda p: p[1])
            if rows[0] <= first and end <= rows[1]]


def _alpha(config: LoRAConfig, rank: int) -> float:
    """The lora_alpha that gives a peft adapter of ``rank`` our scale."""
    return config.scale * (math.sqrt(rank) if config.rslora else rank)


def save_adapter(path: str | Path, model, config: LoRAConfig, base_dir: str | Path) -> None:
    """Write ``model``'s adapters (``config`` as added) as ``peft`` writes them for the Hugging Face
    model the base converts to, trained on ``base_dir`` (recorded as an absolute path), atomically."""
    base_dir = Path(base_dir)
    if why := why_unreadable(base_dir, folder=True):
        raise CheckpointError(f"the base model directory {base_dir} {why}; an adapter must name its base")
    if not has_lora(model):
        raise ConfigError("this model has no LoRA adapters to save (add_lora first)")
    model_type = _model_type(model)
    layout = LAYOUTS[model_type]
    modules = layout.modules(model)
    tensors, ranks = {}, {}
    for name, layer in lora_layers(model):
        covered = 0
        for hf_name, rows in modules[name]:
            parts = _parts_in(layer, rows)
            if not parts:
                continue
            a, b = layer.factors(*rows)
            tensors[f"{_PREFIX}{hf_name}.lora_A.weight"] = a.detach().cpu().contiguous()
            tensors[f"{_PREFIX}{hf_name}.lora_B.weight"] = b.detach().cpu().contiguous()
            ranks[hf_name], covered = a.shape[0], covered + len(parts)
        if covered != len(layer.parts):
            raise ConfigError(f"{name}'s LoRA parts {list(layer.parts)} do not fall on {model_type} layers; "
                              "they cannot be written in peft's layout")
    settings = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base_dir.resolve()),
        "r": config.r, "lora_alpha": config.alpha, "lora_dropout": config.dropout, "use_rslora": config.rslora,
        "target_modules": sorted(ranks), "fan_in_fan_out": layout.fan_in_fan_out, "bias": "none",
        "rank_pattern": {n: k for n, k in ranks.items() if k != config.r},
        "alpha_pattern": {n: _alpha(config, k) for n, k in ranks.items() if k != config.r},
        "modules_to_save": None, "init_lora_weights": True, "inference_mode": True,
    }
    metadata = {"format": "pt", _OURS: json.dumps(config.to_dict()), "glassformer_base_type": model_type}

    def fill(tmp: Path) -> None:
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata=metadata)

    write_atomically(path, fill)


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def _read_weights(file: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; an adapter directory needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    try:
        with safe_open(str(file), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file} is corrupt ({str(e).splitlines()[0]})") from None


def adapter_base(path: str | Path) -> Path:
    """The base model directory an adapter directory names (its adapter_config.json's
    ``base_model_name_or_path``), checked to exist and not to be an adapter itself."""
    path = Path(path)
    settings = read_json(path / ADAPTER_CONFIG, what="adapter config", error=CheckpointError)
    base = settings.get("base_model_name_or_path") if isinstance(settings, dict) else None
    if not isinstance(base, str) or not base:
        raise CheckpointError(f"{path / ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    base_dir = Path(base)
    if why := why_unreadable(base_dir, folder=True):
        raise CheckpointError(f"adapter {path} was trained on the base model {base_dir}, which {why}; put the base "
                              f"there or set base_model_name_or_path in {ADAPTER_CONFIG}")
    if is_adapter_dir(base_dir):
        raise CheckpointError(f"adapter {path}'s base {base_dir} is itself an adapter; merge it first (merge-lora)")
    return base_dir


def load_adapter(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> ModelDir:
    """The base directory's model (ours or a Hugging Face one, its tokenizer and generation settings)
    with the adapter of ``path`` applied, on ``device``, in eval mode.  An adapter that ``peft`` itself
    wrote over a GPT-2 or Llama base loads too (its settings read from adapter_config.json)."""
    path = Path(path)
    base_dir = adapter_base(path)
    tensors, metadata = _read_weights(path / ADAPTER_WEIGHTS)
    config = None
    if _OURS in metadata:
        try:
            config = LoRAConfig.from_dict(json.loads(metadata[_OURS]))
        except (ConfigError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: its LoRA settings are invalid ({e})") from None
    hf_type = hugging_face_type(base_dir)
    loaded = read_model_dir(base_dir) if hf_type is None else load_hf_directory(base_dir, hf_type)
    model = loaded.model
    mismatch = f"adapter {path} does not belong to the base model {base_dir}"
    try:
        model_type = _model_type(model)
        if metadata.get("glassformer_base_type", model_type) != model_type:
            raise ConfigError(f"the adapter is for a {metadata['glassformer_base_type']} model, "
                              f"the base is {model_type}")
        modules = LAYOUTS[model_type].modules(model)
        if config is None:
            settings = read_json(path / ADAPTER_CONFIG, what="adapter config", error=CheckpointError)
            config = _config_of_peft(settings, tensors, model, modules)
        add_lora(model, config)
    except ConfigError as e:
        raise CheckpointError(f"{mismatch}: {e}") from None
    _load_peft_tensors(model, modules, tensors, config.r, mismatch)
    model.to(device=device, dtype=dtype).eval()
    return loaded


def _config_of_peft(settings: dict, tensors: dict[str, Tensor], model, modules: Modules) -> LoRAConfig:
    """Our LoRAConfig for an adapter that peft wrote: its r, alpha, dropout and rsLoRA, and as targets
    the parts of ours inside the Hugging Face modules it adapts (GPT-2's whole c_attn: our q, k and v)."""
    unsupported = {k: settings.get(k) for k in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save",
                                                "layers_to_transform") if settings.get(k)}
    if settings.get("peft_type", "LORA") != "LORA" or settings.get("bias", "none") != "none":
        unsupported.update(peft_type=settings.get("peft_type"), bias=settings.get("bias"))
    if unsupported:
        raise ConfigError(f"peft settings {unsupported} are not supported: glassformer reads plain LoRA adapters "
                          "of one rank")
    adapted = {key.removeprefix(_PREFIX).removesuffix(".lora_A.weight") for key in tensors
               if key.endswith(".lora_A.weight")}
    held = {(mine, rows) for mine, theirs in modules.items() for hf_name, rows in theirs if hf_name in adapted}
    targets = [site.name for site in adaptable(model) if any(
        site.module == mine and rows[0] <= site.rows[0] and site.rows[1] <= rows[1] for mine, rows in held)]
    if not targets:
        raise ConfigError(f"none of its layers {sorted(adapted)[:3]} is a linear layer of the base's blocks")
    return LoRAConfig(r=settings.get("r", 8), alpha=float(settings.get("lora_alpha", 8)),
                      dropout=float(settings.get("lora_dropout", 0.0)), targets=tuple(targets),
                      rslora=bool(settings.get("use_rslora", False)))


def _load_peft_tensors(model, modules: Modules, tensors: dict[str, Tensor], r: int, mismatch: str) -> None:
    """Split each Hugging Face module's A and B into the parts of ours inside it: ours wrote A (k·r, d_in)
    stacked and B (rows, k·r) block-diagonal; peft's one LoRA over a layer we split (GPT-2's c_attn)
    has one A (r, d_in) that every part shares, each part taking its rows of B (rows, r)."""
    used = set()
    with torch.no_grad():
        for name, layer in lora_layers(model):
            for hf_name, rows in modules[name]:
                parts = _parts_in(layer, rows)
                if not parts:
                    continue
                keys = [f"{_PREFIX}{hf_name}.lora_{x}.weight" for x in "AB"]
                if missing := [k for k in keys if k not in tensors]:
                    raise CheckpointError(f"{mismatch}: it lacks the tensor {missing[0]!r}")
                a, b = (tensors[k] for k in keys)
                shared = len(parts) > 1 and a.shape[0] == r
                width = r if shared else len(parts) * r
                want = {keys[0]: (width, layer.in_features), keys[1]: (rows[1] - rows[0], width)}
                for key, tensor in zip(keys, (a, b)):
                    if tuple(tensor.shape) != want[key]:
                        raise CheckpointError(f"{mismatch}: tensor {key!r} has shape {list(tensor.shape)} but the "
                                              f"base needs {list(want[key])}")
                for j, part in enumerate(parts):
                    first, end = layer.parts[part]
                    columns = slice(0, r) if shared else slice(j * r, (j + 1) * r)
                    layer.lora_A[part].copy_(a[columns])
                    layer.lora_B[part].copy_(b[first - rows[0]:end - rows[0], columns])
                used.update(keys)
    if unexpected := sorted(set(tensors) - used):
        raise CheckpointError(f"{mismatch}: it holds tensors the base has no adapter for, e.g. {unexpected[0]!r}")


__all__ = ["save_adapter", "load_adapter", "adapter_base", "is_adapter_dir", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS",
           "LAYOUTS"]
