"""Decoding settings: what the model directory says (its generation.json, or what a Hugging Face
directory's generation config maps to), unless an option overrides it; used by generate and translate."""

from __future__ import annotations

from ..errors import ConfigError

_HF_STOPPING = {True: "first", False: "heuristic", "never": "exact"}   # transformers' early_stopping

# The options a command may give (None or absent: left out), the keys of ``decoding_defaults``' ``given``.
DECODING_OPTIONS = ("temperature", "top_k", "top_p", "beam", "alpha", "repetition_penalty", "no_repeat_ngram_size",
                    "min_new_tokens")

# Settings of a Hugging Face generation config that select a search glassformer does not run, with the
# values that leave it off (a directory asking for one is refused rather than decoded another way).
_HF_UNRUN = {"num_beam_groups": (None, 1), "diversity_penalty": (None, 0, 0.0), "penalty_alpha": (None, 0, 0.0)}


def decoding_defaults(given: dict, generation: dict, *, temperature: float = 0.0) -> dict:
    """The decoding settings of ``generate``/``translate``: each option given (``given``: name -> value
    of :data:`DECODING_OPTIONS`, None or absent when left out), else what the model directory says
    (``generation``: its generation.json, or what a Hugging Face directory's generation config maps
    to), else ours (``temperature``, one beam, GNMT α 0.6).

    A given sampling option or ``--beam`` sets the strategy: the directory's sampling settings
    apply only when it samples (or decodes greedily), its beam search only when none is given.
    A Hugging Face ``num_beams`` > 1 is a beam search as transformers runs it: α = its ``length_penalty``
    (default 1) on |Y| ** α (``length_penalty_kind="hf"``) and its ``early_stopping``; ``--alpha``
    (a GNMT α) replaces that penalty.  ``eos_ids``: the end ids its ``eos_token_id`` lists (an int or
    a list; the generation config's, else config.json's, as transformers reads them)."""
    hf = generation.get("hugging_face") or {}
    hf_generation, hf_config = hf.get("generation_config") or {}, hf.get("config") or {}
    eos = hf_generation.get("eos_token_id", hf_config.get("eos_token_id"))
    beam, alpha = given.get("beam"), given.get("alpha")
    sampling_given = any(given.get(k) is not None for k in ("temperature", "top_k", "top_p"))
    unrun = [f"{k}={hf_generation[k]!r}" for k in _HF_UNRUN if hf_generation.get(k) not in _HF_UNRUN[k]]
    if unrun and beam is None and not sampling_given:
        raise ConfigError(f"the model directory asks for a search glassformer does not run ({', '.join(unrun)}: "
                          "group beam search or contrastive search); give --beam N to search or --temperature T to "
                          "sample our way")
    beams = hf_generation.get("num_beams") or 1
    if beam is None and not sampling_given and beams > 1 and hf_generation.get("do_sample"):
        raise ConfigError(f"the model directory asks for beam sampling (do_sample with num_beams={beams}), which "
                          "glassformer does not run; give --beam N to search or --temperature T to sample")
    from_directory = beam is None and not sampling_given and beams > 1
    settings = {"beam": beam or (beams if from_directory else 1), "alpha": alpha,
                "length_penalty_kind": "gnmt", "stopping": "exact",
                "eos_ids": tuple(eos if isinstance(eos, list) else [] if eos is None else [eos])}
    if from_directory:
        early_stopping = hf_generation.get("early_stopping", False)
        if early_stopping not in _HF_STOPPING:
            raise ConfigError(f"the model directory's early_stopping={early_stopping!r} is not one of transformers' "
                              "(true, false, \"never\"); give --beam N to search our way")
        settings["stopping"] = _HF_STOPPING[early_stopping]
        if alpha is None:
            settings.update(alpha=hf_generation.get("length_penalty", 1.0), length_penalty_kind="hf")
    if settings["alpha"] is None:
        settings["alpha"] = 0.6
    use_directory = given.get("temperature") is None and settings["beam"] == 1   # a search samples nothing
    for name, ours in (("temperature", temperature), ("top_k", None), ("top_p", None)):
        value = given.get(name)
        settings[name] = value if value is not None else generation.get(name, ours) if use_directory else ours
    return {**settings, **_shared_rules(given, generation, hf_generation)}


def _shared_rules(given: dict, generation: dict, hf_generation: dict) -> dict:
    """What every decoding method applies, given or from the directory: the repetition penalty,
    the n-gram ban, the minimum length and the banned tokens (a Hugging Face ``bad_words_ids`` of
    single tokens).  transformers' ``min_length`` counts the tokens before the new ones (the prompt,
    or the decoder's start token), so it is returned as is (``min_length``) beside ``min_new_tokens``
    for the command to subtract what comes first; a bad word of several tokens is refused."""
    def pick(key: str, default):
        if given.get(key) is not None:
            return given[key]
        value = hf_generation.get(key, generation.get(key))
        return default if value is None else value

    bad = hf_generation.get("bad_words_ids") or []
    if any(not isinstance(w, list) or len(w) != 1 or not isinstance(w[0], int) for w in bad):
        raise ConfigError("the model directory's generation config bans sequences of several tokens (bad_words_ids "
                          f"{bad!r}), which glassformer does not do; remove them from generation_config.json or "
                          "keep single-token entries")
    rules = {"repetition_penalty": pick("repetition_penalty", 1.0),
             "no_repeat_ngram_size": pick("no_repeat_ngram_size", 0),
             "min_new_tokens": pick("min_new_tokens", 0), "min_length": 0,
             "banned_ids": tuple(w[0] for w in bad)}
    if given.get("min_new_tokens") is None:
        rules["min_length"] = hf_generation.get("min_length") or 0
    return rules

