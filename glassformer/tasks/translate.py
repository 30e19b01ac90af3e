"""Translate: sentences through an encoder–decoder (``train translation``, or a Hugging Face Marian / T5
directory).  The decoding and scoring are ``glassformer.generation.translation``."""

from __future__ import annotations

from ..errors import CheckpointError, ConfigError
from ..generation.translation import score, translate, translate_nbest
from ..model_dir import ModelDir
from ..models import TRANSLATORS
from .decoding import decoding_defaults


def check_translator(loaded: ModelDir, where) -> None:
    """Refuse, naming ``where``, a directory that holds no encoder–decoder with its tokenizer."""
    if loaded.config.family not in TRANSLATORS:
        raise CheckpointError(f"{where} holds a {loaded.config.family!r} model; translation needs an "
                              f"encoder-decoder ({' or '.join(map(repr, TRANSLATORS))}) model directory")
    if loaded.tokenizer is None:
        raise CheckpointError(f"{where} has no tokenizer.json; a translation model directory needs one")


def translate_options(generation: dict | None = None, *, n_best: int = 1, mbr: bool = False, mbr_candidates=None,
                      mbr_utility=None, seed=None, **given) -> dict:
    """The ``decode`` options of translate/evaluate: each option in ``given`` (see :func:`decoding_defaults`),
    else the model directory's ``generation`` settings, else ours; MBR settings without ``mbr`` are refused."""
    mbr_given = [flag for flag, value in (("--mbr-candidates", mbr_candidates), ("--mbr-utility", mbr_utility))
                 if value is not None]
    if mbr_given and not mbr:
        verb = "apply" if len(mbr_given) > 1 else "applies"
        raise ConfigError(f"{' and '.join(mbr_given)} {verb} only with --mbr; add --mbr or leave "
                          f"{'them' if len(mbr_given) > 1 else 'it'} out")
    settings = decoding_defaults(given, generation or {})
    opts = {"n_best": n_best, "mbr": mbr,
            **{k: settings[k] for k in ("beam", "alpha", "length_penalty_kind", "stopping", "temperature", "top_k",
                                        "top_p")},
            # transformers' min_length counts the decoder's start token
            "min_new_tokens": settings["min_new_tokens"] or max(0, settings["min_length"] - 1),
            **{k: settings[k] for k in ("repetition_penalty", "no_repeat_ngram_size", "banned_ids")}}
    for name, value in (("mbr_candidates", mbr_candidates), ("mbr_utility", mbr_utility), ("seed", seed)):
        if value is not None:
            opts[name] = value
    return opts


__all__ = ["check_translator", "translate_options", "translate", "translate_nbest", "score"]
