"""BERT checkpoints in the Hugging Face layout -> :class:`glassformer.models.Bert`, with their tokenizer.

    HF_DIR/config.json            model_type "bert": hidden_size, num_hidden_layers, num_attention_heads,
                                  intermediate_size, max_position_embeddings, type_vocab_size, layer_norm_eps,
                                  hidden_act, architectures (BertModel, BertForMaskedLM, BertForSequenceClassification,
                                  BertForTokenClassification), id2label, problem_type (regression,
                                  single_label_classification, multi_label_classification), tie_word_embeddings
    HF_DIR/model.safetensors      [bert.]embeddings.{word,position,token_type}_embeddings, embeddings.LayerNorm,
                                  [bert.]encoder.layer.{i}.attention.self.{query,key,value},
                                  attention.output.{dense,LayerNorm}, intermediate.dense, output.{dense,LayerNorm},
                                  [bert.]pooler.dense, cls.predictions.{transform.dense,transform.LayerNorm,bias},
                                  cls.predictions.decoder.{weight,bias} (the weight read when tie_word_embeddings
                                  is false, or when it differs from the word embeddings, as transformers does),
                                  classifier
    HF_DIR/tokenizer.json         the tokenizer (or vocab.txt + tokenizer_config.json: do_lower_case, strip_accents)

The separate query/key/value projections are concatenated into our fused ``qkv_proj``.
A causal BERT (``is_decoder``) or one with cross-attention (``add_cross_attention``) is refused,
as is a regression over several numbers (``problem_type`` "regression" with ``num_labels`` > 1).
A sentence-transformers directory (such as all-MiniLM-L6-v2) is a BertModel directory plus
its pooling settings; it loads as an encoder (head "none") whose sentence embedding is the mean.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..files import read_json
from ..model_format import ModelDir
from ..models.bert import Bert, BertConfig
from ..tokenizers import Tokenizer
from .hf_files import (activation_from_hf, activation_to_hf, check_model_type, encoder_pairs, load_weights, module_map,
                       output_is_tied, refuse_missing_fields, tensor_taker, tensors_by_map, weights_by_map)

_HEADS = {"BertModel": "none", "BertForMaskedLM": "mlm", "BertForPreTraining": "mlm",
          "BertForSequenceClassification": "classify", "BertForTokenClassification": "tokens"}

_LAYER_MAP = [  # (ours, theirs) per layer
    ("self_attention.out_proj", "attention.output.dense"),
    ("self_attention_norm", "attention.output.LayerNorm"),
    ("feed_forward.linear1", "intermediate.dense"),
    ("feed_forward.linear2", "output.dense"),
    ("feed_forward_norm", "output.LayerNorm"),
]


def config_from_hf_bert(hf: dict, weights: dict[str, Tensor] | None = None) -> BertConfig:
    """A :class:`BertConfig` from the fields of a Hugging Face ``BertConfig`` (a dict)."""
    check_model_type(hf, "bert", "BERT")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"position_embedding_type={hf['position_embedding_type']!r} is not supported (absolute only)")
    for name in ("is_decoder", "add_cross_attention"):
        if hf.get(name):
            raise ConfigError(f"{name}=true is not supported: glassformer's BERT is a bidirectional encoder "
                              "without cross-attention")
    architecture = (hf.get("architectures") or ["BertModel"])[0]
    head = _HEADS.get(architecture)
    if head is None:
        raise ConfigError(f"architecture {architecture!r} is not supported; known: {sorted(_HEADS)}")
    labels = None
    regression = multi_label = False
    if head in ("classify", "tokens"):
        id2label = hf.get("id2label") or {}
        n = hf.get("num_labels") or len(id2label) or 2
        problem = hf.get("problem_type") if head == "classify" else None
        if problem == "regression" and n != 1:
            raise ConfigError(f"problem_type='regression' with num_labels={n} (several numbers per sequence) is "
                              "not supported; a regression head has num_labels=1")
        regression = problem == "regression" or (problem is None and head == "classify" and n == 1)
        multi_label = problem == "multi_label_classification"
        labels = None if regression else [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]
    has_pooler = weights is None or any(k.endswith("pooler.dense.weight") for k in weights)
    tied = output_is_tied(hf, weights, "cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight")
    with refuse_missing_fields("the BERT config"):
        return BertConfig(
            vocab_size=hf["vocab_size"], n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"],
            d_model=hf["hidden_size"], d_ff=hf["intermediate_size"], max_len=hf.get("max_position_embeddings", 512),
            segments=hf.get("type_vocab_size", 2), dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
            norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            activation=activation_from_hf(hf.get("hidden_act", "gelu"), "hidden_act"),
            pad_id=hf.get("pad_token_id", 0) or 0, pooler=has_pooler, head=head, labels=labels, regression=regression,
            multi_label=multi_label, tie_embeddings=tied,
        )


def _key_map(c: BertConfig, prefix: str = "") -> dict[str, list[str]]:
    """Our parameter names -> the checkpoint's (the encoder's under ``prefix``); the MLM head's bias
    and untied decoder are mapped apart."""
    embeddings = {"token": "word_embeddings", "position": "position_embeddings", "segment": "token_type_embeddings"}
    key_map = {f"embed.{mine}.weight": [f"{prefix}embeddings.{theirs}.weight"] for mine, theirs in embeddings.items()}
    pairs = [("embed.norm", f"{prefix}embeddings.LayerNorm")]
    pairs += encoder_pairs(c.n_layers, f"{prefix}encoder.layer", "attention.self", _LAYER_MAP)
    if c.pooler:
        pairs.append(("pooler", f"{prefix}pooler.dense"))
    if c.head == "mlm":
        pairs += [("mlm.dense", "cls.predictions.transform.dense"), ("mlm.norm", "cls.predictions.transform.LayerNorm")]
    elif c.head in ("classify", "tokens"):
        pairs.append(("classifier", "classifier"))
    return {**key_map, **module_map(pairs)}


def state_dict_from_hf_bert(weights: dict[str, Tensor], config: BertConfig) -> dict[str, Tensor]:
    """Rename (and fuse) Hugging Face BERT tensors into a state dict of :class:`Bert`."""
    take = tensor_taker(weights, "BERT", "bert.")
    ours = tensors_by_map(take, _key_map(config))
    if config.head == "mlm":
        # transformers adds the decoder's own bias where the file has one (tied or not; older files share it)
        own_bias = "cls.predictions.decoder.bias" in weights
        ours["mlm.bias"] = take("cls.predictions.decoder.bias" if own_bias else "cls.predictions.bias")
        if not config.tie_embeddings:
            ours["mlm.decoder.weight"] = take("cls.predictions.decoder.weight")
    return ours


def to_hf_bert(model: Bert) -> tuple[dict, dict[str, Tensor]]:
    """(Hugging Face config dict, weights) of ``model``: the inverse of :func:`state_dict_from_hf_bert`."""
    c = model.config
    architecture = {v: k for k, v in _HEADS.items() if k != "BertForPreTraining"}[c.head]
    config = {"architectures": [architecture], "model_type": "bert", "vocab_size": c.vocab_size,
              "hidden_size": c.d_model, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
              "intermediate_size": c.d_ff, "max_position_embeddings": c.max_len, "type_vocab_size": c.segments,
              "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.attention_dropout,
              "layer_norm_eps": c.norm_eps, "hidden_act": activation_to_hf(c.activation), "pad_token_id": c.pad_id,
              "position_embedding_type": "absolute", "tie_word_embeddings": c.tie_embeddings}
    if c.head in ("classify", "tokens"):
        names = c.labels or ["LABEL_0"]
        config.update(num_labels=c.n_outputs, id2label={str(i): n for i, n in enumerate(names)},
                      label2id={n: i for i, n in enumerate(names)})
        if c.regression:
            config["problem_type"] = "regression"
        elif c.multi_label:
            config["problem_type"] = "multi_label_classification"
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = weights_by_map(ours, _key_map(c, "" if c.head == "none" else "bert."))
    if c.head == "mlm":
        out["cls.predictions.bias"] = ours["mlm.bias"]
        if not c.tie_embeddings:
            out["cls.predictions.decoder.weight"] = ours["mlm.decoder.weight"]
            out["cls.predictions.decoder.bias"] = ours["mlm.bias"].clone()     # its own tensor in the file
    return config, out


def hf_bert_tokenizer(path: str | Path) -> Tokenizer:
    """The checkpoint's tokenizer: its ``tokenizer.json``, or WordPiece from ``vocab.txt`` with the
    casing of ``tokenizer_config.json``."""
    path = Path(path)
    if (path / "tokenizer.json").is_file():
        return Tokenizer.load(path / "tokenizer.json")
    if (path / "vocab.txt").is_file():
        settings = {}
        if (path / "tokenizer_config.json").is_file():
            settings = read_json(path / "tokenizer_config.json", what="tokenizer config", error=CheckpointError)
        return Tokenizer.from_wordpiece_vocab(path / "vocab.txt", lowercase=bool(settings.get("do_lower_case", True)),
                                              strip_accents=settings.get("strip_accents"))
    raise CheckpointError(f"{path} has neither tokenizer.json nor vocab.txt; a BERT directory needs its tokenizer")


def load_hf_bert(path: str | Path, dtype: torch.dtype = torch.float32) -> ModelDir:
    """A :class:`Bert` with the weights of a Hugging Face BERT directory, and its tokenizer (None if the
    directory has neither tokenizer.json nor vocab.txt)."""
    model = load_weights(path, "BERT", Bert, config_from_hf_bert, state_dict_from_hf_bert, dtype)
    has_tokenizer = (Path(path) / "tokenizer.json").is_file() or (Path(path) / "vocab.txt").is_file()
    return ModelDir(model, model.config, hf_bert_tokenizer(path) if has_tokenizer else None)


__all__ = ["config_from_hf_bert", "state_dict_from_hf_bert", "to_hf_bert", "hf_bert_tokenizer", "load_hf_bert"]
