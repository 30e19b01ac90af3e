"""Fill-mask: the most likely words for each [MASK] of a text, with a BERT that has a masked-LM head
(one trained by ``train mlm``, or a Hugging Face ``BertForMaskedLM`` directory)."""

from __future__ import annotations

import warnings

import torch

from ..errors import CheckpointError, InputError
from ..model_dir import ModelDir


def check_masked_lm(loaded: ModelDir, where) -> None:
    """Refuse, naming ``where``, a directory that holds no BERT with a masked-LM head and a [MASK] token."""
    if loaded.config.family != "bert":
        raise CheckpointError(f"{where} holds a {loaded.config.family!r} model; fill-mask needs a BERT "
                              "with a masked-LM head")
    if loaded.config.head != "mlm":
        raise CheckpointError(f"{where} has no masked-LM head; fill-mask needs a model trained with "
                              "train mlm or a BertForMaskedLM checkpoint")
    if loaded.tokenizer is None or loaded.tokenizer.mask_id is None:
        raise CheckpointError(f"{where} has no tokenizer with a [MASK] token; fill-mask needs one")


def mask_ids(tokenizer, text: str, max_len: int, truncate: bool) -> tuple[list[int], list[int]]:
    """``[CLS] text [SEP]`` ids with the mask token's id wherever ``text`` says [MASK], and the
    positions of the masks.  The text is split at each [MASK] and the pieces encoded alone, so the
    mask is found whether or not the tokenizer treats it as a special token.  A text cut to
    ``max_len`` (``truncate``) says so as a warning."""
    mask = tokenizer.id_to_token(tokenizer.mask_id)
    pieces = text.split(mask)
    if len(pieces) == 1:
        raise InputError(f"the text has no {mask}; write {mask} where a word should be filled in, "
                         f"e.g. \"The capital of France is {mask}.\"")
    ids = [tokenizer.bos_id]
    for i, encoded in enumerate(tokenizer.encode_batch(pieces)):
        ids += encoded + ([tokenizer.mask_id] if i < len(pieces) - 1 else [])
    ids.append(tokenizer.eos_id)
    if len(ids) > max_len:
        if not truncate:
            raise InputError(f"the text is {len(ids)} tokens ([CLS] and [SEP] included), more than the model's "
                             f"{max_len} positions; shorten it or pass --truncate to cut its end")
        n = len(ids)
        ids = ids[: max_len - 1] + [tokenizer.eos_id]
        if tokenizer.mask_id not in ids:
            raise InputError(f"every {mask} lies beyond the model's {max_len} positions; nothing is left to fill in")
        warnings.warn(f"the text is {n} tokens; cut to the model's {max_len} positions", stacklevel=2)
    return ids, [i for i, t in enumerate(ids) if t == tokenizer.mask_id]


def fill_mask(model, tokenizer, text: str, top_k: int = 5, *, truncate: bool = False, device="cpu") -> dict:
    """The ``top_k`` most likely tokens (with their probabilities) at each [MASK] of ``text``, and the
    text with every [MASK] filled by its most likely token."""
    ids, positions = mask_ids(tokenizer, text, model.config.max_len, truncate)
    with torch.inference_mode():
        tokens = torch.tensor([ids], device=device)
        hidden = model.encode(tokens).hidden[0, positions]                  # (masks, d_model)
        probs = torch.softmax(model.mlm_logits(hidden).float(), dim=-1)     # (masks, vocab)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    filled = list(ids)
    masks = []
    for position, p, i in zip(positions, top.values.tolist(), top.indices.tolist()):
        filled[position] = i[0]
        masks.append({"position": position, "candidates": [
            {"token": tokenizer.id_to_token(idx), "id": idx, "probability": prob} for idx, prob in zip(i, p)]})
    return {"text": text, "filled": tokenizer.decode(filled), "masks": masks}
