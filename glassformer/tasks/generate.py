"""Generate: continue prompts with a GPT-style decoder (``train lm``, or a Hugging Face GPT-2 / Llama
directory).  The decoding itself — streamed, batched or beam search — is ``glassformer.generation.text``."""

from __future__ import annotations

from typing import NamedTuple

from ..errors import CheckpointError
from ..generation import SamplingOptions
from ..generation.text import beam_complete, complete_batch, prompt_ids, stream_completion
from ..model_dir import ModelDir
from .decoding import decoding_defaults


def check_generator(loaded: ModelDir, where) -> None:
    """Refuse, naming ``where``, a directory that holds no GPT with the tokenizer to read prompts."""
    if loaded.config.family != "gpt":
        raise CheckpointError(f"{where} holds a {loaded.config.family!r} model; generate needs a GPT "
                              "('gpt') model directory")
    if loaded.tokenizer is None:
        raise CheckpointError(f"{where} has no tokenizer.json; generate needs one to read prompts")


class GenerationPlan(NamedTuple):
    """What ``generate`` decodes: each prompt's ids, the sampling options, and the keywords of
    :func:`beam_complete` (``search``; None when it samples or decodes greedily)."""
    ids: list[list[int]]
    options: SamplingOptions
    search: dict | None


def generation_plan(loaded: ModelDir, prompts: list[str], *, max_new_tokens: int | None = None,
                    truncate_left: bool = False, n_best: int = 1, seed: int | None = 0, **given) -> GenerationPlan:
    """The prompts' ids and the decoding settings of ``generate``: each option in ``given`` (see
    :func:`decoding_defaults`), else the model directory's, else ours (temperature 1; 200 new tokens,
    at most half the context).  A tokenizer that knows one end id also ends texts at the others the
    directory lists (``eos_ids``)."""
    settings = decoding_defaults(given, loaded.generation, temperature=1.0)
    search = settings["beam"] != 1 or n_best != 1
    if search:                  # no sampling defaults (explicit ones are refused)
        settings.update(temperature=given.get("temperature") or 0.0, top_k=given.get("top_k"), top_p=given.get("top_p"))
    tokenizer, context = loaded.tokenizer, loaded.config.max_len
    if len(tokenizer.eos_ids) < 2 and len(settings["eos_ids"]) > 1:      # e.g. ours of a converted Llama 3
        tokenizer.eos_ids = tuple(dict.fromkeys([*tokenizer.eos_ids, *settings["eos_ids"]]))
    if max_new_tokens is None:
        max_new_tokens = min(200, context // 2)
    ids = [prompt_ids(tokenizer, p, context, max_new_tokens, truncate_left) for p in prompts]
    # transformers' min_length counts the prompt: of a batch, the longest (it left-pads them to one width)
    min_new = settings["min_new_tokens"] or max(0, settings["min_length"] - max(map(len, ids)))
    options = SamplingOptions(max_new_tokens=max_new_tokens, min_new_tokens=min_new, eos_id=tokenizer.eos_id,
                              pad_id=tokenizer.pad_id, seed=seed,
                              **{k: settings[k] for k in ("temperature", "top_k", "top_p", "repetition_penalty",
                                                          "no_repeat_ngram_size", "banned_ids")})
    beam = {k: settings[k] for k in ("beam", "alpha", "length_penalty_kind", "stopping")}
    return GenerationPlan(ids, options, beam if search else None)


__all__ = ["check_generator", "generation_plan", "GenerationPlan", "prompt_ids", "stream_completion",
           "complete_batch", "beam_complete"]
