"""Marian (OPUS-MT) checkpoints in the Hugging Face layout -> :class:`glassformer.models.Transformer`.

    HF_DIR/config.json        MarianConfig fields: d_model, encoder_layers, encoder_attention_heads, ...
    HF_DIR/model.safetensors  model.shared / model.{encoder,decoder}.layers.{i}.{self_attn.{q,k,v,out}_proj,
                              self_attn_layer_norm, [encoder_attn.*, encoder_attn_layer_norm,] fc1, fc2,
                              final_layer_norm} / final_logits_bias (+ lm_head)

A Marian model *is* the paper's Transformer with a few options, so no new module
is needed — only the right :class:`TransformerConfig`:

* post-norm layers (``norm_first=False``), no final LayerNorm, LayerNorm eps 1e-5;
* the feed-forward activation ``swish`` (SiLU) in OPUS-MT checkpoints;
* sinusoidal positions in the *split* layout: all sines, then all cosines (what
  ``MarianSinusoidalPositionalEmbedding`` computes), with positions counted from 0
  on both sides (no offset, unlike BART's learned positions).  They are not stored
  in the checkpoint; ours are computed from the config the same way;
* embeddings scaled by sqrt(d_model) and one matrix shared by the source embedding,
  target embedding and output projection (``share_encoder_decoder_embeddings`` and
  ``tie_word_embeddings``).  Which matrices are one is read from the weights, as
  transformers 5 loads them: an ``lm_head`` (or encoder/decoder ``embed_tokens``) the file
  holds is used whenever it differs from the matrix it would be tied to, and without
  ``tie_word_embeddings`` each is the file's own (the shared matrix standing in for
  embed_tokens a file lacks);
* ``final_logits_bias`` added to the output logits (a bias on our output projection);
* special ids that differ from glassformer's defaults: EOS ``</s>`` = 0, ``<unk>`` = 1,
  pad = the last id, and decoding starts from the pad token (no BOS).

Separate query/key/value projections are concatenated into our fused ``qkv_proj``
(self-attention) and ``kv_proj`` (cross-attention).  Nothing here imports
``transformers``; an in-memory model's ``state_dict()`` and ``config.to_dict()`` work too.

The tokenizer (``source.spm``, ``target.spm``, ``vocab.json``, as transformers' ``MarianTokenizer`` reads
them) is :class:`~glassformer.tokenizers.sentencepiece.SentencePieceTokenizer`
(:func:`load_hf_marian_tokenizers`); its special ids must be config.json's.

Hugging Face's generation settings (``forced_eos_token_id``, ``bad_words_ids``, beam size) are
carried through ``convert`` in generation.json (``hf_files.generation_from_hf``) but not applied:
decoding options are passed to glassformer's decoders.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..files import read_json
from ..models.transformer import Transformer, TransformerConfig
from .hf_files import (activation_from_hf, activation_to_hf, check_model_type, model_with_weights, module_map,
                       read_hf_directory, refuse_missing_fields, tensor_taker, tensors_by_map, weights_by_map)

# Per-layer names: ours <- theirs (q/k/v are fused separately, below).
_LAYER_MAP = [
    ("self_attention.out_proj", "self_attn.out_proj"),
    ("self_attention_norm", "self_attn_layer_norm"),
    ("feed_forward.linear1", "fc1"),
    ("feed_forward.linear2", "fc2"),
    ("feed_forward_norm", "final_layer_norm"),
]
_CROSS_MAP = [
    ("cross_attention.q_proj", "encoder_attn.q_proj"),
    ("cross_attention.out_proj", "encoder_attn.out_proj"),
    ("cross_attention_norm", "encoder_attn_layer_norm"),
]


def _input_embeddings(weights: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(source, target) token embeddings of a Marian checkpoint: each side's ``embed_tokens`` where
    the file holds one, else the shared matrix."""
    stored = {k.removeprefix("model."): v for k, v in weights.items()}
    shared = stored.get("shared.weight", stored.get("encoder.embed_tokens.weight"))
    source = stored.get("encoder.embed_tokens.weight", shared)
    target = stored.get("decoder.embed_tokens.weight", shared)
    if source is None or target is None:
        raise CheckpointError("the Marian checkpoint lacks the shared embedding 'model.shared.weight'")
    return source, target


def _tie_mode(hf: dict, weights: dict[str, Tensor] | None) -> str:
    """Our ``tie_embeddings``: which of the source embedding, target embedding and output matrix
    are one.  With the ``weights`` it is read from them (matrices that are equal are tied); without,
    from ``share_encoder_decoder_embeddings`` and ``tie_word_embeddings``."""
    tied = bool(hf.get("tie_word_embeddings", True))
    if weights is None:
        inputs_shared = bool(hf.get("share_encoder_decoder_embeddings", True))
    else:
        source, target = _input_embeddings(weights)
        inputs_shared = source.shape == target.shape and torch.equal(source, target)
        head = weights.get("lm_head.weight")
        tied = tied and (head is None or torch.equal(head, target))
    return {(True, True): "all", (True, False): "inputs", (False, True): "decoder", (False, False): "none"}[
        (inputs_shared, tied)]


def config_from_hf_marian(hf: dict, weights: dict[str, Tensor] | None = None) -> TransformerConfig:
    """A :class:`TransformerConfig` from the fields of a Hugging Face ``MarianConfig`` (a dict), the
    tied matrices read from the ``weights`` where given."""
    check_model_type(hf, "marian", "Marian")
    with refuse_missing_fields("the Marian config"):
        heads, ffn = hf["encoder_attention_heads"], hf["encoder_ffn_dim"]
        if hf.get("decoder_attention_heads", heads) != heads or hf.get("decoder_ffn_dim", ffn) != ffn:
            raise ConfigError("encoder and decoder with different head counts or d_ff are not supported "
                              f"(heads {heads}/{hf.get('decoder_attention_heads')}, "
                              f"d_ff {ffn}/{hf.get('decoder_ffn_dim')})")
        if hf.get("normalize_before", False):
            raise ConfigError("normalize_before=True (pre-norm) is not a Marian layout glassformer maps")
        activation = activation_from_hf(hf.get("activation_function", "gelu"))
        vocab = hf["vocab_size"]
        shared = hf.get("share_encoder_decoder_embeddings", True)
        tgt_vocab = vocab if shared else (hf.get("decoder_vocab_size") or vocab)
        pad, eos = hf.get("pad_token_id"), hf.get("eos_token_id", 0)
        if isinstance(eos, list):
            if len(eos) != 1:
                raise ConfigError(f"eos_token_id={eos} lists several ids; glassformer models have one EOS")
            eos = eos[0]
        start = hf.get("decoder_start_token_id", pad)
        if pad is None:
            raise ConfigError("the Marian config has no pad_token_id; it is needed for source padding")
        for name, idx in (("pad_token_id", pad), ("eos_token_id", eos), ("decoder_start_token_id", start)):
            if not isinstance(idx, int) or not 0 <= idx < min(vocab, tgt_vocab):
                raise ConfigError(f"config.json's {name}={idx!r} is outside the vocabulary of "
                                  f"{min(vocab, tgt_vocab)} tokens (vocab_size / decoder_vocab_size)")
        return TransformerConfig(
            src_vocab_size=vocab, tgt_vocab_size=tgt_vocab, d_model=hf["d_model"], n_heads=heads,
            encoder_layers=hf["encoder_layers"], decoder_layers=hf["decoder_layers"], d_ff=ffn,
            dropout=float(hf.get("dropout", 0.1)), attention_dropout=float(hf.get("attention_dropout", 0.0)),
            activation_dropout=float(hf.get("activation_dropout", 0.0)), activation=activation,
            norm_first=False, norm_eps=1e-5, max_len=hf.get("max_position_embeddings", 1024),
            positional="sinusoidal-split", scale_embedding=bool(hf.get("scale_embedding", False)),
            tie_embeddings=_tie_mode(hf, weights),
            final_logits_bias=True, pad_id=pad, bos_id=start, eos_id=eos, unk_id=1 if vocab > 1 else 0,
            decoder_start_id=start,
        )


def _key_map(c: TransformerConfig, prefix: str = "") -> dict[str, list[str]]:
    """Our layers' parameter names -> the checkpoint's (under ``prefix``); query/key/value are fused
    into ``qkv_proj``, the cross-attention's key/value into ``kv_proj``."""
    pairs = []
    for side, n_layers in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
        cross = _CROSS_MAP if side == "decoder" else []
        for i in range(n_layers):
            mine, theirs = f"{side}.layers.{i}", f"{prefix}{side}.layers.{i}"
            pairs.append((f"{mine}.self_attention.qkv_proj", [f"{theirs}.self_attn.{p}_proj" for p in "qkv"]))
            pairs += [(f"{mine}.{m}", f"{theirs}.{t}") for m, t in _LAYER_MAP + cross]
            if side == "decoder":
                pairs.append((f"{mine}.cross_attention.kv_proj", [f"{theirs}.encoder_attn.{p}_proj" for p in "kv"]))
    return module_map(pairs)


def state_dict_from_hf_marian(weights: dict[str, Tensor], config: TransformerConfig) -> dict[str, Tensor]:
    """Rename (and fuse) Hugging Face Marian tensors into a state dict of :class:`Transformer`."""
    take = tensor_taker(weights, "Marian", "model.")
    ours: dict[str, Tensor] = {}
    source, target = _input_embeddings(weights)
    ours["src_embed.token.weight"] = target if config.tie_embeddings in ("all", "inputs") else source
    ours["tgt_embed.token.weight"] = target
    ours["generator.proj.weight"] = target if config.tie_embeddings in ("all", "decoder") else take("lm_head.weight")
    bias = weights.get("final_logits_bias")
    ours["generator.proj.bias"] = (bias.reshape(-1) if bias is not None
                                   else torch.zeros(config.tgt_vocab_size))
    return {**ours, **tensors_by_map(take, _key_map(config))}


def to_hf_marian(model: Transformer) -> tuple[dict, dict[str, Tensor]]:
    """(Hugging Face config dict, weights) of a Marian-shaped ``model`` (post-norm, biases, the
    split sinusoid): the inverse of :func:`state_dict_from_hf_marian`.  A model trained here is
    one too: glassformer's translators export with their interleaved sinusoid only if it is the split one."""
    c = model.config
    if c.positional != "sinusoidal-split" or c.norm_first or c.norm != "layernorm" or not c.bias or c.gated:
        raise ConfigError("this encoder-decoder is not Marian-shaped (post-norm LayerNorm, biases, the "
                          "sin|cos positional layout 'sinusoidal-split'); Marian and T5 shapes export to Hugging Face")
    shared = c.tie_embeddings in ("all", "inputs")
    config = {"architectures": ["MarianMTModel"], "model_type": "marian", "vocab_size": c.src_vocab_size,
              "decoder_vocab_size": c.tgt_vocab_size, "d_model": c.d_model, "encoder_layers": c.encoder_layers,
              "decoder_layers": c.decoder_layers, "encoder_attention_heads": c.n_heads,
              "decoder_attention_heads": c.n_heads, "encoder_ffn_dim": c.d_ff, "decoder_ffn_dim": c.d_ff,
              "dropout": c.dropout, "attention_dropout": c.attention_dropout,
              "activation_dropout": c.activation_dropout, "activation_function": activation_to_hf(c.activation),
              "max_position_embeddings": c.max_len, "scale_embedding": c.scale_embedding,
              "share_encoder_decoder_embeddings": shared,
              "tie_word_embeddings": c.tie_embeddings in ("all", "decoder"),
              "pad_token_id": c.pad_id, "eos_token_id": c.eos_id, "decoder_start_token_id": c.start_id,
              "is_encoder_decoder": True, "normalize_before": False}
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out: dict[str, Tensor] = {"final_logits_bias": (ours["generator.proj.bias"] if c.final_logits_bias
                                                    else torch.zeros(c.tgt_vocab_size))[None, :]}
    if shared:
        out["model.shared.weight"] = ours["tgt_embed.token.weight"]
    if c.tie_embeddings != "all":            # transformers 5 ties nothing without tie_word_embeddings
        out["model.encoder.embed_tokens.weight"] = ours["src_embed.token.weight"]
        out["model.decoder.embed_tokens.weight"] = ours["tgt_embed.token.weight"]
    if c.tie_embeddings in ("none", "inputs"):
        out["lm_head.weight"] = ours["generator.proj.weight"]
    return config, {**out, **weights_by_map(ours, _key_map(c, "model."))}


def transformer_from_hf_marian(hf_config: dict, weights: dict[str, Tensor],
                               dtype: torch.dtype = torch.float32) -> Transformer:
    """A :class:`Transformer` with the weights of a Marian model (config dict + state dict), in eval mode."""
    config = config_from_hf_marian(hf_config, weights)
    return model_with_weights(Transformer, config, state_dict_from_hf_marian(weights, config), "the Marian weights",
                              dtype)


def load_hf_marian(path: str | Path, dtype: torch.dtype = torch.float32) -> Transformer:
    """A :class:`Transformer` from a Hugging Face Marian directory (config.json + model.safetensors)."""
    hf_config, weights, _ = read_hf_directory(path, "Marian")
    return transformer_from_hf_marian(hf_config, weights, dtype)


# The tokenizer files of a Marian checkpoint (transformers' MarianTokenizer): SentencePiece models and
# piece -> id vocabularies; target_vocab.json only with tokenizer_config.json's separate_vocabs.
SOURCE_SPM, TARGET_SPM, VOCAB, TARGET_VOCAB, TOKENIZER_CONFIG = (
    "source.spm", "target.spm", "vocab.json", "target_vocab.json", "tokenizer_config.json")


def _token_name(settings: dict, key: str, default: str) -> str:
    """A special token's text in tokenizer_config.json: a string, or an added token's ``content``."""
    value = settings.get(key) or default
    return str(value.get("content", default) if isinstance(value, dict) else value)


def _vocabulary(file: Path) -> dict[str, int]:
    vocab = read_json(file, what="Marian vocabulary", error=CheckpointError)
    if not isinstance(vocab, dict) or not all(isinstance(i, int) and i >= 0 for i in vocab.values()):
        raise CheckpointError(f"Marian vocabulary {file} is not an object of piece -> non-negative id")
    return vocab


def load_hf_marian_tokenizers(path: str | Path, config: TransformerConfig):
    """(source, target) :class:`~glassformer.tokenizers.sentencepiece.SentencePieceTokenizer` of a Marian
    directory (source.spm, target.spm, vocab.json), or (None, None) where it has none.  Special tokens
    that contradict config.json (another EOS or pad id, ids outside the model's vocabulary) are refused,
    naming the file."""
    from ..tokenizers.sentencepiece import SentencePieceTokenizer

    path = Path(path)
    if not (path / SOURCE_SPM).exists():
        return None, None
    settings = read_json(path / TOKENIZER_CONFIG, what="tokenizer config", error=CheckpointError) \
        if (path / TOKENIZER_CONFIG).exists() else {}
    if not isinstance(settings, dict):
        raise CheckpointError(f"tokenizer config {path / TOKENIZER_CONFIG} is not a JSON object")
    names = {"eos": _token_name(settings, "eos_token", "</s>"), "unk": _token_name(settings, "unk_token", "<unk>"),
             "pad": _token_name(settings, "pad_token", "<pad>")}
    target_vocab = TARGET_VOCAB if settings.get("separate_vocabs") else VOCAB
    sides = []
    for spm, vocab_file, size in ((SOURCE_SPM, VOCAB, config.src_vocab_size),
                                  (TARGET_SPM, target_vocab, config.tgt_vocab_size)):
        vocab = _vocabulary(path / vocab_file)
        tok = SentencePieceTokenizer(path / spm, vocab, vocab_file=path / vocab_file, **names)
        too_large = {p: i for p, i in vocab.items() if i >= size}
        if too_large:
            piece, idx = next(iter(too_large.items()))
            raise CheckpointError(f"{path / vocab_file} gives {piece!r} the id {idx}, outside the model's vocabulary "
                                  f"of {size} (config.json's vocab_size); the tokenizer and the model do not belong together")
        for role, ours in (("eos", config.eos_id), ("pad", config.pad_id)):
            theirs = getattr(tok, f"{role}_id")
            if theirs != ours:
                raise CheckpointError(f"{path / vocab_file} gives the {role} token {names[role]!r} the id {theirs} but "
                                      f"config.json's {role}_token_id is {ours}; the tokenizer and the model disagree")
        sides.append(tok)
    return tuple(sides)


__all__ = ["config_from_hf_marian", "state_dict_from_hf_marian", "to_hf_marian", "transformer_from_hf_marian", "load_hf_marian",
           "load_hf_marian_tokenizers"]
