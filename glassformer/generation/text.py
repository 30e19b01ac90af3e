"""Text in, text out for decoder-only language models: prompts, batched completions, streaming.

The CLI's ``generate`` is argument parsing over these::

    ids = prompt_ids(tokenizer, "ROMEO:", context=model.max_positions, max_new_tokens=100)
    for piece in stream_completion(model, tokenizer, ids, options, stop="\\n\\n"):
        print(piece, end="", flush=True)
    complete_batch(model, tokenizer, [ids_a, ids_b], options)     # -> [text_a, text_b]

Sampled with a seed, a prompt's completion depends on the seed, the prompt and its random stream
(``streams``: its place in the whole input, 0 for the first) — not on the prompts decoded with it:
:func:`stream_completion` of a prompt is :func:`complete_batch`'s completion of it as stream 0.

Streaming prints text as soon as it is final: a character that byte-level BPE
splits over several tokens, or the beginning of a stop string, is held back
until the next token decides it.

Where the host waits for the device: :func:`stream_completion` reads every token
back as it comes (it has to, to print it); :func:`complete_batch` reads the tokens
back in chunks of ``check_every`` steps on a GPU (to see EOS and stop strings), not
token by token; :func:`beam_complete` as beam search does.  ``compile=True`` decodes
through the model's compiled step (``torch.compile``; CUDA graphs on a GPU), see
:mod:`glassformer.models.decoding`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator, Sequence

import torch

from ..errors import ConfigError, InputError
from .decode import decode, ensure_compiled
from .sampling import SamplingOptions, default_check_every, generate_stream


def prompt_ids(tokenizer, text: str, context: int, max_new_tokens: int, truncate_left: bool = False) -> list[int]:
    """Token ids of a prompt (framed as a checkpoint's own tokenizer frames it: its BOS where its
    post-processor adds one), checked against the context.  An empty prompt starts from the
    beginning-of-text token a checkpoint's tokenizer adds, else the end-of-text token, which
    separates documents in the training data."""
    if max_new_tokens >= context:
        raise ConfigError(f"max_new_tokens={max_new_tokens} (--max-new-tokens) leaves no room for a prompt in the model's context "
                          f"of {context} tokens; use at most {context - 1}")
    if not text:
        return tokenizer.encode_prompt("") or [tokenizer.eos_id]
    tokenizer.check_known(text, "prompt")
    ids = tokenizer.encode_prompt(text)
    room = context - max_new_tokens
    if len(ids) > room:
        if not truncate_left:
            raise InputError(f"the prompt has {len(ids)} tokens; with {max_new_tokens} new tokens at most {room} fit "
                             f"in the model's context of {context}; shorten it, lower --max-new-tokens or pass "
                             "--truncate-left")
        ids = ids[-room:]
    return ids


def never_generated(tokenizer) -> tuple[int, ...]:
    """Tokens a continuation never contains: padding, the start-of-sequence token and ``<unk>``
    (the end-of-text tokens stay: they end the continuation).  A checkpoint's own tokenizer bans
    nothing: transformers' generate may emit any token (a stand-in padding id is never emitted, it
    is the end-of-text token)."""
    if tokenizer.frames_prompts:
        return ()
    return tuple(sorted({tokenizer.pad_id, tokenizer.bos_id, tokenizer.unk_id} - {*tokenizer.eos_ids, None}))


def text_options(tokenizer, options: SamplingOptions) -> SamplingOptions:
    """``options`` with the tokenizer's end-of-text, padding and never-generated tokens filled in."""
    banned = tuple(sorted(set(options.banned_ids) | set(never_generated(tokenizer))))
    return replace(options, eos_id=tokenizer.eos_id, eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id,
                   banned_ids=banned)


def held_back(text: str, stop: str | None) -> int:
    """How many final characters of streamed text to hold back: a half-decoded character
    (byte-level BPE splits some characters over tokens) or the start of the stop string."""
    if text.endswith("\ufffd"):
        return 1
    if stop:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if stop.startswith(text[-n:]):
                return n
    return 0


def cut_at_stop(text: str, stop: str | None) -> str:
    """``text`` up to (not including) the first ``stop``."""
    return text[: text.index(stop)] if stop and stop in text else text


def stream_completion(model, tokenizer, ids: Sequence[int], options: SamplingOptions,
                      stop: str | None = None, *, compile: bool = False) -> Iterator[str]:
    """Pieces of the completion of one prompt, each final when yielded; ends at EOS, at
    ``stop`` (not included) or after ``options.max_new_tokens``."""
    options = text_options(tokenizer, options)
    if compile:
        ensure_compiled(model)
    cache, first = model.start_decoding([list(ids)], options.max_new_tokens, tokenizer.pad_id)
    generated: list[int] = []
    written = 0                                  # characters of the completion already yielded
    for token in generate_stream(model, cache, first, options):
        tok = int(token[0])
        if tok in tokenizer.eos_ids:
            break
        generated.append(tok)
        text = tokenizer.decode(generated)
        if stop and stop in text:
            yield text[written: text.index(stop)]
            return
        safe = len(text) - held_back(text, stop)
        if safe > written:
            yield text[written:safe]
            written = safe
    rest = tokenizer.decode(generated)[written:]
    if rest:
        yield rest


def complete_batch(model, tokenizer, ids: Sequence[Sequence[int]], options: SamplingOptions,
                   stop: str | None = None, *, compile: bool = False, check_every: int | None = None,
                   streams: Sequence[int] | None = None) -> list[str]:
    """Completions of prompts decoded together (left-padded); each equals what the prompt gives alone
    (sampled: what it gives alone as the same random stream; ``streams``, default 0, 1, ...).

    The tokens are read back every ``check_every`` steps (default: ``sampling.default_check_every``,
    every 16 on a GPU), not every token: often enough to stop soon after every row has ended (EOS
    or ``stop``), rarely enough not to stall the device."""
    options = text_options(tokenizer, options)
    if compile:
        ensure_compiled(model)
    cache, first = model.start_decoding([list(i) for i in ids], options.max_new_tokens, tokenizer.pad_id)
    if check_every is None:
        check_every = default_check_every(first.device)
    rows: list[list[int]] = [[] for _ in ids]
    done = [False] * len(ids)
    pending: list = []                           # (batch,) device tensors not read back yet

    def read_back() -> None:
        for r, chunk in enumerate(torch.stack(pending, dim=1).tolist()):
            for t in chunk:
                if done[r]:
                    break
                if t in tokenizer.eos_ids:
                    done[r] = True
                    break
                rows[r].append(t)
                if stop and stop in tokenizer.decode(rows[r][-len(stop) * 4:]):
                    done[r] = True
        pending.clear()

    for token in generate_stream(model, cache, first, options, check_every=check_every, streams=streams):
        pending.append(token)
        if len(pending) == check_every:
            read_back()
            if all(done):
                break
    if pending:
        read_back()
    return [cut_at_stop(tokenizer.decode(r), stop) for r in rows]


def beam_complete(model, tokenizer, ids: Sequence[Sequence[int]], options: SamplingOptions, *, beam: int,
                  alpha: float = 0.6, length_penalty_kind: str = "gnmt", stopping: str = "exact",
                  n_best: int = 1, stop: str | None = None,
                  compile: bool = False) -> list[list[tuple[str, float]]]:
    """Beam-search continuations of prompts decoded together: for each, up to ``n_best``
    (text, score) pairs, best first (score = log P / length penalty; see ``generation.beam``
    for ``length_penalty_kind`` and ``stopping``).
    With ``compile`` the batch keeps its shape as prompts finish (``beam_search(static_batch=...)``)."""
    options = text_options(tokenizer, options)
    if compile:
        ensure_compiled(model)
    cache, first = model.start_decoding([list(i) for i in ids], options.max_new_tokens, tokenizer.pad_id)
    out = decode(model, cache, first, options, beam=beam, alpha=alpha, length_penalty_kind=length_penalty_kind,
                 stopping=stopping, n_best=n_best)
    return [[(cut_at_stop(tokenizer.decode(h), stop), score) for h, score in zip(hyps, scores)]
            for hyps, scores in zip(out.tokens, out.scores)]


__all__ = ["prompt_ids", "beam_complete", "stream_completion", "complete_batch", "held_back", "cut_at_stop", "never_generated",
           "text_options"]
