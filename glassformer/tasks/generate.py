"""Generate: continue prompts with a GPT-style decoder (``train lm``, or a Hugging Face GPT-2 / Llama
directory).  The decoding itself — streamed, batched or beam search — is ``glassformer.generation.text``."""

from __future__ import annotations

from ..errors import CheckpointError
from ..generation.text import beam_complete, complete_batch, prompt_ids, stream_completion
from ..model_dir import ModelDir


def check_generator(loaded: ModelDir, where) -> None:
    """Refuse, naming ``where``, a directory that holds no GPT with the tokenizer to read prompts."""
    if loaded.config.family != "gpt":
        raise CheckpointError(f"{where} holds a {loaded.config.family!r} model; generate needs a GPT "
                              "('gpt') model directory")
    if loaded.tokenizer is None:
        raise CheckpointError(f"{where} has no tokenizer.json; generate needs one to read prompts")


__all__ = ["check_generator", "prompt_ids", "stream_completion", "complete_batch", "beam_complete"]
