"""Hugging Face GPT-2 checkpoints loaded into glassformer's GPT give the same numbers."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from glassformer.errors import CheckpointError, ConfigError  # noqa: E402
from glassformer.generation import SamplingOptions, generate  # noqa: E402
from glassformer.interop import config_from_hf_gpt2, convert_hf_gpt2, load_hf_gpt2  # noqa: E402
from glassformer.model_dir import load_model_dir  # noqa: E402

VOCAB = 97


def hf_model(path, *, tie=True, seed=0):
    """A randomly initialised GPT2LMHeadModel (tiny), saved with save_pretrained."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=48, n_embd=48, n_layer=3, n_head=4,
                                     bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():              # larger weights than 0.02: varied continuations, non-trivial parity
        for name, p in model.named_parameters():
            if p.dim() >= 2 or "ln" in name:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_gpt2")
    return path, hf_model(path)


def test_logits_match_in_fp32(hf_dir, rng):
    path, hf = hf_dir
    ours = load_hf_gpt2(path)
    x = torch.randint(0, VOCAB, (3, 40), generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=1e-4, rtol=0)
    assert ours.lm_head.weight is ours.embed.token.weight


def test_greedy_continuation_matches_hf_generate(hf_dir, rng):
    path, hf = hf_dir
    ours = load_hf_gpt2(path)
    prompt = torch.randint(1, VOCAB, (1, 8), generator=rng)
    theirs = hf.generate(prompt, max_new_tokens=30, min_new_tokens=30, do_sample=False, pad_token_id=0,
                         eos_token_id=None)[:, 8:]
    cache, first = ours.start_decoding(prompt, 30)
    mine = generate(ours, cache, first, SamplingOptions(max_new_tokens=30))
    assert len(set(theirs[0].tolist())) > 3                    # a continuation worth comparing
    assert torch.equal(mine, theirs)


def test_untied_head(tmp_path, rng):
    hf = hf_model(tmp_path, tie=False, seed=1)
    ours = load_hf_gpt2(tmp_path)
    assert ours.lm_head.weight is not ours.embed.token.weight
    x = torch.randint(0, VOCAB, (2, 16), generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=1e-4, rtol=0)


def test_convert_writes_a_glassformer_model_directory(hf_dir, tmp_path, rng):
    path, hf = hf_dir
    out = convert_hf_gpt2(path, tmp_path / "converted")
    loaded = load_model_dir(out)
    assert loaded.config.family == "gpt" and loaded.config.n_layers == 3
    x = torch.randint(0, VOCAB, (2, 20), generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), hf(x).logits, atol=1e-4, rtol=0)


def test_bad_checkpoints_are_refused(hf_dir, tmp_path):
    path, _ = hf_dir
    with pytest.raises(CheckpointError, match="config.json"):
        load_hf_gpt2(tmp_path)
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_hf_gpt2(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_hf_gpt2(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx"):
        config_from_hf_gpt2({**cfg, "scale_attn_by_inverse_layer_idx": True})
    with pytest.raises(ConfigError, match="model_type"):
        config_from_hf_gpt2({**cfg, "model_type": "llama"})


def test_beam_4_matches_hf_generate(hf_dir, rng):
    """Beam search of width 4 over the KV cache gives Hugging Face's best beam."""
    from glassformer.generation import BeamOptions, beam_search

    path, hf = hf_dir
    ours = load_hf_gpt2(path)
    prompt = torch.randint(1, VOCAB, (1, 8), generator=rng)
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=12, min_new_tokens=12, num_beams=4, do_sample=False,
                             pad_token_id=0, eos_token_id=None, length_penalty=1.0, early_stopping=False)[:, 8:]
    cache, first = ours.start_decoding(prompt, 12)
    best = beam_search(ours, cache, first, BeamOptions(beam=4, n_best=1, alpha=1.0, length_penalty_kind="hf",
                                                        stopping="heuristic", max_new_tokens=12, eos_id=None,
                                                        pad_id=0))
    assert best.tokens[0, 0, : int(best.lengths[0, 0])].tolist() == theirs[0].tolist()
