"""Translating and scoring with an encoder–decoder model directory's parts (model + tokenizers).

Used by ``glassformer translate`` / ``evaluate`` / ``quickstart`` and from Python::

    from glassformer.model_dir import load_model_dir
    from glassformer.generation.translation import translate
    loaded = load_model_dir("runs/quickstart/best")
    translate(loaded.model, loaded.src_tokenizer, loaded.tokenizer, ["vierunddreißig"], decode_options={"beam": 4})

Sentences are sorted by length and decoded in batches; each batch is one call of
:func:`~glassformer.generation.decode`, which reads its tokens back once at the end
(beam search also reads back a few flags per step).  For speed on a GPU, load the
model in bf16 (``load_model_dir(..., dtype=torch.bfloat16)``) and pass
``compile=True``: the decoding step then runs as one compiled graph (CUDA graphs)
per batch shape, beam search keeping its batch static (see ``generation.beam``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..data.batching import pad
from ..errors import InputError
from ..tokenizers import Tokenizer
from .decode import decode, ensure_compiled, length_limits
from .sampling import SamplingOptions


def encode_sources(texts: Sequence[str], src_tok: Tokenizer, max_len: int, eos_id: int) -> list[list[int]]:
    """Token ids (+EOS) per source line — framed by the post-processor of a checkpoint's own
    tokenizer instead (T5's appends its ``</s>``); an empty line or one longer than the model allows
    is an InputError."""
    if checkpoint_tokenizer(src_tok):
        framed = [src_tok.encode_prompt(text) for text in texts]
    else:
        framed = [ids + [eos_id] for ids in src_tok.encode_batch(list(texts))]
    for i, (text, ids) in enumerate(zip(texts, framed), 1):
        if not text.strip():
            raise InputError(f"input line {i} is empty; give one non-empty sentence per line")
        if len(ids) > max_len:
            raise InputError(f"input line {i} has {len(ids)} tokens but the model takes at most {max_len} "
                             "(max_len); shorten or split it")
    return framed


def checkpoint_tokenizer(tokenizer) -> bool:
    """Whether ``tokenizer`` is a Hugging Face checkpoint's own (``Tokenizer.load_checkpoint``): it
    frames its inputs, and transformers' generate bans none of its tokens."""
    return bool(getattr(tokenizer, "frames_prompts", False))


@torch.no_grad()
def translate_nbest(
    model,
    src_tok: Tokenizer,
    tgt_tok: Tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_len_a: float = 1.0,
    max_len_b: int = 50,
    decode_options: dict[str, Any] | None = None,
    compile: bool = False,
) -> list[list[tuple[str, float]]]:
    """Translate each text; for each, a list of (translation, score), best first.

    Output length is capped at a·|source| + b tokens (the paper: |source| + 50).
    ``decode_options``: beam, alpha, n_best, mbr, mbr_candidates, mbr_utility,
    temperature, top_k, top_p, seed (see :func:`glassformer.generation.decode`).  Sampled with a seed,
    text i draws from random stream i (its place in ``texts``): the batch size and the sort by length
    do not change what it gets.
    ``compile``: decode through the model's compiled step (:func:`~.decode.ensure_compiled`).
    """
    model.eval()
    if compile:
        ensure_compiled(model)
    device = next(model.parameters()).device
    config = model.config
    options = dict(decode_options or {})
    if options.get("mbr"):
        options.setdefault("detokenize", tgt_tok.decode)
    sources = encode_sources(texts, src_tok, config.max_len, config.eos_id)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs: list[list[tuple[str, float]]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        src = pad([sources[i] for i in idx], config.pad_id).to(device)
        limits = length_limits(src, config.pad_id, max_len_a, max_len_b, cap=config.max_len - 1)
        cache, first = model.start_decoding(src, int(limits.max()))
        sampling = sampling_options(int(limits.max()), config, options, eos_ids=getattr(tgt_tok, "eos_ids", ()),
                                    banned=() if checkpoint_tokenizer(tgt_tok) else None)
        decoded = decode(model, cache, first, sampling, max_lengths=limits,
                         streams=idx, **{k: v for k, v in options.items() if k not in (*SAMPLING_KEYS, "banned_ids")})
        scores = decoded.scores or [[math.nan] * len(row) for row in decoded.tokens]
        for i, row, row_scores in zip(idx, decoded.tokens, scores):
            outputs[i] = [(tgt_tok.decode(h), s) for h, s in zip(row, row_scores)]
    return outputs


SAMPLING_KEYS = ("temperature", "top_k", "top_p", "seed", "repetition_penalty", "min_new_tokens", "no_repeat_ngram_size")


def never_generated(config) -> tuple[int, ...]:
    """Target tokens a translation never contains: padding, the start token(s) and ``<unk>``."""
    return tuple(sorted({config.pad_id, config.bos_id, config.start_id, config.unk_id} - {config.eos_id}))


def sampling_options(max_new_tokens: int, config, options: dict[str, Any], *, eos_ids: Sequence[int] = (),
                     banned: tuple[int, ...] | None = None) -> SamplingOptions:
    """``banned``: the tokens never generated (default: :func:`never_generated`), with the options'
    ``banned_ids``; ``eos_ids``: further tokens that end a translation (a checkpoint's generation
    config may list several)."""
    banned = never_generated(config) if banned is None else tuple(banned)
    banned = tuple(sorted(set(banned) | set(options.get("banned_ids") or ())))
    rules = {k: v for k, v in options.items() if k in SAMPLING_KEYS and v is not None}
    return SamplingOptions(max_new_tokens=max_new_tokens, eos_id=config.eos_id, eos_ids=tuple(eos_ids),
                           pad_id=config.pad_id, banned_ids=banned, **rules)


def translate(model, src_tok: Tokenizer, tgt_tok: Tokenizer, texts: Sequence[str], **kwargs) -> list[str]:
    """The best translation of each text (see :func:`translate_nbest` for the options)."""
    return [hyps[0][0] for hyps in translate_nbest(model, src_tok, tgt_tok, texts, **kwargs)]


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus sacreBLEU, chrF and exact match (%) of hypotheses against one reference each."""
    if len(hypotheses) != len(references):
        raise InputError(f"{len(hypotheses)} hypotheses but {len(references)} references; they must align")
    import sacrebleu                 # here: a tenth of a second to import, needed only to score

    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)])
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    exact = 100.0 * sum(h.strip() == r.strip() for h, r in zip(hypotheses, references)) / max(1, len(references))
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "exact_match": round(exact, 2),
            "sentences": len(references)}
