"""ViT checkpoints in the Hugging Face layout -> :class:`glassformer.models.ViT`.

    HF_DIR/config.json          model_type "vit": image_size, patch_size, num_channels, hidden_size,
                                num_hidden_layers, num_attention_heads, intermediate_size, layer_norm_eps,
                                hidden_act, id2label; qkv_bias=false is refused
    HF_DIR/model.safetensors    vit.embeddings.{cls_token, position_embeddings, patch_embeddings.projection},
                                vit.encoder.layer.{i}.{layernorm_before, attention.attention.{query,key,value},
                                attention.output.dense, layernorm_after, intermediate.dense, output.dense},
                                vit.layernorm, classifier

``layernorm_before``/``layernorm_after`` are our pre-norm layer's attention and feed-forward norms;
query/key/value are concatenated into the fused ``qkv_proj``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError
from ..model_format import ModelDir
from ..models.vit import ViT, ViTConfig
from .hf_files import (activation_from_hf, activation_to_hf, check_model_type, encoder_pairs, load_weights, module_map,
                       refuse_missing_fields, tensor_taker, tensors_by_map, weights_by_map)

_LAYER_MAP = [
    ("self_attention_norm", "layernorm_before"),
    ("self_attention.out_proj", "attention.output.dense"),
    ("feed_forward_norm", "layernorm_after"),
    ("feed_forward.linear1", "intermediate.dense"),
    ("feed_forward.linear2", "output.dense"),
]


def config_from_hf_vit(hf: dict) -> ViTConfig:
    check_model_type(hf, "vit", "ViT")
    if not hf.get("qkv_bias", True):
        raise ConfigError("qkv_bias=false (query/key/value projections without bias) is not supported: "
                          "glassformer's ViT attention has biases")
    id2label = hf.get("id2label") or {}
    n = len(id2label) or hf.get("num_labels") or 2
    labels = [str(id2label.get(str(i), id2label.get(i, i))) for i in range(n)] if id2label else None
    with refuse_missing_fields("the ViT config"):
        return ViTConfig(image_size=hf["image_size"], patch_size=hf["patch_size"], channels=hf.get("num_channels", 3),
                         n_classes=n, labels=labels, n_layers=hf["num_hidden_layers"],
                         n_heads=hf["num_attention_heads"], d_model=hf["hidden_size"], d_ff=hf["intermediate_size"],
                         dropout=float(hf.get("hidden_dropout_prob", 0.0)),
                         attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.0)),
                         norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
                         activation=activation_from_hf(hf.get("hidden_act", "gelu"), "hidden_act"))


def _key_map(c: ViTConfig, prefix: str = "") -> dict[str, list[str]]:
    """Our parameter names -> the checkpoint's (the encoder's under ``prefix``)."""
    key_map = {"cls_token": [f"{prefix}embeddings.cls_token"], "position": [f"{prefix}embeddings.position_embeddings"]}
    pairs = [("patches.projection", f"{prefix}embeddings.patch_embeddings.projection")]
    pairs += encoder_pairs(c.n_layers, f"{prefix}encoder.layer", "attention.attention", _LAYER_MAP)
    pairs += [("encoder.final_norm", f"{prefix}layernorm"), ("head", "classifier")]
    return {**key_map, **module_map(pairs)}


def state_dict_from_hf_vit(weights: dict[str, Tensor], config: ViTConfig) -> dict[str, Tensor]:
    return tensors_by_map(tensor_taker(weights, "ViT", "vit."), _key_map(config))


def to_hf_vit(model: ViT) -> tuple[dict, dict[str, Tensor]]:
    """(Hugging Face config dict, weights) of ``model``: the inverse of :func:`state_dict_from_hf_vit`."""
    c = model.config
    names = c.class_names
    config = {"architectures": ["ViTForImageClassification"], "model_type": "vit", "image_size": c.image_size,
              "patch_size": c.patch_size, "num_channels": c.channels, "hidden_size": c.d_model,
              "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads, "intermediate_size": c.d_ff,
              "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.attention_dropout,
              "layer_norm_eps": c.norm_eps, "hidden_act": activation_to_hf(c.activation), "qkv_bias": True,
              "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return config, weights_by_map(ours, _key_map(c, "vit."))


def load_hf_vit(path: str | Path, dtype: torch.dtype = torch.float32) -> ModelDir:
    """A :class:`ViT` with the weights of a Hugging Face ``ViTForImageClassification`` directory."""
    model = load_weights(path, "ViT", ViT, lambda hf, _: config_from_hf_vit(hf), state_dict_from_hf_vit, dtype)
    return ModelDir(model, model.config)


__all__ = ["config_from_hf_vit", "state_dict_from_hf_vit", "to_hf_vit", "load_hf_vit"]
