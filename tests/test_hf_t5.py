"""T5 as options of the encoder–decoder (RMSNorm, no biases, relative position buckets, unscaled attention,
scaled decoder output, gated-GELU and an untied head for v1.1) against Hugging Face with the same weights."""

from __future__ import annotations

import pytest
import torch

from glassformer.generation import BeamOptions, SamplingOptions, beam_search, generate
from glassformer.model_dir import load_model_dir
from glassformer.models import build_model, num_parameters, preset
from glassformer.nn import RelativePositionBias

transformers = pytest.importorskip("transformers")
PAD, EOS = 0, 1


def hf_t5(tmp_path, proj: str, tie: bool, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.T5Config(vocab_size=60, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                                num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                dropout_rate=0.0, feed_forward_proj=proj, tie_word_embeddings=tie,
                                decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS)
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    if not tie:                         # T5 v1.1: an output layer of its own (transformers 5 ties it otherwise)
        hf.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf.lm_head.weight) * 0.05)
    with torch.no_grad():               # larger weights: varied outputs worth comparing
        for p in hf.parameters():
            p.mul_(2.0)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    return hf, load_model_dir(tmp_path).model


def sources():
    g = torch.Generator().manual_seed(3)
    src = torch.randint(3, 60, (3, 30), generator=g)
    src[1, 18:] = PAD
    src[2, 7:] = PAD
    return src


@pytest.mark.parametrize("proj, tie", [("relu", True), ("gated-gelu", False)])
def test_logits_and_cached_steps_equal_hugging_face(tmp_path, proj, tie):
    hf, ours = hf_t5(tmp_path, proj, tie)
    assert ours.config.tie_embeddings == ("all" if tie else "inputs")
    src = sources()
    tgt = torch.randint(3, 60, (3, 25))
    tgt[:, 0] = PAD                               # the decoder starts from the pad token
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=(src != PAD).long(), decoder_input_ids=tgt).logits
        torch.testing.assert_close(ours(src, tgt), theirs, atol=1e-4, rtol=1e-4)
        cache, _ = ours.start_decoding(src, 25)   # one position at a time through the KV cache
        steps = torch.stack([ours.decode_step(tgt[:, i:i + 1], cache) for i in range(25)], 1)
    torch.testing.assert_close(steps, theirs, atol=1e-4, rtol=1e-4)


def test_greedy_and_beam_equal_hugging_face_generate(tmp_path):
    hf, ours = hf_t5(tmp_path, "gated-gelu", False, seed=1)
    src = sources()
    mask = (src != PAD).long()
    with torch.no_grad():
        greedy = hf.generate(input_ids=src, attention_mask=mask, max_new_tokens=15, do_sample=False, num_beams=1)
        cache, first = ours.start_decoding(src, 15)
        mine = generate(ours, cache, first, SamplingOptions(temperature=0.0, max_new_tokens=15, eos_id=EOS,
                                                            pad_id=PAD))
    for row, hyp in zip(mine.tolist(), greedy[:, 1:].tolist()):
        assert [t for t in row if t != PAD] == [t for t in hyp if t != PAD]
    with torch.no_grad():
        out = hf.generate(input_ids=src, attention_mask=mask, num_beams=4, max_new_tokens=12, length_penalty=1.0,
                          early_stopping=False, do_sample=False)
    cache, first = ours.start_decoding(src, 12)
    best = beam_search(ours, cache, first, BeamOptions(beam=4, n_best=1, alpha=1.0, length_penalty_kind="hf",
                                                        stopping="heuristic", max_new_tokens=12, eos_id=EOS,
                                                        pad_id=PAD))
    for b in range(3):
        n = int(best.lengths[b, 0])
        hyp = out[b, 1:]
        assert best.tokens[b, 0, :n].tolist() == hyp[hyp != PAD].tolist()


def test_relative_buckets_follow_t5s_rule():
    enc = RelativePositionBias(1, buckets=32, max_distance=128, bidirectional=True)
    dec = RelativePositionBias(1, buckets=32, max_distance=128, bidirectional=False)
    offsets = torch.tensor([0, 1, 7, 8, 20, 127, 500, -1, -7, -8, -20, -500])
    # encoder: 16 buckets a side; offsets 0..7 exact, then log-spaced up to 128; keys after the query from 16
    assert enc.bucket(offsets).tolist() == [0, 17, 23, 24, 26, 31, 31, 1, 7, 8, 10, 15]
    # decoder: only the past is told apart (32 buckets: 0..15 exact); the same as transformers' T5Attention
    assert dec.bucket(offsets).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 7, 8, 17, 31]


def test_t5_presets_have_the_released_sizes():
    with torch.device("meta"):
        assert num_parameters(build_model(preset("t5-small"))) == 60_506_624      # "60M"
        assert num_parameters(build_model(preset("t5-base"))) == 222_903_552      # "220M"
