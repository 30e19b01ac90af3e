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
from ..tokenizers import Tokenizer
from .hf_files import model_with_weights, read_hf_directory, split_rows, tensor_taker

_FEED_FORWARD = {"relu": ("relu", False), "gated-gelu": ("gelu_tanh", True), "gated-silu": ("silu", True)}


def config_from_hf_t5(hf: dict, weights: dict[str, Tensor] | None = None) -> TransformerConfig:
    """A T5-shaped :class:`TransformerConfig`.  Whether the output layer is the shared embedding is
    read from the weights where given (a separate ``lm_head`` that differs from ``shared``: T5 v1.1),
    and whether the decoder output is scaled from ``scale_decoder_outputs`` (transformers 5) or else
    ``tie_word_embeddings`` (older configs use it for both)."""
    if hf.get("model_type", "t5") != "t5":
        raise ConfigError(f"model_type={hf.get('model_type')!r} is not a T5 checkpoint (expected 't5')")
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in _FEED_FORWARD:
        raise ConfigError(f"feed_forward_proj={proj!r} is not supported; known: {sorted(_FEED_FORWARD)}")
    try:
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
    except KeyError as e:
        raise ConfigError(f"the T5 config lacks the field {e.args[0]!r}") from None


def state_dict_from_hf_t5(weights: dict[str, Tensor], config: TransformerConfig) -> dict[str, Tensor]:
    take = tensor_taker(weights, "T5", "")
    ours = {"tgt_embed.token.weight": take("shared.weight"), "src_embed.token.weight": take("shared.weight")}
    ours["generator.proj.weight"] = take("shared.weight") if config.tie_embeddings == "all" else take("lm_head.weight")
    for side, n_layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        ours[f"{side}_bias.embedding.weight"] = take(
            f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        ours[f"{side}.final_norm.weight"] = take(f"{side}.final_layer_norm.weight")
        for i in range(n_layers):
            mine, theirs = f"{side}.layers.{i}", f"{side}.block.{i}.layer"
            attn = f"{theirs}.0.SelfAttention"
            ours[f"{mine}.self_attention.qkv_proj.weight"] = torch.cat([take(f"{attn}.{p}.weight") for p in "qkv"])
            ours[f"{mine}.self_attention.out_proj.weight"] = take(f"{attn}.o.weight")
            ours[f"{mine}.self_attention_norm.weight"] = take(f"{theirs}.0.layer_norm.weight")
            ff = 1
            if side == "decoder":
                cross = f"{theirs}.1.EncDecAttention"
                ours[f"{mine}.cross_attention.q_proj.weight"] = take(f"{cross}.q.weight")
                ours[f"{mine}.cross_attention.kv_proj.weight"] = torch.cat([take(f"{cross}.{p}.weight") for p in "kv"])
                ours[f"{mine}.cross_attention.out_proj.weight"] = take(f"{cross}.o.weight")
                ours[f"{mine}.cross_attention_norm.weight"] = take(f"{theirs}.1.layer_norm.weight")
                ff = 2
            dense = f"{theirs}.{ff}.DenseReluDense"
            if config.gated:
                ours[f"{mine}.feed_forward.linear1.weight"] = torch.cat([take(f"{dense}.wi_0.weight"),
                                                                         take(f"{dense}.wi_1.weight")])
            else:
                ours[f"{mine}.feed_forward.linear1.weight"] = take(f"{dense}.wi.weight")
            ours[f"{mine}.feed_forward.linear2.weight"] = take(f"{dense}.wo.weight")
            ours[f"{mine}.feed_forward_norm.weight"] = take(f"{theirs}.{ff}.layer_norm.weight")
    return ours


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
    for side, n_layers in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
        out[f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = ours[f"{side}_bias.embedding.weight"]
        out[f"{side}.final_layer_norm.weight"] = ours[f"{side}.final_norm.weight"]
        for i in range(n_layers):
            mine, theirs = f"{side}.layers.{i}", f"{side}.block.{i}.layer"
            attn = f"{theirs}.0.SelfAttention"
            for name, part in zip("qkv", split_rows(ours[f"{mine}.self_attention.qkv_proj.weight"], [c.d_model] * 3)):
                out[f"{attn}.{name}.weight"] = part
            out[f"{attn}.o.weight"] = ours[f"{mine}.self_attention.out_proj.weight"]
            out[f"{theirs}.0.layer_norm.weight"] = ours[f"{mine}.self_attention_norm.weight"]
            ff = 1
            if side == "decoder":
                cross = f"{theirs}.1.EncDecAttention"
                out[f"{cross}.q.weight"] = ours[f"{mine}.cross_attention.q_proj.weight"]
                out[f"{cross}.k.weight"], out[f"{cross}.v.weight"] = split_rows(
                    ours[f"{mine}.cross_attention.kv_proj.weight"], [c.d_model] * 2)
                out[f"{cross}.o.weight"] = ours[f"{mine}.cross_attention.out_proj.weight"]
                out[f"{theirs}.1.layer_norm.weight"] = ours[f"{mine}.cross_attention_norm.weight"]
                ff = 2
            dense = f"{theirs}.{ff}.DenseReluDense"
            if c.gated:
                out[f"{dense}.wi_0.weight"], out[f"{dense}.wi_1.weight"] = split_rows(
                    ours[f"{mine}.feed_forward.linear1.weight"], [c.d_ff] * 2)
            else:
                out[f"{dense}.wi.weight"] = ours[f"{mine}.feed_forward.linear1.weight"]
            out[f"{dense}.wo.weight"] = ours[f"{mine}.feed_forward.linear2.weight"]
            out[f"{theirs}.{ff}.layer_norm.weight"] = ours[f"{mine}.feed_forward_norm.weight"]
    return config, out


def load_hf_t5(path: str | Path, dtype: torch.dtype = torch.float32) -> ModelDir:
    """A :class:`Transformer` with the weights of a Hugging Face T5 directory (the SentencePiece
    tokenizer is carried over when the directory has a ``tokenizer.json``)."""
    hf_config, weights, weights_file = read_hf_directory(path, "T5")
    config = config_from_hf_t5(hf_config, weights)
    model = model_with_weights(Transformer, config, state_dict_from_hf_t5(weights, config), weights_file, dtype)
    tokenizer = Tokenizer.load_checkpoint(path) if (Path(path) / "tokenizer.json").is_file() else None
    return ModelDir(model, config, tokenizer)


__all__ = ["config_from_hf_t5", "state_dict_from_hf_t5", "to_hf_t5", "load_hf_t5"]
