"""A Hugging Face Marian model ported to our Transformer: same logits, same beam search output."""

from __future__ import annotations

import pytest
import torch

from glassformer.generation import BeamOptions, beam_search
from glassformer.interop.hf_marian import (
    config_from_hf_marian,
    load_hf_marian,
    transformer_from_hf_marian,
)

transformers = pytest.importorskip("transformers")

VOCAB, PAD, EOS = 8000, 7999, 0


def _hf_marian(seed: int = 0):
    """The benchmark's shape (d_model 256, 3+3 layers, 4 heads, d_ff 1024, vocab 8000), random weights.
    A random output bias (with a push on EOS) makes hypotheses end at varied lengths."""
    torch.manual_seed(seed)
    config = transformers.MarianConfig(
        vocab_size=VOCAB, d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, activation_function="swish",
        scale_embedding=True, pad_token_id=PAD, decoder_start_token_id=PAD, eos_token_id=EOS,
        forced_eos_token_id=None, max_position_embeddings=128, dropout=0.0)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 2.0)
        model.final_logits_bias[0, EOS] = 9.0
    return model


def _sources(batch: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    src = torch.randint(2, PAD, (batch, 12), generator=g)
    src[:, -1] = EOS
    src[1, 7:] = PAD
    src[1, 6] = EOS
    return src


def test_config_mapping():
    config = config_from_hf_marian(_hf_marian().config.to_dict())
    assert (config.positional, config.activation, config.norm_first, config.tie_embeddings) == \
        ("sinusoidal-split", "swish", False, "all")
    assert (config.pad_id, config.eos_id, config.start_id, config.final_logits_bias) == (PAD, EOS, PAD, True)


def test_same_logits_as_hugging_face(tmp_path):
    hf = _hf_marian()
    hf.save_pretrained(tmp_path)                 # the file route: config.json + model.safetensors
    ours = load_hf_marian(tmp_path)
    src = _sources()
    tgt = torch.randint(1, PAD, (5, 9), generator=torch.Generator().manual_seed(4))
    tgt[:, 0] = PAD                              # decoding starts from the pad token
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=(src != PAD).long(), decoder_input_ids=tgt).logits
        mine = ours(src, tgt)
    assert (mine.log_softmax(-1) - theirs.log_softmax(-1)).abs().max().item() < 1e-4
    # and incrementally, one token at a time over the KV cache
    cache, first = ours.start_decoding(src, 9)
    steps = [ours.decode_step(tgt[:, i:i + 1], cache) for i in range(9)]
    assert (torch.stack(steps, 1).log_softmax(-1) - theirs.log_softmax(-1)).abs().max().item() < 1e-4


@pytest.mark.parametrize("alpha,early_stopping,stopping", [(0.6, "never", "exact"), (1.0, False, "heuristic"),
                                                           (0.0, True, "first")])
def test_same_beam_search_output_as_hugging_face_generate(alpha, early_stopping, stopping):
    hf = _hf_marian()
    ours = transformer_from_hf_marian(hf.config.to_dict(), hf.state_dict())
    src = _sources()
    with torch.no_grad():
        out = hf.generate(input_ids=src, attention_mask=(src != PAD).long(), num_beams=4, num_return_sequences=4,
                          max_new_tokens=12, length_penalty=alpha, early_stopping=early_stopping,
                          do_sample=False, output_scores=True, return_dict_in_generate=True)
    options = BeamOptions(beam=4, n_best=4, alpha=alpha, length_penalty_kind="hf", stopping=stopping,
                          max_new_tokens=12, eos_id=EOS, pad_id=PAD)
    cache, first = ours.start_decoding(src, 12)
    mine = beam_search(ours, cache, first, options)
    theirs = out.sequences[:, 1:].reshape(5, 4, -1)              # drop the decoder start token
    lengths = set()
    for b in range(5):
        for k in range(4):
            n = int(mine.lengths[b, k])
            lengths.add(n)
            hyp = theirs[b, k]
            assert mine.tokens[b, k, :n].tolist() == hyp[hyp != PAD].tolist()
    assert torch.allclose(mine.scores.reshape(-1), out.sequences_scores, atol=1e-4)
    assert len(lengths) > 1, "hypotheses of several lengths make the comparison meaningful"


def test_same_no_repeat_ngram_and_min_length_as_hugging_face():
    hf = _hf_marian()
    with torch.no_grad():                        # a few very likely tokens: unconstrained outputs repeat
        hf.final_logits_bias.zero_()
        hf.final_logits_bias[0, :20] = 12.0
    ours = transformer_from_hf_marian(hf.config.to_dict(), hf.state_dict())
    src = _sources()
    with torch.no_grad():
        theirs = hf.generate(input_ids=src, attention_mask=(src != PAD).long(), num_beams=4, max_new_tokens=12,
                             min_new_tokens=12, no_repeat_ngram_size=2, length_penalty=0.6, early_stopping=False,
                             do_sample=False)
    options = BeamOptions(beam=4, alpha=0.6, length_penalty_kind="hf", stopping="heuristic", max_new_tokens=12,
                          min_new_tokens=12, no_repeat_ngram_size=2, eos_id=EOS, pad_id=PAD)
    cache, first = ours.start_decoding(src, 12)
    mine = beam_search(ours, cache, first, options)
    assert torch.equal(mine.tokens[:, 0], theirs[:, 1:])
