"""Classify texts (or text pairs) with a fine-tuned BERT (``finetune classify``): a label and its
probability per text, the ``top_k`` labels, or a number for a regression model."""

from __future__ import annotations

import warnings
from typing import NamedTuple, Sequence

import torch

from ..data.classify import ClassifyData, Example, encode_examples
from ..errors import CheckpointError
from ..model_dir import ModelDir
from ..models import Bert
from ..tokenizers import Tokenizer


class Prediction(NamedTuple):
    label: str | None                    # the most likely class (None for regression)
    probability: float | None            # its probability
    top: list[tuple[str, float]]         # the ``top_k`` most likely classes with their probabilities
    value: float | None = None           # the predicted number (regression)


def check_classifier(model, where="the model") -> None:
    config = model.config
    if getattr(config, "family", None) != "bert" or config.head != "classify":
        head = f"head {config.head!r}" if getattr(config, "family", None) == "bert" else f"a {config.family!r} model"
        raise CheckpointError(f"{where} has no classification head ({head}); fine-tune one with "
                              "'glassformer finetune classify --model MODEL_DIR ...'")


def check_text_classifier(loaded: ModelDir, where) -> None:
    """Refuse, naming ``where``, a directory without a classification head or the tokenizer to read texts."""
    check_classifier(loaded.model, where)
    if loaded.tokenizer is None:
        raise CheckpointError(f"{where} has no tokenizer.json; classify needs one to read texts")


@torch.no_grad()
def predict(model: Bert, data: ClassifyData, batch_size: int = 64, device="cpu") -> torch.Tensor:
    """The model's outputs for every example, in order: logits (n, labels), or numbers (n,) for regression."""
    outputs: list[torch.Tensor | None] = [None] * len(data)
    for indices, batch in data.batches_in_order(batch_size):
        batch = batch.to(device)
        out = model(batch.tokens, batch.segments, batch.mask).float().cpu()
        for i, row in zip(indices, out):
            outputs[i] = row
    return torch.stack(outputs)


def classify_texts(model: Bert, tokenizer: Tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                   top_k: int = 1, batch_size: int = 64, device="cpu", max_len: int | None = None,
                   truncate: bool = True) -> tuple[list[Prediction], int]:
    """Classify ``texts`` (with ``pairs``, for a pair task): (a prediction per text, how many were cut)."""
    check_classifier(model)
    config = model.config
    rows = [Example(t, 0.0, None if pairs is None else p, f"text {i + 1}")
            for i, (t, p) in enumerate(zip(texts, pairs if pairs is not None else texts))]
    data, n_cut = encode_examples(rows, tokenizer, None, max_len or config.max_len, truncate=truncate)
    outputs = predict(model.eval(), data, batch_size, device)
    if config.regression:
        return [Prediction(None, None, [], float(v)) for v in outputs], n_cut
    probs = outputs.sigmoid() if config.multi_label else outputs.softmax(-1)     # multi-label: a yes/no per label
    k = min(top_k, len(config.labels))
    best_p, best_i = probs.topk(k, dim=-1)
    predictions = []
    for ps, ids in zip(best_p.tolist(), best_i.tolist()):
        top = [(config.labels[i], p) for p, i in zip(ps, ids)]
        predictions.append(Prediction(top[0][0], top[0][1], top))
    return predictions, n_cut


def classify(loaded: ModelDir, texts: Sequence[str], pairs: Sequence[str] | None = None, *, top_k: int = 1,
             batch_size: int = 64, device="cpu", truncate: bool = True) -> list[Prediction]:
    """:func:`classify_texts` with a loaded directory's classifier, texts cut (with a warning saying how
    many) at the length it was fine-tuned on."""
    config = loaded.config
    max_len = min(int(loaded.generation.get("max_len") or config.max_len), config.max_len)
    predictions, n_cut = classify_texts(loaded.model, loaded.tokenizer, texts, pairs, top_k=top_k,
                                        batch_size=batch_size, device=device, max_len=max_len, truncate=truncate)
    if n_cut:
        warnings.warn(f"{n_cut} of {len(texts)} texts are longer than {max_len} tokens (what the model was "
                      "trained on) and were cut", stacklevel=2)
    return predictions
