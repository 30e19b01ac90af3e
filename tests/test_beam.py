"""Beam search: greedy at width 1, scores equal to teacher-forced log-probabilities over the
length penalty, n-best order, batching that changes nothing, constraints, option checks."""

from __future__ import annotations

import pytest
import torch

from glassformer.errors import ConfigError
from glassformer.generation import (
    BeamOptions,
    SamplingOptions,
    beam_search,
    decode,
    generate,
    length_limits,
    length_penalty,
)
from glassformer.models import GPT, Transformer, preset

EOS, PAD = 2, 0


def _translator(seed: int = 0) -> Transformer:
    """A tiny random encoder–decoder whose outputs end at varied lengths: an untied, sharpened
    output projection with a random bias spreads the next-token distribution (a tied one
    mostly repeats its input), and a push on EOS makes ending likely."""
    torch.manual_seed(seed)
    model = Transformer(preset("vaswani-tiny", final_logits_bias=True, tie_embeddings="none")).eval()
    with torch.no_grad():
        model.generator.proj.weight.mul_(2.0)
        model.generator.proj.bias.normal_(0.0, 1.0)
        model.generator.proj.bias[EOS] = 1.0
        model.generator.proj.bias[PAD] = -10.0
    return model


def _sources(seed: int = 1, batch: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 50, (batch, 9), generator=g)
    for i in range(1, batch):
        src[i, 9 - 2 * i:] = PAD                    # different source lengths, right-padded
    return src


def _search(model, src, **options) -> tuple:
    opts = BeamOptions(eos_id=EOS, pad_id=PAD, **options)
    cache, first = model.start_decoding(src, opts.max_new_tokens)
    return beam_search(model, cache, first, opts), cache


def _teacher_forced_log_prob(model: Transformer, src: torch.Tensor, hyp: torch.Tensor) -> float:
    """log P(hyp | src) by one plain forward pass over [start] + hyp[:-1]."""
    decoder_input = torch.cat([torch.tensor([model.config.start_id]), hyp[:-1]])[None]
    with torch.no_grad():
        log_probs = model(src[None], decoder_input)[0].log_softmax(-1)      # (len, vocab)
    return float(log_probs.gather(1, hyp[:, None]).sum())


def test_beam_of_one_is_greedy_decoding():
    model, src = _translator(), _sources()
    out, _ = _search(model, src, beam=1, max_new_tokens=15)
    cache, first = model.start_decoding(src, 15)
    greedy = generate(model, cache, first, SamplingOptions(max_new_tokens=15, eos_id=EOS, pad_id=PAD))
    ours = out.tokens[:, 0]
    width = max(greedy.shape[1], ours.shape[1])
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=PAD)   # noqa: E731
    assert torch.equal(pad(ours), pad(greedy))
    assert bool((greedy == EOS).any()), "the test model should end some outputs with EOS"


@pytest.mark.parametrize("kind,alpha", [("gnmt", 0.6), ("gnmt", 0.0), ("hf", 0.5)])
def test_scores_are_teacher_forced_log_probs_over_the_length_penalty(kind, alpha):
    model, src = _translator(), _sources()
    out, _ = _search(model, src, beam=4, n_best=4, alpha=alpha, length_penalty_kind=kind, max_new_tokens=12)
    ended_with_eos = 0
    for b in range(src.shape[0]):
        for k in range(4):
            length = int(out.lengths[b, k])
            assert length >= 1
            hyp = out.tokens[b, k, :length]
            assert bool((out.tokens[b, k, length:] == PAD).all())
            assert EOS not in hyp[:-1].tolist()                     # EOS only ever last
            ended_with_eos += int(hyp[-1] == EOS)
            if hyp[-1] != EOS:
                assert length == 12                                  # cut at the limit
            log_p = _teacher_forced_log_prob(model, src[b], hyp)
            lp = float(length_penalty(torch.tensor(length), alpha, kind))
            assert out.log_probs[b, k].item() == pytest.approx(log_p, abs=1e-4)
            assert out.scores[b, k].item() == pytest.approx(log_p / lp, abs=1e-4)
        scores = out.scores[b]
        assert bool((scores[:-1] >= scores[1:]).all()), "n-best must be sorted best first"
        assert len({tuple(out.tokens[b, k, : out.lengths[b, k]].tolist()) for k in range(4)}) == 4
    assert ended_with_eos > 0


def test_length_penalty_formulas():
    lengths = torch.tensor([1, 4, 10])
    assert torch.allclose(length_penalty(lengths, 0.6, "gnmt"), ((5 + lengths) / 6) ** 0.6)
    assert torch.allclose(length_penalty(lengths, 0.6, "hf"), lengths.float() ** 0.6)
    assert torch.equal(length_penalty(lengths, 0.0, "gnmt"), torch.ones(3))


def test_batched_search_equals_one_sentence_at_a_time():
    model, src = _translator(), _sources(batch=4)
    together, _ = _search(model, src, beam=3, n_best=3, max_new_tokens=10)
    for b in range(src.shape[0]):
        real = src[b][src[b] != PAD]
        alone, _ = _search(model, real[None], beam=3, n_best=3, max_new_tokens=10)
        assert torch.equal(together.lengths[b], alone.lengths[0])
        for k in range(3):
            n = int(alone.lengths[0, k])
            assert together.tokens[b, k, :n].tolist() == alone.tokens[0, k, :n].tolist()
        assert torch.allclose(together.scores[b], alone.scores[0], atol=1e-4)


def test_encoder_output_is_shared_by_beams_and_finished_sentences_leave_the_batch():
    model, src = _translator(), _sources(batch=4)
    seen = []
    step = model.decode_step

    def recording_step(tokens, cache):
        out = step(tokens, cache)
        seen.append((tokens.shape[0], cache.memory.shape[0], cache.cross[0][0].shape[0]))
        return out

    model.decode_step = recording_step
    opts = BeamOptions(beam=3, max_new_tokens=10, eos_id=EOS, pad_id=PAD)
    cache, first = model.start_decoding(src, 10)
    limits = torch.tensor([2, 10, 4, 10])
    beam_search(model, cache, first, opts, max_lengths=limits)
    assert seen[0] == (4, 4, 4)                           # first step: one row per sentence
    for rows, memory_rows, cross_rows in seen[1:]:
        assert memory_rows == cross_rows and rows == 3 * memory_rows   # never copied per beam
    assert seen[1][1] == 4 and seen[-1][1] < 4            # sentences past their limit were dropped


def test_per_sentence_length_limits_and_min_length():
    model, src = _translator(), _sources()
    limits = length_limits(src, PAD, a=0.0, b=3) + torch.arange(4)      # 3, 4, 5, 6
    out, _ = _search(model, src, beam=2, n_best=2, max_new_tokens=6, min_new_tokens=2)
    assert bool((out.lengths >= 3).all())                               # EOS never among the first 2
    for b in range(4):
        for k in range(2):
            assert EOS not in out.tokens[b, k, :2].tolist()
    opts = BeamOptions(beam=2, n_best=2, max_new_tokens=6, eos_id=EOS, pad_id=PAD)
    cache, first = model.start_decoding(src, 6)
    limited = beam_search(model, cache, first, opts, max_lengths=limits)
    assert bool((limited.lengths <= limits[:, None]).all())
    assert bool((limited.lengths == limits[:, None]).any()), "some hypotheses should be cut at their limit"


def test_no_repeat_ngram_size():
    torch.manual_seed(3)
    model = Transformer(preset("vaswani-tiny")).eval()          # degenerate: repeats one token forever
    src = _sources()
    out, _ = _search(model, src, beam=3, n_best=3, max_new_tokens=12, no_repeat_ngram_size=2)
    for b in range(4):
        for k in range(3):
            hyp = out.tokens[b, k, : out.lengths[b, k]].tolist()
            history = [model.config.start_id] + hyp
            bigrams = list(zip(history, history[1:]))
            assert len(bigrams) == len(set(bigrams)), hyp
    greedy, _ = _search(model, src, beam=1, max_new_tokens=12)
    toks = greedy.tokens[0, 0].tolist()
    assert len(set(zip(toks, toks[1:]))) < len(toks) - 1, "without the option this model repeats itself"


def test_gpt_beam_with_left_padded_prompts():
    torch.manual_seed(0)
    model = GPT(preset("gpt-tiny")).eval()
    prompts = [[5, 9, 11, 3, 7], [8, 4], [6, 6, 12]]
    opts = BeamOptions(beam=3, n_best=3, max_new_tokens=8, eos_id=EOS, pad_id=PAD)
    cache, first = model.start_decoding(prompts, 8, pad_id=PAD)
    together = beam_search(model, cache, first, opts)
    for b, prompt in enumerate(prompts):
        cache, first = model.start_decoding([prompt], 8, pad_id=PAD)
        alone = beam_search(model, cache, first, opts)
        assert torch.equal(together.lengths[b], alone.lengths[0])
        for k in range(3):
            n = int(alone.lengths[0, k])
            assert together.tokens[b, k, :n].tolist() == alone.tokens[0, k, :n].tolist()
    # width 1 = greedy for a decoder-only model too
    one = BeamOptions(beam=1, max_new_tokens=8, eos_id=EOS, pad_id=PAD)
    cache, first = model.start_decoding(prompts, 8, pad_id=PAD)
    out = beam_search(model, cache, first, one)
    cache, first = model.start_decoding(prompts, 8, pad_id=PAD)
    greedy = generate(model, cache, first, SamplingOptions(max_new_tokens=8, eos_id=EOS, pad_id=PAD))
    assert out.tokens[:, 0].tolist() == greedy[:, : out.tokens.shape[2]].tolist()


@pytest.mark.parametrize("options,needle", [
    (dict(beam=0), "beam=0"),
    (dict(beam=2, n_best=3), "n_best=3"),
    (dict(alpha=-0.1), "alpha=-0.1"),
    (dict(length_penalty_kind="fairseq"), "length_penalty_kind"),
    (dict(stopping="never"), "stopping"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(min_new_tokens=9, max_new_tokens=5), "min_new_tokens"),
])
def test_bad_options_raise_one_clear_config_error(options, needle):
    with pytest.raises(ConfigError, match=needle):
        BeamOptions(**options)


def test_beam_wider_than_the_vocabulary_is_refused():
    model, src = _translator(), _sources()
    with pytest.raises(ConfigError, match="beam=51 is invalid for a vocabulary of 50"):
        _search(model, src, beam=51, max_new_tokens=4)


def test_decode_entry_point():
    model, src = _translator(), _sources()
    sampling = SamplingOptions(max_new_tokens=10, eos_id=EOS, pad_id=PAD)
    cache, first = model.start_decoding(src, 10)
    greedy = decode(model, cache, first, sampling)
    cache, first = model.start_decoding(src, 10)
    beam1 = decode(model, cache, first, sampling, beam=4, n_best=2, detokenize=lambda ids: "-".join(map(str, ids)))
    assert greedy.strategy == "greedy" and beam1.strategy == "beam"
    assert all(len(row) == 2 for row in beam1.tokens)
    assert beam1.texts[0][0] == "-".join(map(str, beam1.tokens[0][0]))
    assert all(EOS not in hyp and PAD not in hyp for row in beam1.tokens for hyp in row)
    with pytest.raises(ConfigError, match="n_best=2"):
        cache, first = model.start_decoding(src, 10)
        decode(model, cache, first, sampling, beam=1, n_best=2)
