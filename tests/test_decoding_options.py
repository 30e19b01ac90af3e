"""Every decoding option against Hugging Face ``transformers``, on the same numbers.

1. **One step, same logits**: each function of ``glassformer.generation.processors`` (and the
   whole chain ``adjust_scores``) against Hugging Face's logits processor of the same name,
   on random logits with several rows, histories with repeats and left padding, and edge
   values of every parameter.  Compared exactly (the same float operations).
2. **Whole decodes, same weights**: a tiny random GPT-2 (``GPT2LMHeadModel``) and the same
   weights in our ``GPT``; greedy, sampled and beam outputs with each option against
   ``GPT2LMHeadModel.generate`` — the tokens, and the scores Hugging Face chose from at every
   step (``output_scores``), which also proves it applied no processor we do not.

Padding: our histories mark "no token" with -1.  Hugging Face's processors have no such
mark; they ignore ids outside the vocabulary (they clamp them to a spare column), so they
get ``vocab_size`` where we have -1.  In ``generate`` the prompts are left-padded with
the EOS id (GPT-2 practice: its pad token), and Hugging Face's repetition penalty skips the
padding through ``attention_mask``, as our -1 does.

Deliberately not compared: beam search with a repetition penalty (Hugging Face applies it to
log-probabilities, we to logits — see docs/decoding.md, "Differences from Hugging Face").
"""

from __future__ import annotations

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers.generation import (  # noqa: E402
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from glassformer.generation import BeamOptions, SamplingOptions, beam_search, decode, generate  # noqa: E402
from glassformer.generation.beam import length_penalty  # noqa: E402
from glassformer.generation.processors import (  # noqa: E402
    ban_repeated_ngrams,
    forbid_eos_before,
    forbid_tokens,
    keep_top_k,
    keep_top_p,
    penalise_repetition,
    token_history,
)
from glassformer.generation.sampling import adjust_scores  # noqa: E402
from glassformer.interop.hf_gpt2 import config_from_hf_gpt2, state_dict_from_hf_gpt2  # noqa: E402
from glassformer.models.gpt import GPT  # noqa: E402

VOCAB = 61
EOS = PAD = 1                      # GPT-2 practice: pad with the end-of-text token
ROWS = 5


# --------------------------------------------------------------------------------------------
# 1. One step: the same logits through our function and Hugging Face's processor
# --------------------------------------------------------------------------------------------

def _logits(seed: int, rows: int = ROWS, vocab: int = VOCAB, scale: float = 3.0) -> torch.Tensor:
    """Random logits (rows, vocab), both signs, with an exact tie and an exact zero."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * scale
    logits[1, 7] = logits[1, 3]            # a tie (top-k keeps both)
    logits[2, 5] = 0.0                     # neither branch of the repetition penalty changes 0
    return logits


def _history(seed: int, rows: int = ROWS, length: int = 14) -> torch.Tensor:
    """(rows, length) token ids from a small range (many repeats and repeated n-grams); rows 1
    and 3 left-padded with -1 (no token), row 4 a repeating pattern."""
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(0, 8, (rows, length), generator=g)
    history[1, :4] = -1
    history[3, :9] = -1
    history[4] = torch.tensor([3, 4, 5] * (length // 3 + 1))[:length]
    return history


def _for_hf(history: torch.Tensor, vocab: int = VOCAB) -> torch.Tensor:
    """Our -1 ("no token") as an id outside the vocabulary, which Hugging Face's processors ignore."""
    return history.masked_fill(history < 0, vocab)


@pytest.mark.parametrize("penalty", [0.5, 0.8, 1.0, 1.2, 2.0, 7.5])
def test_repetition_penalty_matches_hf(penalty):
    logits, history = _logits(0), _history(1)
    ours = penalise_repetition(logits, history, penalty)
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(_for_hf(history), logits.clone())
    assert torch.equal(ours, theirs)
    # generate's route for left padding: the padded prefix of each row is ignored by length
    pads = (history < 0).sum(dim=1)
    hf_padded = RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=pads)
    assert torch.equal(ours, hf_padded(history.clamp_min(0), logits.clone()))
    changed = ours != logits
    if penalty != 1.0:                     # only seen tokens move, every non-zero seen one does
        seen = torch.zeros_like(changed)
        for r in range(ROWS):
            seen[r, history[r][history[r] >= 0]] = True
        assert torch.equal(changed, seen & (logits != 0))


def test_repetition_penalty_worked_example():
    """The issue's example: a repeated token at p = 0.991, penalty 2.0 -> p = 0.883.

    CTRL divides the repeated token's positive *logit* by the penalty.  Two logits (a, b)
    with softmax 0.991 for a and softmax 0.883 once a is halved: a - b = logit(0.991),
    a/2 - b = logit(0.883).  Applied to log-probabilities instead (the old bug), the
    repeated token's log-probability is negative, so it is multiplied by 2 — a change of
    0.009 nats — and after renormalising it is still at 0.991."""
    def logit(p):
        return math.log(p / (1 - p))

    a = 2 * (logit(0.991) - logit(0.883))
    logits = torch.tensor([[a, a - logit(0.991)]])
    history = torch.tensor([[0, 0]])                     # token 0 was generated: it repeats
    assert round(logits.softmax(-1)[0, 0].item(), 3) == 0.991
    ours = penalise_repetition(logits, history, 2.0).softmax(-1)[0, 0].item()
    theirs = RepetitionPenaltyLogitsProcessor(2.0)(history, logits.clone()).softmax(-1)[0, 0].item()
    assert round(ours, 3) == round(theirs, 3) == 0.883
    log_probs = logits.log_softmax(-1)
    assert bool((log_probs <= 0).all())                  # the division branch can never run
    old_bug = penalise_repetition(log_probs, history, 2.0).softmax(-1)[0, 0].item()
    assert round(old_bug, 3) == 0.991


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_matches_hf(n):
    logits = _logits(2)
    for length in (n - 1, n, 9, 14):                     # shorter than n: nothing to ban
        history = _history(3)[:, -length:] if length else _history(3)[:, :0]
        ours = ban_repeated_ngrams(logits, history, n)
        theirs = NoRepeatNGramLogitsProcessor(n)(_for_hf(history), logits.clone())
        assert torch.equal(ours, theirs), (n, length)
        # and row by row on the real tokens only: -1 padding is no token at all
        for r in range(ROWS):
            real = history[r][history[r] >= 0][None]
            alone = NoRepeatNGramLogitsProcessor(n)(real, logits[r:r + 1].clone())
            assert torch.equal(ours[r:r + 1], alone), (n, length, r)
    assert bool(torch.isinf(ban_repeated_ngrams(logits, _history(3), n)).any())   # the test bans something


@pytest.mark.parametrize("min_new_tokens", [0, 1, 3])
def test_min_new_tokens_matches_hf(min_new_tokens):
    logits, prompt_length = _logits(4), 6
    for step in range(5):                                # tokens generated so far
        input_ids = torch.zeros(ROWS, prompt_length + step, dtype=torch.long)
        ours = forbid_eos_before(logits, EOS, step, min_new_tokens)
        new_tokens = MinNewTokensLengthLogitsProcessor(prompt_length, min_new_tokens, EOS)
        total = MinLengthLogitsProcessor(prompt_length + min_new_tokens, EOS)
        assert torch.equal(ours, new_tokens(input_ids, logits.clone()))
        assert torch.equal(ours, total(input_ids, logits.clone()))
        assert bool(torch.isinf(ours[:, EOS]).all()) == (step < min_new_tokens)


@pytest.mark.parametrize("banned", [[], [0], [3, 7], [0, 2, 60]])
def test_forbidden_tokens_match_hf_bad_words_and_suppress_tokens(banned):
    logits, history = _logits(5), _history(6)
    ours = forbid_tokens(logits, banned)
    if banned:
        bad_words = NoBadWordsLogitsProcessor([[i] for i in banned], eos_token_id=EOS)
        assert torch.equal(ours, bad_words(_for_hf(history), logits.clone()))
        assert torch.equal(ours, SuppressTokensLogitsProcessor(banned)(history, logits.clone()))
    assert torch.equal(torch.isinf(ours).nonzero()[:, 1].unique(), torch.tensor(sorted(banned), dtype=torch.long))


@pytest.mark.parametrize("temperature", [0.25, 0.7, 1.0, 1.3, 4.0])
def test_temperature_matches_hf(temperature):
    logits = _logits(7)
    ours = adjust_scores(logits, _history(8), 0, SamplingOptions(temperature=temperature))
    assert torch.equal(ours, TemperatureLogitsWarper(temperature)(None, logits.clone()))


@pytest.mark.parametrize("k", [1, 2, 4, 5, VOCAB - 1, VOCAB, VOCAB + 3])
def test_top_k_matches_hf(k):
    logits = _logits(9)
    logits[1, 7] = logits[1].topk(4).values[-1]          # a tie at the 4th place: both kept at k = 4
    ours = keep_top_k(logits, k)
    assert torch.equal(ours, TopKLogitsWarper(k)(None, logits.clone()))
    kept = torch.isfinite(ours).sum(dim=1)
    assert bool((kept >= min(k, VOCAB)).all())
    if k == 1:
        assert torch.equal(ours.argmax(-1), logits.argmax(-1)) and bool((kept == 1).all())


@pytest.mark.parametrize("p", [1e-9, 0.05, 0.3, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("scale", [0.3, 3.0])             # a flat and a peaked distribution
def test_top_p_matches_hf(p, scale):
    logits = _logits(10, scale=scale)
    ours = keep_top_p(logits, p)
    theirs = TopPLogitsWarper(p)(None, logits.clone())
    assert torch.equal(ours, theirs)
    kept = torch.isfinite(ours)
    if p < 0.01:                                          # only the most probable token
        assert bool((kept.sum(-1) == 1).all()) and bool(kept.gather(1, logits.argmax(-1, keepdim=True)).all())
    if p == 1.0:
        assert bool(kept.all())
    assert bool((logits.softmax(-1) * kept).sum(-1).ge(min(p, 1.0) - 1e-6).all())   # at least p is kept


CHAINS = [
    dict(),
    dict(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3, banned_ids=(0, 4)),
    dict(temperature=0.7),
    dict(temperature=1.0, top_k=1),
    dict(temperature=1.5, top_k=8, top_p=0.9, repetition_penalty=0.8, no_repeat_ngram_size=3),
    dict(temperature=0.6, top_p=0.05, repetition_penalty=2.0, no_repeat_ngram_size=1, banned_ids=(6,),
         min_new_tokens=1),
]


@pytest.mark.parametrize("options", CHAINS)
def test_adjust_scores_matches_hf_processor_chain(options):
    """The whole chain, in generate's order (penalty, n-grams, bad words, min length, then the warpers)."""
    opts = SamplingOptions(eos_id=EOS, pad_id=PAD, **options)
    prompt_length = 6
    for step, seed in [(0, 11), (2, 12), (5, 13)]:
        logits, history = _logits(seed), _history(seed + 100, length=prompt_length + step)
        chain = LogitsProcessorList()
        if opts.repetition_penalty != 1.0:
            chain.append(RepetitionPenaltyLogitsProcessor(opts.repetition_penalty))
        if opts.no_repeat_ngram_size:
            chain.append(NoRepeatNGramLogitsProcessor(opts.no_repeat_ngram_size))
        if opts.banned_ids:
            chain.append(NoBadWordsLogitsProcessor([[i] for i in opts.banned_ids], eos_token_id=EOS))
        chain.append(MinNewTokensLengthLogitsProcessor(prompt_length, opts.min_new_tokens, EOS))
        if not opts.greedy:
            chain.append(TemperatureLogitsWarper(opts.temperature))
            if opts.top_k is not None:
                chain.append(TopKLogitsWarper(opts.top_k))
            if opts.top_p is not None:
                chain.append(TopPLogitsWarper(opts.top_p))
        ours = adjust_scores(logits, history, step, opts)
        assert torch.equal(ours, chain(_for_hf(history), logits.clone())), step


# --------------------------------------------------------------------------------------------
# 2. Whole decodes: a tiny GPT-2 in Hugging Face and the same weights in our GPT
# --------------------------------------------------------------------------------------------

PROMPTS = [[5, 9, 11, 3, 7, 5], [8, 4], [6, 6, 12, 6], [20, 30, 40]]


def _gpt2_pair(seed: int = 0, output_bias: dict[int, float] | None = None):
    """A random tiny GPT2LMHeadModel (untied head, weights large enough for varied text) and
    our GPT with its weights (ported by ``glassformer.interop.hf_gpt2``).

    ``output_bias`` {token: value} is built from weights, so both models have it: hidden
    unit 0 after the final norm is made the constant 1 (``ln_f`` weight 0, bias 1), which
    turns column 0 of ``lm_head`` into a bias on the logits."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=EOS, eos_token_id=EOS, tie_word_embeddings=False)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() >= 2 or "ln" in name:
                p.add_(torch.randn_like(p) * 0.2)
        hf.lm_head.weight.mul_(3.0)
        if output_bias:
            hf.transformer.ln_f.weight[0] = 0.0
            hf.transformer.ln_f.bias[0] = 1.0
            hf.lm_head.weight[:, 0] = 0.0
            for token, value in output_bias.items():
                hf.lm_head.weight[token, 0] = value
    ours_config = config_from_hf_gpt2(config.to_dict())
    ours = GPT(ours_config)
    ours.load_state_dict(state_dict_from_hf_gpt2(hf.state_dict(), ours_config))
    return hf, ours.eval()


@pytest.fixture(scope="module")
def pair():
    """EOS pushed up so that outputs end at varied lengths (some within a few tokens)."""
    return _gpt2_pair(output_bias={EOS: 5.5})


def _left_padded(prompts=PROMPTS):
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def _hf_generate(hf, prompts=PROMPTS, **options):
    """``hf.generate`` on the left-padded ``prompts`` with every knob explicit: Hugging Face's
    global defaults would otherwise add top_k=50 to sampling."""
    for name in ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
                 "forced_eos_token_id", "sequence_bias", "min_length", "max_length"):
        assert getattr(hf.generation_config, name, None) in (None, 0), name   # nothing hidden in the checkpoint
    ids, mask = _left_padded(prompts)
    settings = dict(do_sample=False, num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0,
                    min_new_tokens=0, bad_words_ids=None, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS,
                    output_scores=True, return_dict_in_generate=True)
    if options.get("do_sample"):
        settings.update(temperature=1.0, top_k=0, top_p=1.0)
    settings.update(options)
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, **settings)
    return out, ids.shape[1]


def _hf_rules(options: dict) -> dict:
    """Our shared options (SamplingOptions' names) as ``generate``'s keyword arguments."""
    banned = options.get("banned_ids")
    return dict(repetition_penalty=float(options.get("repetition_penalty", 1.0)),
                no_repeat_ngram_size=options.get("no_repeat_ngram_size", 0),
                min_new_tokens=options.get("min_new_tokens", 0),
                bad_words_ids=[[i] for i in banned] if banned else None)


def _our_scores_along(ours, tokens: torch.Tensor, opts: SamplingOptions) -> list[torch.Tensor]:
    """Our adjusted scores (batch, vocab) at every step, teacher-forced along ``tokens`` (batch, n)."""
    cache, first = ours.start_decoding(PROMPTS, opts.max_new_tokens, pad_id=PAD)
    t0 = first.shape[1]
    history = token_history(first, cache.key_padding, opts.max_new_tokens)
    feed, steps = first, []
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            steps.append(adjust_scores(ours.decode_step(feed, cache), history[:, : t0 + t], t, opts))
            history[:, t0 + t] = tokens[:, t]
            feed = tokens[:, t:t + 1]
    return steps


def _same_scores(ours: list[torch.Tensor], theirs: tuple[torch.Tensor, ...], tokens: torch.Tensor) -> None:
    """Per step, for the rows still writing: the same tokens ruled out, the same scores (the
    models' logits agree to ~1e-5).  Rows that ended write padding whatever the scores, and
    there the n-gram ban differs by construction (Hugging Face matches the pad = EOS it then
    reads against the left padding, which to us is no token)."""
    assert len(ours) == len(theirs)
    for t, (a, b) in enumerate(zip(ours, theirs)):
        live = ~(tokens[:, :t] == EOS).any(dim=1)
        a, b = a[live], b[live]
        assert torch.equal(torch.isinf(a), torch.isinf(b)), f"step {t}: different tokens ruled out"
        finite = torch.isfinite(a)
        torch.testing.assert_close(a[finite], b[finite], atol=1e-4, rtol=0, msg=f"step {t}")


def _ours_generate(ours, **options) -> tuple[torch.Tensor, SamplingOptions]:
    opts = SamplingOptions(eos_id=EOS, pad_id=PAD, **options)
    cache, first = ours.start_decoding(PROMPTS, opts.max_new_tokens, pad_id=PAD)
    return generate(ours, cache, first, opts), opts


def _strip(row: list[int]) -> list[int]:
    """Generated ids up to (without) the first EOS."""
    return row[: row.index(EOS)] if EOS in row else row


GREEDY = [
    dict(),
    dict(repetition_penalty=1.5),
    dict(repetition_penalty=0.7),
    dict(no_repeat_ngram_size=2),
    dict(no_repeat_ngram_size=3),
    dict(min_new_tokens=6),
    dict(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=4, banned_ids=(43, 49)),
]


@pytest.mark.parametrize("options", GREEDY)
def test_greedy_matches_hf_generate(pair, options):
    hf, ours = pair
    theirs, t0 = _hf_generate(hf, max_new_tokens=12, **_hf_rules(options))
    mine, opts = _ours_generate(ours, max_new_tokens=12, **options)
    assert torch.equal(mine, theirs.sequences[:, t0:])
    _same_scores(_our_scores_along(ours, mine, opts), theirs.scores, mine)
    if "min_new_tokens" in options:
        assert EOS not in mine[:, : options["min_new_tokens"]].tolist()
    if options.get("no_repeat_ngram_size") == 2:
        for prompt, row in zip(PROMPTS, mine.tolist()):
            seq = prompt + row[: row.index(EOS) + 1 if EOS in row else len(row)]
            assert len(set(zip(seq, seq[1:]))) == len(seq) - 1


def test_unigram_ban_matches_hf_row_by_row(pair):
    """``no_repeat_ngram_size=1`` (no token twice) against Hugging Face on each prompt alone.

    Batched, the two differ on purpose: Hugging Face's n-gram processor reads the left padding
    as tokens, so with n = 1 it also bans the pad id in padded rows — with pad = EOS such a row
    can never end.  Ours ignores padding, so each row gets what it would get alone, which is
    what this compares."""
    hf, ours = pair
    mine, _ = _ours_generate(ours, max_new_tokens=12, no_repeat_ngram_size=1)
    ended = 0
    for prompt, row in zip(PROMPTS, mine.tolist()):
        alone, t0 = _hf_generate(hf, [prompt], max_new_tokens=12, no_repeat_ngram_size=1)
        expected = alone.sequences[0, t0:].tolist()
        assert row[: len(expected)] == expected and set(row[len(expected):]) <= {PAD}
        new = _strip(row)
        assert len(set(new)) == len(new) and not set(new) & set(prompt)
        ended += EOS in expected
    assert ended >= 1, "a padded row should end, as it does alone"
    batched, t0 = _hf_generate(hf, max_new_tokens=12, no_repeat_ngram_size=1)
    padded = [i for i, p in enumerate(PROMPTS) if len(p) < max(map(len, PROMPTS))]
    assert all(torch.isinf(step[padded, PAD]).all() for step in batched.scores)   # HF: pad = EOS banned


def test_greedy_options_change_the_output(pair):
    """The options above are not vacuous on this model: each one changes what greedy decoding writes."""
    _, ours = pair
    plain, _ = _ours_generate(ours, max_new_tokens=12)
    assert bool((plain[:, :6] == EOS).any()), "some rows end early without min_new_tokens"
    for options in GREEDY[1:] + [dict(no_repeat_ngram_size=1)]:
        changed, _ = _ours_generate(ours, max_new_tokens=12, **options)
        assert changed.shape != plain.shape or not torch.equal(changed, plain), options


SAMPLED = [
    dict(temperature=1.0),
    dict(temperature=0.7),
    dict(temperature=1.8, top_k=5),
    dict(temperature=1.0, top_k=1),
    dict(temperature=1.2, top_p=0.8),
    dict(temperature=1.0, top_p=1e-6),
    dict(temperature=0.9, top_k=10, top_p=0.9, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3,
         banned_ids=(10,)),
]


@pytest.mark.parametrize("options", SAMPLED)
def test_sampling_draws_from_hf_generates_distributions(pair, options):
    """The same distributions at every step: along the tokens Hugging Face samples, our filtered
    scores are its scores (the models' logits agree to ~1e-5).  The draws themselves differ on purpose
    (docs/decoding.md): Hugging Face's ``torch.multinomial`` takes a batch's numbers from one
    generator, ours give each row a stream of its own, so that a row's sample does not depend on its
    batch; that the draw takes each token with its probability is ``tests/test_generate_seed.py``'s."""
    hf, ours = pair
    outputs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        theirs, t0 = _hf_generate(hf, max_new_tokens=12, do_sample=True, temperature=float(options["temperature"]),
                                  top_k=options.get("top_k", 0), top_p=float(options.get("top_p", 1.0)),
                                  **_hf_rules(options))
        sampled = theirs.sequences[:, t0:]
        opts = SamplingOptions(eos_id=EOS, pad_id=PAD, max_new_tokens=12, **options)
        _same_scores(_our_scores_along(ours, sampled, opts), theirs.scores, sampled)
        mine, _ = _ours_generate(ours, max_new_tokens=12, seed=seed, **options)
        outputs.append(mine)
    deterministic = options.get("top_k") == 1 or options.get("top_p", 1.0) < 1e-3
    if deterministic:                                    # one token left each step: greedy decoding
        greedy, _ = _ours_generate(ours, max_new_tokens=12)
        assert torch.equal(outputs[0], greedy) and torch.equal(outputs[1], greedy)
    else:                                                # the seed matters: the comparison is not vacuous
        assert outputs[0].shape != outputs[1].shape or not torch.equal(outputs[0], outputs[1])


def test_sampling_through_decode_is_generate(pair):
    """``decode`` (the entry point) samples with the same draws as ``generate``."""
    _, ours = pair
    sampling = SamplingOptions(max_new_tokens=10, temperature=1.1, top_k=12, eos_id=EOS, pad_id=PAD, seed=3)
    cache, first = ours.start_decoding(PROMPTS, 10, pad_id=PAD)
    out = decode(ours, cache, first, sampling)
    cache, first = ours.start_decoding(PROMPTS, 10, pad_id=PAD)
    rows = generate(ours, cache, first, sampling).tolist()
    assert out.tokens == [[row[: row.index(EOS)] if EOS in row else row] for row in rows]


BEAMS = [
    dict(alpha=1.0, stopping="heuristic"),
    dict(alpha=0.6, stopping="exact", no_repeat_ngram_size=2),
    dict(alpha=0.0, stopping="first", min_new_tokens=3),
    dict(alpha=1.5, stopping="exact", no_repeat_ngram_size=3, min_new_tokens=2, banned_ids=(43,)),
]
EARLY_STOPPING = {"exact": "never", "heuristic": False, "first": True}


@pytest.mark.parametrize("options", BEAMS)
def test_beam_search_matches_hf_generate(pair, options):
    """``decode(beam=3, length_penalty_kind="hf")`` against ``generate(num_beams=3)``: the same
    n-best lists and scores, with each stopping rule and the n-gram / min-length / banned options."""
    hf, ours = pair
    beam, n = 3, 10
    rules = {k: v for k, v in options.items() if k not in ("alpha", "stopping")}
    theirs, t0 = _hf_generate(hf, max_new_tokens=n, num_beams=beam, num_return_sequences=beam,
                              length_penalty=options["alpha"], early_stopping=EARLY_STOPPING[options["stopping"]],
                              **_hf_rules(rules))
    sampling = SamplingOptions(max_new_tokens=n, eos_id=EOS, pad_id=PAD, **rules)
    cache, first = ours.start_decoding(PROMPTS, n, pad_id=PAD)
    mine = decode(ours, cache, first, sampling, beam=beam, n_best=beam, alpha=options["alpha"],
                  length_penalty_kind="hf", stopping=options["stopping"])
    expected = [_strip(row) for row in theirs.sequences[:, t0:].tolist()]
    assert [hyp for hyps in mine.tokens for hyp in hyps] == expected
    torch.testing.assert_close(torch.tensor(mine.scores).view(-1), theirs.sequences_scores, atol=1e-4, rtol=0)
    lengths = {len(hyp) for hyps in mine.tokens for hyp in hyps}
    assert len(lengths) > 1, "hypotheses ending at several lengths"


def test_beam_of_one_applies_the_repetition_penalty_to_logits_like_hf_greedy(pair):
    """Beam search with a repetition penalty is not compared with Hugging Face's beam search
    (which penalises log-probabilities: docs/decoding.md, "Differences from Hugging Face").
    At width 1 it is greedy decoding, and there Hugging Face penalises logits too: the same
    tokens, and not those of the penalty applied to log-probabilities."""
    hf, ours = pair
    n = 12
    for penalty in (0.7, 1.5, 3.0):
        theirs, t0 = _hf_generate(hf, max_new_tokens=n, repetition_penalty=penalty)
        expected = [_strip(row) for row in theirs.sequences[:, t0:].tolist()]
        cache, first = ours.start_decoding(PROMPTS, n, pad_id=PAD)
        out = decode(ours, cache, first, SamplingOptions(max_new_tokens=n, eos_id=EOS, pad_id=PAD,
                                                         repetition_penalty=penalty), beam=1)
        assert [hyps[0] for hyps in out.tokens] == expected, penalty
        cache, first = ours.start_decoding(PROMPTS, n, pad_id=PAD)
        options = BeamOptions(beam=1, max_new_tokens=n, repetition_penalty=penalty, eos_id=EOS, pad_id=PAD)
        searched = beam_search(ours, cache, first, options)
        assert [_strip(row) for row in searched.tokens[:, 0].tolist()] == expected, penalty

    class LogProbs:                    # the old bug: a model whose "logits" are already log-probabilities
        def decode_step(self, tokens, cache):
            return ours.decode_step(tokens, cache).log_softmax(-1)

        def reorder_cache(self, cache, rows, sources=None):
            ours.reorder_cache(cache, rows, sources)

    cache, first = ours.start_decoding(PROMPTS, n, pad_id=PAD)
    old_bug = beam_search(LogProbs(), cache, first, options)
    assert [_strip(row) for row in old_bug.tokens[:, 0].tolist()] != expected


def _teacher_forced_log_prob(ours, prompt: list[int], hyp: list[int]) -> float:
    """log P(hyp | prompt) from one plain forward pass over prompt + hyp[:-1] (no cache, no padding)."""
    x = torch.tensor([prompt + hyp[:-1]])
    with torch.no_grad():
        log_probs = ours(x)[0, len(prompt) - 1:].log_softmax(-1)
    return float(log_probs.gather(1, torch.tensor(hyp)[:, None]).sum())


@pytest.mark.parametrize("alpha,stopping", [(0.6, "exact"), (1.0, "heuristic")])
def test_decoder_only_beam_search_reaches_eos(pair, alpha, stopping):
    """A GPT's beam search where hypotheses really end with EOS before the limit: their scores
    are the teacher-forced log-probability (EOS included) over |Y| ** alpha, and the n-best
    lists are Hugging Face's."""
    hf, ours = pair
    beam, n = 3, 10
    options = BeamOptions(beam=beam, n_best=beam, alpha=alpha, length_penalty_kind="hf", stopping=stopping,
                          max_new_tokens=n, eos_id=EOS, pad_id=PAD)
    cache, first = ours.start_decoding(PROMPTS, n, pad_id=PAD)
    out = beam_search(ours, cache, first, options)
    ended = 0
    for b, prompt in enumerate(PROMPTS):
        for k in range(beam):
            length = int(out.lengths[b, k])
            hyp = out.tokens[b, k, :length].tolist()
            assert length >= 1 and EOS not in hyp[:-1]
            if hyp[-1] == EOS:
                ended += 1
                assert length < n
            else:
                assert length == n
            log_p = _teacher_forced_log_prob(ours, prompt, hyp)
            assert out.log_probs[b, k].item() == pytest.approx(log_p, abs=1e-4)
            lp = float(length_penalty(torch.tensor(length), alpha, "hf"))
            assert out.scores[b, k].item() == pytest.approx(log_p / lp, abs=1e-4)
    assert ended >= 3, "several hypotheses should finish with EOS before the limit"
    theirs, t0 = _hf_generate(hf, max_new_tokens=n, num_beams=beam, num_return_sequences=beam, length_penalty=alpha,
                              early_stopping=EARLY_STOPPING[stopping])
    hf_tokens = theirs.sequences[:, t0:].tolist()
    for i, row in enumerate(hf_tokens):
        b, k = divmod(i, beam)
        length = int(out.lengths[b, k])
        assert out.tokens[b, k, :length].tolist() == (row[: row.index(EOS) + 1] if EOS in row else row)
    torch.testing.assert_close(out.scores.view(-1), theirs.sequences_scores, atol=1e-4, rtol=0)


BANNED = (7, 9)


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_banned_ids_are_never_generated_even_when_preferred(strategy):
    """The model puts almost all its probability on the banned tokens (+30 and +25 on their
    logits); with ``banned_ids`` neither ever appears, whatever the strategy."""
    _, ours = _gpt2_pair(seed=1, output_bias={BANNED[0]: 30.0, BANNED[1]: 25.0, EOS: -5.0})
    settings = dict(max_new_tokens=10, eos_id=EOS, pad_id=PAD)
    if strategy == "sample":
        settings.update(temperature=1.5, seed=0)
    beam = 3 if strategy == "beam" else 1

    def run(banned_ids):
        cache, first = ours.start_decoding(PROMPTS, 10, pad_id=PAD)
        out = decode(ours, cache, first, SamplingOptions(banned_ids=banned_ids, **settings), beam=beam,
                     n_best=beam, alpha=0.6)
        return [tok for hyps in out.tokens for hyp in hyps for tok in hyp]

    free = run(())
    assert sum(tok in BANNED for tok in free) > len(free) // 2, "the model should prefer the banned ids"
    banned = run(BANNED)
    assert len(banned) >= len(PROMPTS) * beam * 5
    assert not set(banned) & set(BANNED)
