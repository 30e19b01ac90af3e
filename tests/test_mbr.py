"""Minimum Bayes Risk decoding: the consensus candidate wins; candidates come batched."""

from __future__ import annotations

import pytest
import torch
from sacrebleu.metrics import BLEU

from glassformer.errors import ConfigError
from glassformer.generation import SamplingOptions, decode, mbr_decode, mbr_rank
from glassformer.models import Transformer, preset


def test_the_candidate_closest_to_the_others_wins():
    candidates = ["the cat sat on the mat", "the cat sat on a mat", "a dog ran in the park", "the cat sat on the mat"]
    for utility in ("bleu", "chrf"):
        order, expected = mbr_rank(candidates, utility)
        assert order[0] == 0                      # the repeated, central one
        assert order[-1] == 2                     # the outlier
        assert expected == sorted(expected, reverse=True)
        assert len(order) == 3                    # distinct candidates only


def test_expected_utility_is_the_leave_one_out_mean():
    candidates = ["a b c d", "a b c e", "x y z w"]
    order, expected = mbr_rank(candidates, "bleu")
    bleu = BLEU(effective_order=True)
    by_index = dict(zip(order, expected))
    want = (bleu.sentence_score(candidates[1], [candidates[0]]).score
            + bleu.sentence_score(candidates[1], [candidates[2]]).score) / 2
    assert by_index[1] == pytest.approx(want)


def test_unknown_utility_is_a_config_error():
    with pytest.raises(ConfigError, match="utility 'rouge' is unknown"):
        mbr_rank(["a"], "rouge")


def test_mbr_decode_from_samples_and_from_a_beam():
    torch.manual_seed(0)
    model = Transformer(preset("vaswani-tiny")).eval()
    src = torch.randint(4, 50, (3, 6))
    sampling = SamplingOptions(max_new_tokens=8, eos_id=2, pad_id=0, seed=7)
    cache, first = model.start_decoding(src, 8)
    choices = mbr_decode(model, cache, first, n=6, utility="chrf", sampling=sampling)
    assert len(choices) == 3
    for choice in choices:
        assert choice.expected_utility == sorted(choice.expected_utility, reverse=True)
        assert choice.best == " ".join(map(str, choice.tokens[0]))
    # the same seed gives the same candidates and choice
    cache, first = model.start_decoding(src, 8)
    again = mbr_decode(model, cache, first, n=6, utility="chrf", sampling=sampling)
    assert [c.texts for c in again] == [c.texts for c in choices]
    assert cache.memory.shape[0] == 3            # the encoder output was not copied per candidate
    cache, first = model.start_decoding(src, 8)
    out = decode(model, cache, first, sampling, mbr=True, mbr_source="beam", mbr_candidates=4, n_best=2)
    assert out.strategy == "mbr" and all(len(row) == 2 for row in out.tokens)
    with pytest.raises(ConfigError, match="n_best=5"):
        cache, first = model.start_decoding(src, 8)
        decode(model, cache, first, sampling, mbr=True, mbr_candidates=4, n_best=5)
