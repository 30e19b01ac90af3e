"""Hugging Face Llama checkpoints loaded into glassformer's GPT (with Llama's options) give the same numbers."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from glassformer.errors import CheckpointError, ConfigError  # noqa: E402
from glassformer.generation import SamplingOptions, generate  # noqa: E402
from glassformer.interop import config_from_hf_llama, convert_hf_llama, load_hf_llama  # noqa: E402
from glassformer.model_dir import load_model_dir  # noqa: E402
from helpers import run_cli  # noqa: E402

VOCAB = 100


def hf_model(path, *, tie=False, seed=0, **options):
    """A randomly initialised LlamaForCausalLM (tiny, grouped-query), saved with save_pretrained."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=tie,
        bos_token_id=None, eos_token_id=None, pad_token_id=0, **options)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():              # larger weights than 0.02: varied continuations, non-trivial parity
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.1 if p.dim() >= 2 else 0.3))
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_llama")
    return path, hf_model(path)


def test_config_mapping(hf_dir):
    path, _ = hf_dir
    config = config_from_hf_llama(json.loads((path / "config.json").read_text()))
    assert (config.norm, config.positional, config.activation, config.gated, config.bias) == \
        ("rmsnorm", "rotary", "silu", True, False)
    assert (config.n_heads, config.n_kv_heads, config.d_model, config.d_ff, config.max_len) == (4, 2, 64, 176, 64)
    assert (config.norm_eps, config.rope_theta, config.tie_embeddings) == (1e-5, 10000.0, False)


def test_logits_match_in_fp32(hf_dir, rng):
    path, hf = hf_dir
    ours = load_hf_llama(path)
    assert ours.lm_head.weight is not ours.embed.token.weight
    x = torch.randint(0, VOCAB, (3, 40), generator=rng)
    with torch.no_grad():
        theirs = hf(x).logits
        assert theirs.std() > 0.5                                  # logits worth comparing
        torch.testing.assert_close(ours(x), theirs, atol=1e-4, rtol=0)


def test_tied_embeddings_and_a_rope_base(tmp_path, rng):
    hf = hf_model(tmp_path, tie=True, seed=1, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    ours = load_hf_llama(tmp_path)
    assert ours.lm_head.weight is ours.embed.token.weight and ours.config.rope_theta == 500.0
    x = torch.randint(0, VOCAB, (2, 30), generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=1e-4, rtol=0)


def test_llama3_frequency_scaling(tmp_path, rng):
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    hf = hf_model(tmp_path, seed=2, rope_parameters=rope)
    ours = load_hf_llama(tmp_path)
    assert ours.config.rope_scaling == {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_len": 64}
    # with a 64-position "pretraining" context every regime occurs: kept, blended and slowed pairs
    plain = 1.0 / 500000.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    wavelength = 2 * torch.pi / plain
    assert (wavelength < 16).any() and ((wavelength > 16) & (wavelength < 64)).any() and (wavelength > 64).any()
    x = torch.randint(0, VOCAB, (2, 60), generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=1e-4, rtol=0)


def test_llama_presets_have_the_released_sizes(capsys):
    from glassformer.models import build_model, num_parameters, preset

    with torch.device("meta"):
        assert num_parameters(build_model(preset("llama2-70b"))) == 68_976_648_192     # "70B"
        assert num_parameters(build_model(preset("llama3.1-8b"))) == 8_030_261_248
    code, out, err = run_cli(capsys, "params", "llama2-70b")
    assert code == 0 and ("68.98B" in out or "68,976,648,192" in out)


def test_biases(tmp_path, rng):
    hf = hf_model(tmp_path, seed=2, attention_bias=True, mlp_bias=True)
    ours = load_hf_llama(tmp_path)
    assert ours.config.bias and ours.decoder.layers[0].feed_forward.linear1.bias.abs().sum() > 0
    x = torch.randint(0, VOCAB, (2, 12), generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=1e-4, rtol=0)


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [40, 41, 42, 43]]


def test_left_padded_batch_matches_hf_with_an_attention_mask(hf_dir):
    path, hf = hf_dir
    ours = load_hf_llama(path)
    cache, first = ours.start_decoding(PROMPTS, 1, pad_id=0)
    with torch.no_grad():
        mine = ours.decode_step(first, cache)                     # next-token logits of each row
        real = torch.tensor([[0] * (first.shape[1] - len(p)) + [1] * len(p) for p in PROMPTS])
        positions = (real.cumsum(-1) - 1).clamp_min(0)            # each row counts from its first real token
        theirs = hf(first, attention_mask=real, position_ids=positions).logits[:, -1]
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


def ours_greedy(model, prompts, n, use_cache=True):
    cache, first = model.start_decoding(prompts, n, pad_id=0)
    return generate(model, cache, first, SamplingOptions(max_new_tokens=n), use_cache=use_cache)


def test_greedy_continuation_matches_hf_generate(hf_dir):
    path, hf = hf_dir
    ours = load_hf_llama(path)
    n = 20
    mine = ours_greedy(ours, PROMPTS, n)                          # one left-padded batch, KV cache
    for row, prompt in zip(mine, PROMPTS):                         # HF, each prompt alone
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        assert len(set(theirs[0, len(prompt):].tolist())) > 3      # a continuation worth comparing
        assert row.tolist() == theirs[0, len(prompt):].tolist()


def test_cached_decoding_equals_uncached(hf_dir):
    path, _ = hf_dir
    ours = load_hf_llama(path)
    assert torch.equal(ours_greedy(ours, PROMPTS, 12), ours_greedy(ours, PROMPTS, 12, use_cache=False))
    x = torch.tensor([PROMPTS[0]])
    cache, first = ours.start_decoding(x[:, :4], 3)
    steps = [ours.decode_step(first, cache)] + [ours.decode_step(x[:, i:i + 1], cache) for i in range(4, 6)]
    with torch.no_grad():
        full = ours(x[:, :6])
    for i, logits in zip(range(3, 6), steps):
        torch.testing.assert_close(logits, full[:, i], atol=1e-5, rtol=0)


def test_convert_writes_a_glassformer_model_directory(hf_dir, tmp_path, rng):
    path, hf = hf_dir
    out = convert_hf_llama(path, tmp_path / "converted")
    loaded = load_model_dir(out)
    assert loaded.config.family == "gpt" and loaded.config.norm == "rmsnorm" and loaded.tokenizer is None
    x = torch.randint(0, VOCAB, (2, 20), generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), hf(x).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("change, words", [
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}}, ["llama3", "lacks"]),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}}, ["rope", "yarn"]),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, ["rope", "linear"]),
    ({"head_dim": 32}, ["head_dim=32", "hidden_size"]),
    ({"attention_bias": True}, ["attention_bias=True", "mlp_bias=False"]),
    ({"hidden_act": "tanh"}, ["hidden_act='tanh'", "silu"]),
    ({"model_type": "gpt2"}, ["model_type", "llama"]),
    ({"num_key_value_heads": 3}, ["n_kv_heads=3", "divides"]),
])
def test_unsupported_configs_are_refused(hf_dir, change, words):
    path, _ = hf_dir
    cfg = json.loads((path / "config.json").read_text())
    with pytest.raises(ConfigError) as info:
        config_from_hf_llama({**cfg, **change})
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_bad_checkpoints_are_refused(hf_dir, tmp_path):
    path, _ = hf_dir
    with pytest.raises(CheckpointError, match="config.json"):
        load_hf_llama(tmp_path)
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_hf_llama(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 128}))
    with pytest.raises(CheckpointError, match=r"has shape \[352, 64\] but the config makes it \[256, 64\]"):
        load_hf_llama(tmp_path)                        # shapes that disagree with config.json
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match="layers.2.input_layernorm"):
        load_hf_llama(tmp_path)                        # a tensor the config calls for is missing


def test_beam_4_matches_hf_generate(hf_dir):
    """Beam search of width 4 over the KV cache gives Hugging Face's best beam, prompt by prompt."""
    from glassformer.generation import BeamOptions, beam_search

    path, hf = hf_dir
    ours = load_hf_llama(path)
    n = 10
    for prompt in PROMPTS:
        with torch.no_grad():
            theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, num_beams=4,
                                 do_sample=False, length_penalty=1.0, early_stopping=False)
        cache, first = ours.start_decoding([prompt], n)
        best = beam_search(ours, cache, first, BeamOptions(beam=4, n_best=1, alpha=1.0, length_penalty_kind="hf",
                                                            stopping="heuristic", max_new_tokens=n, eos_id=None,
                                                            pad_id=0))
        assert best.tokens[0, 0, : int(best.lengths[0, 0])].tolist() == theirs[0, len(prompt):].tolist()


def test_params_writes_out_the_seeds_arithmetic(capsys):
    code, out, _ = run_cli(capsys, "params", "llama2-70b")
    assert code == 0
    assert "one per query head would be 3 × 8,192² = 201.33M" in out          # the seeds' 3·8192² ≈ 201M
    assert "token embedding: 32,000 × 8,192 = 262.14M" in out                 # and 32,000 × 8192 ≈ 262M
