"""Decoding settings: what the model directory says (its generation.json, or what a Hugging Face
directory's generation config maps to), unless an option overrides it; used by generate and translate."""

from __future__ import annotations

from ..errors import ConfigError

_HF_STOPPING = {True: "first", False: "heuristic", "never": "exact"}   # transformers' early_stopping


# Settings of a Hugging Face generation config that select a search glassformer does not run, with the
# values that leave it off (a directory asking for one is refused rather than decoded another way).
_HF_UNRUN = {"num_beam_groups": (None, 1), "diversity_penalty": (None, 0, 0.0), "penalty_alpha": (None, 0, 0.0)}


def decoding_defaults(args, generation: dict, *, temperature: float = 0.0) -> dict:
    """The decoding settings of ``generate``/``translate``: each option given (``args``: the command's
    options, or any object with these attributes; ``args.temperature``, ``top_k``, ``top_p``, ``beam``,
    ``alpha``, and optionally ``repetition_penalty``, ``no_repeat_ngram_size``, ``min_new_tokens``:
    None when left out), else what the model directory says (``generation``: its generation.json, or
    what a Hugging Face directory's generation config maps to), else ours (``temperature``, one beam,
    GNMT α 0.6).

    A given sampling option or ``--beam`` sets the strategy: the directory's sampling settings
    apply only when it samples (or decodes greedily), its beam search only when none is given.
    A Hugging Face ``num_beams`` > 1 is a beam search as transformers runs it: α = its ``length_penalty``
    (default 1) on |Y| ** α (``length_penalty_kind="hf"``) and its ``early_stopping``; ``--alpha``
    (a GNMT α) replaces that penalty.  ``eos_ids``: the end ids its ``eos_token_id`` lists (an int or
    a list; the generation config's, else config.json's, as transformers reads them)."""
    hf = generation.get("hugging_face") or {}
    hf_generation, hf_config = hf.get("generation_config") or {}, hf.get("config") or {}
    eos = hf_generation.get("eos_token_id", hf_config.get("eos_token_id"))
    sampling_given = any(getattr(args, k) is not None for k in ("temperature", "top_k", "top_p"))
    unrun = [f"{k}={hf_generation[k]!r}" for k in _HF_UNRUN if hf_generation.get(k) not in _HF_UNRUN[k]]
    if unrun and args.beam is None and not sampling_given:
        raise ConfigError(f"the model directory asks for a search glassformer does not run ({', '.join(unrun)}: "
                          "group beam search or contrastive search); give --beam N to search or --temperature T to "
                          "sample our way")
    beams = hf_generation.get("num_beams") or 1
    if args.beam is None and not sampling_given and beams > 1 and hf_generation.get("do_sample"):
        raise ConfigError(f"the model directory asks for beam sampling (do_sample with num_beams={beams}), which "
                          "glassformer does not run; give --beam N to search or --temperature T to sample")
    from_directory = args.beam is None and not sampling_given and beams > 1
    settings = {"beam": args.beam or (beams if from_directory else 1), "alpha": args.alpha,
                "length_penalty_kind": "gnmt", "stopping": "exact",
                "eos_ids": tuple(eos if isinstance(eos, list) else [] if eos is None else [eos])}
    if from_directory:
        early_stopping = hf_generation.get("early_stopping", False)
        if early_stopping not in _HF_STOPPING:
            raise ConfigError(f"the model directory's early_stopping={early_stopping!r} is not one of transformers' "
                              "(true, false, \"never\"); give --beam N to search our way")
        settings["stopping"] = _HF_STOPPING[early_stopping]
        if args.alpha is None:
            settings.update(alpha=hf_generation.get("length_penalty", 1.0), length_penalty_kind="hf")
    if settings["alpha"] is None:
        settings["alpha"] = 0.6
    use_directory = args.temperature is None and settings["beam"] == 1   # a search samples nothing
    for name, ours in (("temperature", temperature), ("top_k", None), ("top_p", None)):
        given = getattr(args, name)
        settings[name] = given if given is not None else generation.get(name, ours) if use_directory else ours
    return {**settings, **_shared_rules(args, generation, hf_generation)}


def _shared_rules(args, generation: dict, hf_generation: dict) -> dict:
    """What every decoding method applies, given or from the directory: the repetition penalty,
    the n-gram ban, the minimum length and the banned tokens (a Hugging Face ``bad_words_ids`` of
    single tokens).  transformers' ``min_length`` counts the tokens before the new ones (the prompt,
    or the decoder's start token), so it is returned as is (``min_length``) beside ``min_new_tokens``
    for the command to subtract what comes first; a bad word of several tokens is refused."""
    def pick(flag: str, key: str, default):
        given = getattr(args, flag, None)
        if given is not None:
            return given
        value = hf_generation.get(key, generation.get(key))
        return default if value is None else value

    bad = hf_generation.get("bad_words_ids") or []
    if any(not isinstance(w, list) or len(w) != 1 or not isinstance(w[0], int) for w in bad):
        raise ConfigError("the model directory's generation config bans sequences of several tokens (bad_words_ids "
                          f"{bad!r}), which glassformer does not do; remove them from generation_config.json or "
                          "keep single-token entries")
    rules = {"repetition_penalty": pick("repetition_penalty", "repetition_penalty", 1.0),
             "no_repeat_ngram_size": pick("no_repeat_ngram_size", "no_repeat_ngram_size", 0),
             "min_new_tokens": pick("min_new_tokens", "min_new_tokens", 0), "min_length": 0,
             "banned_ids": tuple(w[0] for w in bad)}
    if getattr(args, "min_new_tokens", None) is None:
        rules["min_length"] = hf_generation.get("min_length") or 0
    return rules


def adopt_end_ids(tokenizer, eos_ids: tuple[int, ...]) -> None:
    """A tokenizer that knows one end id ends texts also at the others the model directory lists
    (``decoding_defaults(...)["eos_ids"]``; e.g. our tokenizer of a converted Llama 3 directory)."""
    if len(tokenizer.eos_ids) < 2 and len(eos_ids) > 1:
        tokenizer.eos_ids = tuple(dict.fromkeys([*tokenizer.eos_ids, *eos_ids]))
