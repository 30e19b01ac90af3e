"""Llama checkpoints in the Hugging Face layout -> :class:`glassformer.models.GPT` with Llama's options.

    HF_DIR/config.json        LlamaConfig fields: hidden_size, num_hidden_layers, num_attention_heads,
                              num_key_value_heads, intermediate_size, rms_norm_eps, rope_parameters, ...
    HF_DIR/model.safetensors  model.embed_tokens / model.layers.{i}.{input_layernorm,
                              self_attn.{q,k,v,o}_proj, post_attention_layernorm,
                              mlp.{gate,up,down}_proj} / model.norm  (+ lm_head when untied)

A Llama is our GPT with other options, so no new module is needed — only the right
:class:`GPTConfig`: RMSNorm before each sublayer and at the end, rotary positions in
the half-split layout (the one Hugging Face's ``rotate_half`` uses, so q_proj and
k_proj need no permutation), a SwiGLU feed-forward, grouped-query attention, no
biases (unless ``attention_bias``/``mlp_bias``) and usually an untied output.

The separate projections are concatenated into our fused ones: q/k/v_proj into
``qkv_proj`` ([Q; K; V]), gate/up_proj into the gated ``linear1`` ([gate; up]).
Both ``rope_parameters`` (transformers 5) and the older top-level ``rope_theta`` /
``rope_scaling`` are read; Llama 3.1's frequency scaling ("llama3") maps to
``GPTConfig.rope_scaling``.  What is refused with a :class:`ConfigError`: other rotary
scalings (linear, dynamic, YaRN), a partial rotary
dimension, a ``head_dim`` other than hidden_size / num_attention_heads, and biases
on attention but not on the feed-forward (or the reverse).  Llama trains without
dropout; ``attention_dropout`` is not carried over.  Nothing here imports
``transformers``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..models.gpt import GPT, GPTConfig
from .hf_files import (activation_from_hf, activation_to_hf, check_model_type, load_weights, module_map, output_is_tied,
                       refuse_missing_fields, tensor_taker, tensors_by_map, weights_by_map)

# Per-layer names, ours <- theirs: the norms (a weight only), the linear layers (a weight and, with
# ``bias``, a bias) and the fused linear layers, each the concatenation of theirs along its output.
_NORMS = [("self_attention_norm", "input_layernorm"), ("feed_forward_norm", "post_attention_layernorm")]
_LINEARS = [("self_attention.out_proj", ["self_attn.o_proj"]),
            ("self_attention.qkv_proj", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
            ("feed_forward.linear1", ["mlp.gate_proj", "mlp.up_proj"]),
            ("feed_forward.linear2", ["mlp.down_proj"])]


def _rope(hf: dict[str, Any]) -> tuple[float, dict | None]:
    """(the rotary base frequency, Llama 3.1's frequency scaling or None); other scalings are refused."""
    rope = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling")
    if scaling:                                          # transformers 4.x: the scaling apart from the theta
        rope = {**rope, **scaling, "rope_type": scaling.get("rope_type", scaling.get("type", "default"))}
    kind = rope.get("rope_type", "default")
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError(f"partial_rotary_factor={rope['partial_rotary_factor']} is not supported; "
                          "glassformer rotates the whole head")
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    if kind == "default":
        return theta, None
    if kind == "llama3":
        with refuse_missing_fields("rope scaling llama3"):
            return theta, {"factor": float(rope["factor"]), "low_freq_factor": float(rope["low_freq_factor"]),
                           "high_freq_factor": float(rope["high_freq_factor"]),
                           "original_max_len": int(rope["original_max_position_embeddings"])}
    raise ConfigError(f"rope scaling {rope} is not supported; glassformer implements the default rotary "
                      "positions and Llama 3.1's (rope_type 'llama3')")


def config_from_hf_llama(hf: dict[str, Any], weights: dict[str, Tensor] | None = None) -> GPTConfig:
    """A :class:`GPTConfig` with Llama's options from the fields of a Hugging Face ``LlamaConfig`` (a
    dict).  With the ``weights``, an ``lm_head`` that differs from ``embed_tokens`` unties the output
    whatever the config says (as transformers loads it)."""
    check_model_type(hf, "llama", "Llama")
    with refuse_missing_fields("the Llama config"):
        d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
        head_dim = hf.get("head_dim")
        if head_dim is not None and head_dim * n_heads != d_model:
            raise ConfigError(f"head_dim={head_dim} differs from hidden_size/num_attention_heads = "
                              f"{d_model}/{n_heads}; glassformer's heads split d_model evenly")
        attention_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
        if attention_bias != mlp_bias:
            raise ConfigError(f"attention_bias={attention_bias} with mlp_bias={mlp_bias} is not supported; "
                              "glassformer's GPT has one bias option for every linear layer")
        tied = output_is_tied(hf, weights, "lm_head.weight", "model.embed_tokens.weight", default=False)
        return GPTConfig(
            vocab_size=hf["vocab_size"], n_layers=hf["num_hidden_layers"], n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads, d_model=d_model, d_ff=hf["intermediate_size"],
            max_len=hf.get("max_position_embeddings", 2048), dropout=0.0,
            norm="rmsnorm", norm_bias=False, norm_eps=float(hf.get("rms_norm_eps", 1e-6)), norm_first=True,
            positional="rotary", rope_theta=_rope(hf)[0], rope_scaling=_rope(hf)[1],
            activation=activation_from_hf(hf.get("hidden_act", "silu"), "hidden_act"), gated=True,
            bias=attention_bias, tie_embeddings=tied,
        )


def _key_map(c: GPTConfig, prefix: str = "") -> dict[str, list[str]]:
    """Our parameter names -> the checkpoint's (under ``prefix``), all but the token embedding and
    the output layer."""
    params = ("weight", "bias") if c.bias else ("weight",)
    key_map = {"decoder.final_norm.weight": [f"{prefix}norm.weight"]}
    for i in range(c.n_layers):
        mine, theirs = f"decoder.layers.{i}", f"{prefix}layers.{i}"
        key_map.update(module_map([(f"{mine}.{m}", f"{theirs}.{t}") for m, t in _NORMS], ("weight",)))
        key_map.update(module_map([(f"{mine}.{m}", [f"{theirs}.{t}" for t in parts]) for m, parts in _LINEARS], params))
    return key_map


def state_dict_from_hf_llama(weights: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Rename (and fuse) Hugging Face Llama tensors into a state dict of :class:`GPT`."""
    take = tensor_taker(weights, "Llama", "model.")
    ours = {"embed.token.weight": take("embed_tokens.weight"), **tensors_by_map(take, _key_map(config))}
    ours["lm_head.weight"] = ours["embed.token.weight"] if config.tie_embeddings else take("lm_head.weight")
    return ours


def to_hf_llama(model: GPT) -> tuple[dict, dict[str, Tensor]]:
    """(Hugging Face config dict, weights) of a Llama-shaped GPT: the inverse of :func:`state_dict_from_hf_llama`."""
    c = model.config
    if not (c.norm == "rmsnorm" and c.positional == "rotary" and c.gated and c.norm_first):
        raise ConfigError("this GPT is not Llama-shaped (RMSNorm, rotary positions, gated feed-forward)")
    kv = c.n_kv_heads or c.n_heads
    rope = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_scaling:
        s = c.rope_scaling
        rope = {"rope_type": "llama3", "rope_theta": c.rope_theta, "factor": s["factor"],
                "low_freq_factor": s["low_freq_factor"], "high_freq_factor": s["high_freq_factor"],
                "original_max_position_embeddings": s["original_max_len"]}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": c.vocab_size,
              "hidden_size": c.d_model, "intermediate_size": c.d_ff, "num_hidden_layers": c.n_layers,
              "num_attention_heads": c.n_heads, "num_key_value_heads": kv, "max_position_embeddings": c.max_len,
              "rms_norm_eps": c.norm_eps, "hidden_act": activation_to_hf(c.activation), "rope_parameters": rope,
              "attention_bias": c.bias, "mlp_bias": c.bias, "tie_word_embeddings": c.tie_embeddings,
              "head_dim": c.d_model // c.n_heads}
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    d_kv = kv * (c.d_model // c.n_heads)

    def rows(mine: str) -> list[int]:        # a fused matrix's parts: [Q; K; V] (grouped K, V) or [gate; up]
        return [c.d_model, d_kv, d_kv] if ".qkv_proj." in mine else [c.d_ff, c.d_ff]

    out = {"model.embed_tokens.weight": ours["embed.token.weight"][: c.vocab_size],
           **weights_by_map(ours, _key_map(c, "model."), rows)}
    if not c.tie_embeddings:
        out["lm_head.weight"] = ours["lm_head.weight"][: c.vocab_size]
    return config, out


def load_hf_llama(path: str | Path, dtype: torch.dtype = torch.float32) -> GPT:
    """A :class:`GPT` with the weights of a Hugging Face Llama directory (config.json + model.safetensors)."""
    return load_weights(path, "Llama", GPT, config_from_hf_llama, state_dict_from_hf_llama, dtype)


def convert_hf_llama(path: str | Path, out_dir: str | Path, tokenizer=None) -> Path:
    """Write a Hugging Face Llama directory as a glassformer model directory (config.json,
    model.safetensors with tied matrices stored once).  Llama's tokenizers lack glassformer's
    special tokens, so none is carried over; pass ``tokenizer`` (a
    :class:`glassformer.tokenizers.Tokenizer`) to save one with the model."""
    from ..model_format import save_model_dir

    return save_model_dir(out_dir, load_hf_llama(path), tokenizer)


__all__ = ["to_hf_llama", "config_from_hf_llama", "state_dict_from_hf_llama", "load_hf_llama", "convert_hf_llama"]
