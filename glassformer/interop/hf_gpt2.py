"""GPT-2 checkpoints in the Hugging Face layout -> :class:`glassformer.models.GPT`.

    HF_DIR/config.json        GPT2Config fields: n_layer, n_head, n_embd, n_positions, ...
    HF_DIR/model.safetensors  transformer.wte / wpe / h.{i}.{ln_1, attn.c_attn, attn.c_proj,
                              ln_2, mlp.c_fc, mlp.c_proj} / ln_f  (+ lm_head when untied)

GPT-2's ``Conv1D`` stores its weight as (in_features, out_features), the transpose
of ``nn.Linear``'s, so every projection matrix is transposed on the way in.  The
fused query/key/value layout (``c_attn``: Q, K, V concatenated along the output)
is the same as our ``qkv_proj``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError
from ..models.gpt import GPT, GPTConfig
from .hf_files import (activation_from_hf, activation_to_hf, check_model_type, load_weights, output_is_tied,
                       refuse_missing_fields, tensor_taker)

# Per-layer modules: ours <- theirs, and whether it is a Conv1D (its weight transposed).
_LAYER_MAP = [
    ("self_attention_norm", "ln_1", False),
    ("self_attention.qkv_proj", "attn.c_attn", True),
    ("self_attention.out_proj", "attn.c_proj", True),
    ("feed_forward_norm", "ln_2", False),
    ("feed_forward.linear1", "mlp.c_fc", True),
    ("feed_forward.linear2", "mlp.c_proj", True),
]


def config_from_hf_gpt2(hf: dict, weights: dict[str, Tensor] | None = None) -> GPTConfig:
    """A :class:`GPTConfig` from the fields of a Hugging Face ``GPT2Config`` (a dict).  With the
    ``weights``, an ``lm_head`` that differs from ``wte`` unties the output whatever the config says
    (as transformers loads it)."""
    check_model_type(hf, "gpt2", "GPT-2")
    unsupported = {k: hf[k] for k in ("add_cross_attention", "scale_attn_by_inverse_layer_idx",
                                      "reorder_and_upcast_attn") if hf.get(k)}
    if hf.get("scale_attn_weights", True) is False:
        unsupported["scale_attn_weights"] = False
    if unsupported:
        raise ConfigError(f"GPT-2 options {unsupported} are not supported by glassformer's GPT")
    activation = activation_from_hf(hf.get("activation_function", "gelu_new"))
    tied = output_is_tied(hf, weights, "lm_head.weight", "transformer.wte.weight")
    with refuse_missing_fields("GPT-2 config"):
        return GPTConfig(
            vocab_size=hf["vocab_size"], n_layers=hf["n_layer"], n_heads=hf["n_head"], d_model=hf["n_embd"],
            d_ff=hf.get("n_inner") or 4 * hf["n_embd"], max_len=hf["n_positions"],
            dropout=float(hf.get("resid_pdrop", 0.1)), norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            activation=activation, bias=True, tie_embeddings=tied,
        )


def state_dict_from_hf_gpt2(weights: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Rename (and transpose) Hugging Face GPT-2 tensors into a state dict of :class:`GPT`."""
    # Checkpoints saved from GPT2Model lack the "transformer." prefix; accept both.
    take_tensor = tensor_taker(weights, "GPT-2", "transformer.")

    def take(name: str, transpose: bool = False) -> Tensor:     # GPT-2's Conv1D matrices are transposed
        tensor = take_tensor(name)
        return tensor.t().contiguous() if transpose else tensor

    ours = {"embed.token.weight": take("wte.weight"), "embed.position.weight": take("wpe.weight"),
            "decoder.final_norm.weight": take("ln_f.weight"), "decoder.final_norm.bias": take("ln_f.bias")}
    for i in range(config.n_layers):
        for mine, theirs, conv1d in _LAYER_MAP:
            for p in ("weight", "bias"):
                ours[f"decoder.layers.{i}.{mine}.{p}"] = take(f"h.{i}.{theirs}.{p}", conv1d and p == "weight")
    if config.tie_embeddings:
        ours["lm_head.weight"] = ours["embed.token.weight"]
    else:
        ours["lm_head.weight"] = take("lm_head.weight")
    return ours


def to_hf_gpt2(model: GPT) -> tuple[dict, dict[str, Tensor]]:
    """(Hugging Face config dict, weights) of a GPT-2-shaped GPT: the inverse of :func:`state_dict_from_hf_gpt2`."""
    c = model.config
    if not (c.norm == "layernorm" and c.positional == "learned" and not c.gated and c.bias and c.norm_first
            and c.n_kv_heads in (None, c.n_heads)):
        raise ConfigError("this GPT is not GPT-2-shaped (LayerNorm pre-norm, learned positions, biases, "
                          "plain feed-forward)")
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
              "n_layer": c.n_layers, "n_head": c.n_heads, "n_embd": c.d_model, "n_inner": c.d_ff,
              "n_positions": c.max_len, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
              "layer_norm_epsilon": c.norm_eps, "activation_function": activation_to_hf(c.activation),
              "tie_word_embeddings": c.tie_embeddings}
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = {"transformer.wte.weight": ours["embed.token.weight"][: c.vocab_size],
           "transformer.wpe.weight": ours["embed.position.weight"],
           "transformer.ln_f.weight": ours["decoder.final_norm.weight"],
           "transformer.ln_f.bias": ours["decoder.final_norm.bias"]}
    for i in range(c.n_layers):
        for mine, theirs, conv1d in _LAYER_MAP:
            for p in ("weight", "bias"):
                tensor = ours[f"decoder.layers.{i}.{mine}.{p}"]
                out[f"transformer.h.{i}.{theirs}.{p}"] = tensor.t().contiguous() if conv1d and p == "weight" else tensor
    if not c.tie_embeddings:
        out["lm_head.weight"] = ours["lm_head.weight"][: c.vocab_size]
    return config, out


def load_hf_gpt2(path: str | Path, dtype: torch.dtype = torch.float32) -> GPT:
    """A :class:`GPT` with the weights of a Hugging Face GPT-2 directory (config.json + model.safetensors)."""
    return load_weights(path, "GPT-2", GPT, config_from_hf_gpt2, state_dict_from_hf_gpt2, dtype)


def convert_hf_gpt2(path: str | Path, out_dir: str | Path) -> Path:
    """Write a Hugging Face GPT-2 directory as a glassformer model directory (config.json,
    model.safetensors with tied matrices stored once).  The GPT-2 tokenizer has none of
    glassformer's special tokens, so it is not carried over."""
    from ..model_format import save_model_dir

    return save_model_dir(out_dir, load_hf_gpt2(path))
