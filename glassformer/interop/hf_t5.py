"""T5 checkpoints in the Hugging Face layout -> :class:`glassformer.models.Transformer` with T5's options.

    HF_DIR/config.json          model_type "t5": d_model, d_kv, d_ff, num_layers, num_decoder_layers, num_heads,
                                relative_attention_num_buckets, relative_attention_max_distance,
                                layer_norm_epsilon, feed_forward_proj ("relu" | "gated-gelu"), tie_word_embeddings
    HF_DIR/model.safetensors    shared, {encoder,decoder}.block.{i}.layer.{0: SelfAttention.{q,k,v,o}, layer_norm;
                                decoder 1: EncDecAttention.{q,k,v,o}, layer_norm; last: DenseReluDense.{wi | wi_0,
                                wi_1, wo}, layer_norm}, block.0's relative_attention_bias,
                                {encoder,decoder}.final_layer_norm, lm_head (untied)

T5 keeps the relative position bias in the first layer of each stack and shares it; ours is the
stack's ``encoder_bias`` / ``decoder_bias``, computed once per forward.  Gated-GELU's ``wi_0``
(the gate) and ``wi_1`` (the values) are concatenated into our ``linear1`` = [gate; up].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError
from ..model_format import ModelDir
from ..models.transformer import Transformer, TransformerConfig
from .hf_files import (check_model_type, load_weights, module_map, refuse_missing_fields, tensor_taker, tensors_by_map,
                       weights_by_map, with_own_tokenizer)

_FEED_FORWARD = {"relu": ("relu", False), "gated-gelu": ("gelu_tanh", True), "gated-silu": ("silu", True)}


def config_from_hf_t5(hf: dict, weights: dict[str, Tensor] | None = None) -> TransformerConfig:
    """A T5-shaped :class:`TransformerConfig`.  Whether the output layer is the shared embedding is
    read from the weights where given (a separate ``lm_head`` that differs from ``shared``: T5 v1.1),
    and whether the decoder output is scaled from ``scale_decoder_outputs`` (transformers 5) or else
    ``tie_word_embeddings`` (older configs use it for both)."""
    check_model_type(hf, "t5", "T5")
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in _FEED_FORWARD:
        raise ConfigError(f"feed_forward_proj={proj!r} is not supported; known: {sorted(_FEED_FORWARD)}")
    with refuse_missing_fields("the T5 config"):
        if hf["d_kv"] * hf["num_heads"] != hf["d_model"]:
            raise ConfigError(f"d_kv × num_heads = {hf['d_kv']} × {hf['num_heads']} differs from d_model="
                              f"{hf['d_model']}; glassformer's heads split d_model evenly")
        activation, gated = _FEED_FORWARD[proj]
        tied = bool(hf.get("tie_word_embeddings", True))
        if weights is not None:
            head = weights.get("lm_head.weight")
            tied = head is None or torch.equal(head, weights["shared.weight"])
        scale = bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)))
        vocab = hf["vocab_size"]
        return TransformerConfig(
            src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=hf["d_model"], n_heads=hf["num_heads"],
            encoder_layers=hf["num_layers"], decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
            d_ff=hf["d_ff"], dropout=float(hf.get("dropout_rate", 0.1)), activation=activation, gated=gated,
            norm="rmsnorm", norm_bias=False, norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)), norm_first=True,
            bias=False, positional="relative", relative_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_max_distance=hf.get("relative_attention_max_distance", 128), attention_scale=1.0,
            scale_embedding=False, scale_decoder_output=scale, tie_embeddings="all" if tied else "inputs",
            max_len=max(512, hf.get("n_positions", 512)), pad_id=hf.get("pad_token_id", 0),
            eos_id=hf.get("eos_token_id", 1), bos_id=hf.get("pad_token_id", 0), unk_id=2,
            decoder_start_id=hf.get("decoder_start_token_id", 0),
        )


def _key_map(c: TransformerConfig) -> dict[str, list[str]]:
    """Our stacks' parameter names -> the checkpoint's (each a weight only); query/key/value are fused
    into ``qkv_proj``, the cross-attention's key/value into ``kv_proj``."""
    pairs = []
    for side, n_layers in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
        pairs += [(f"{side}_bias.embedding", f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias"),
                  (f"{side}.final_norm", f"{side}.final_layer_norm")]
        for i in range(n_layers):
            mine, theirs = f"{side}.layers.{i}", f"{side}.block.{i}.layer"
            attn = f"{theirs}.0.SelfAttention"
            pairs += [(f"{mine}.self_attention.qkv_proj", [f"{attn}.{p}" for p in "qkv"]),
                      (f"{mine}.self_attention.out_proj", f"{attn}.o"),
                      (f"{mine}.self_attention_norm", f"{theirs}.0.layer_norm")]
            ff = 1
            if side == "decoder":
                cross = f"{theirs}.1.EncDecAttention"
                pairs += [(f"{mine}.cross_attention.q_proj", f"{cross}.q"),
                          (f"{mine}.cross_attention.kv_proj", [f"{cross}.{p}" for p in "kv"]),
                          (f"{mine}.cross_attention.out_proj", f"{cross}.o"),
                          (f"{mine}.cross_attention_norm", f"{theirs}.1.layer_norm")]
                ff = 2
            dense = f"{theirs}.{ff}.DenseReluDense"
            wi = [f"{dense}.wi_0", f"{dense}.wi_1"] if c.gated else f"{dense}.wi"      # gated: [gate; up]
            pairs += [(f"{mine}.feed_forward.linear1", wi),
                      (f"{mine}.feed_forward.linear2", f"{dense}.wo"),
                      (f"{mine}.feed_forward_norm", f"{theirs}.{ff}.layer_norm")]
    return module_map(pairs, ("weight",))


def state_dict_from_hf_t5(weights: dict[str, Tensor], config: TransformerConfig) -> dict[str, Tensor]:
    take = tensor_taker(weights, "T5", "")
    ours = {"tgt_embed.token.weight": take("shared.weight"), "src_embed.token.weight": take("shared.weight")}
    ours["generator.proj.weight"] = take("shared.weight") if config.tie_embeddings == "all" else take("lm_head.weight")
    return {**ours, **tensors_by_map(take, _key_map(config))}


def to_hf_t5(model: Transformer) -> tuple[dict, dict[str, Tensor]]:
    """(Hugging Face config dict, weights) of a T5-shaped ``model``: the inverse of :func:`state_dict_from_hf_t5`."""
    c = model.config
    proj = {v: k for k, v in _FEED_FORWARD.items()}.get((c.activation, c.gated))
    if c.positional != "relative" or proj is None or c.bias or c.norm != "rmsnorm" or not c.norm_first:
        raise ConfigError("this encoder-decoder is not T5-shaped (relative positions, RMSNorm pre-norm, no biases, "
                          "a relu or gated feed-forward); only T5 and Marian shapes export to Hugging Face")
    config = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": c.tgt_vocab_size,
              "d_model": c.d_model, "d_kv": c.d_model // c.n_heads, "d_ff": c.d_ff, "num_layers": c.encoder_layers,
              "num_decoder_layers": c.decoder_layers, "num_heads": c.n_heads,
              "relative_attention_num_buckets": c.relative_buckets,
              "relative_attention_max_distance": c.relative_max_distance, "dropout_rate": c.dropout,
              "layer_norm_epsilon": c.norm_eps, "feed_forward_proj": proj, "is_encoder_decoder": True,
              "tie_word_embeddings": c.tie_embeddings == "all", "scale_decoder_outputs": c.scale_decoder_output,
              "pad_token_id": c.pad_id, "eos_token_id": c.eos_id, "decoder_start_token_id": c.start_id}
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = {"shared.weight": ours["tgt_embed.token.weight"]}
    if c.tie_embeddings != "all":
        out["lm_head.weight"] = ours["generator.proj.weight"]
    return config, {**out, **weights_by_map(ours, _key_map(c))}


def load_hf_t5(path: str | Path, dtype: torch.dtype = torch.float32) -> ModelDir:
    """A :class:`Transformer` with the weights of a Hugging Face T5 directory (the SentencePiece
    tokenizer is carried over when the directory has a ``tokenizer.json``)."""
    model = load_weights(path, "T5", Transformer, config_from_hf_t5, state_dict_from_hf_t5, dtype)
    return with_own_tokenizer(model, path)


__all__ = ["config_from_hf_t5", "state_dict_from_hf_t5", "to_hf_t5", "load_hf_t5"]
