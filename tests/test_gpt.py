"""GPT: parameter counts against the released models and papers, the causal property,
cached/batched decoding against the plain forward pass, initialisation and decay groups."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.errors import ConfigError, InputError
from glassformer.generation import SamplingOptions, generate
from glassformer.models import GPT, GPTConfig, build_model, num_parameters, preset
from glassformer.models.config import config_from_dict
from glassformer.training.optim import decay_groups


def tiny(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    model = build_model(preset("gpt-tiny", **kw)).eval()
    # GPT-2's init (std 0.02) makes a random model repeat one token; larger weights give
    # varied, input-dependent continuations, so equality tests can tell outputs apart.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    return model


# -- sizes ---------------------------------------------------------------------------------
# Exact totals of the released GPT-2 checkpoints (Hugging Face GPT2LMHeadModel, tied head).
GPT2_TOTALS = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
               "gpt2-xl": 1_557_611_200}
# GPT-3 paper, Table 2.1 (n_params).
GPT3_TOTALS = {"gpt3-small": 125e6, "gpt3-medium": 350e6, "gpt3-large": 760e6, "gpt3-xl": 1.3e9,
               "gpt3-2.7b": 2.7e9, "gpt3-6.7b": 6.7e9, "gpt3-13b": 13e9, "gpt3-175b": 175e9}


def meta_count(name: str, **overrides) -> int:
    with torch.device("meta"):
        return num_parameters(build_model(preset(name, **overrides)))


@pytest.mark.parametrize("name", sorted(GPT2_TOTALS))
def test_gpt2_presets_match_the_released_checkpoints(name):
    # the released checkpoints have the unpadded 50,257-row embedding; the preset pads it to 50,304
    assert meta_count(name, vocab_multiple=1) == GPT2_TOTALS[name]
    d_model = preset(name).d_model
    assert meta_count(name) - GPT2_TOTALS[name] == (50_304 - 50_257) * d_model


def test_the_padded_vocabulary_is_never_predicted():
    torch.manual_seed(0)
    model = build_model(preset("gpt-tiny", vocab_size=50, vocab_multiple=64))
    assert model.embed.token.weight.shape[0] == 64
    tokens = torch.randint(0, 50, (2, 7))
    assert model(tokens).shape == (2, 7, 50)                  # logits over the real vocabulary only
    model(tokens[:, :-1], tokens[:, 1:]).backward()
    assert model.embed.token.weight.grad[50:].abs().max() == 0   # the pad rows learn nothing


@pytest.mark.parametrize("name", sorted(GPT3_TOTALS))
def test_gpt3_presets_match_table_2_1(name):
    assert meta_count(name) == pytest.approx(GPT3_TOTALS[name], rel=0.02)
    assert preset(name).max_len == 2048 and preset(name).vocab_size == 50257


def test_config_validation_and_round_trip():
    with pytest.raises(ConfigError, match="n_heads"):
        GPTConfig(d_model=100, n_heads=3)
    with pytest.raises(ConfigError, match="dropout"):
        GPTConfig(dropout=1.5)
    c = preset("gpt-tiny")
    assert c.d_ff == 4 * c.d_model
    assert config_from_dict(c.to_dict()) == c


# -- the network -----------------------------------------------------------------------------
def test_loss_is_cross_entropy_of_the_forward_logits(rng):
    model = tiny()
    x = torch.randint(0, 64, (3, 10), generator=rng)
    y = torch.randint(0, 64, (3, 10), generator=rng)
    ref = F.cross_entropy(model(x).reshape(-1, 64), y.reshape(-1))
    torch.testing.assert_close(model.loss(x, y), ref)
    torch.testing.assert_close(model.loss(x, y, reduction="sum"), ref * 30)


@settings(max_examples=15, deadline=None)
@given(position=st.integers(0, 15), new_token=st.integers(0, 63))
def test_a_future_token_never_changes_earlier_outputs(position, new_token):
    model = tiny()
    x = torch.arange(16).remainder(64)[None] * 3 % 64
    changed = x.clone()
    changed[0, position] = new_token
    a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, :position], b[:, :position], rtol=0, atol=1e-6)


def test_explicit_and_fused_attention_agree(rng):
    model = tiny()
    x = torch.randint(0, 64, (2, 12), generator=rng)
    fused = model.hidden_states(x).hidden
    explicit = model.hidden_states(x, use_fused=False, need_weights=True)
    torch.testing.assert_close(explicit.hidden, fused, atol=1e-5, rtol=1e-5)
    w = explicit.self_weights[0]
    assert torch.all(w.triu(1) == 0)                          # causal: nothing above the diagonal


def test_gpt2_initialisation_and_tying():
    torch.manual_seed(0)
    model = build_model(preset("gpt-mini", n_layers=8))
    assert model.lm_head.weight is model.embed.token.weight
    out_proj = torch.cat([l.self_attention.out_proj.weight.flatten() for l in model.decoder.layers])
    linear2 = torch.cat([l.feed_forward.linear2.weight.flatten() for l in model.decoder.layers])
    qkv = torch.cat([l.self_attention.qkv_proj.weight.flatten() for l in model.decoder.layers])
    residual = 0.02 / math.sqrt(2 * 8)
    assert out_proj.std().item() == pytest.approx(residual, rel=0.05)
    assert linear2.std().item() == pytest.approx(residual, rel=0.05)
    assert qkv.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.embed.position.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(l.self_attention.qkv_proj.bias.abs().sum() == 0 for l in model.decoder.layers)


def test_weight_decay_only_on_matrices():
    model = tiny()
    decay, no_decay = decay_groups(model, 0.1)
    decayed = {id(p) for p in decay["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    expected = {id(p) for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n}
    assert decayed == expected and len(expected) == 4 * model.config.n_layers
    assert id(model.embed.token.weight) not in decayed and id(model.lm_head.weight) not in decayed
    assert all(p.dim() == 1 or "embed" in names[id(p)] for p in no_decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_decay_embeddings_decays_every_matrix_as_nanogpt_does():
    """nanoGPT's rule: every parameter of two or more dimensions decays, the tied embedding included."""
    model = tiny()
    decay, no_decay = decay_groups(model, 0.1, decay_embeddings=True)
    unique = {id(p): p for p in model.parameters()}
    assert {id(p) for p in decay["params"]} == {i for i, p in unique.items() if p.dim() >= 2}
    assert id(model.embed.token.weight) in {id(p) for p in decay["params"]}
    assert all(p.dim() == 1 for p in no_decay["params"])


# -- decoding ----------------------------------------------------------------------------------
def test_decode_step_equals_the_forward_pass(rng):
    model = tiny()
    x = torch.randint(0, 64, (2, 9), generator=rng)
    cache, first = model.start_decoding(x[:, :5], max_new_tokens=4)
    steps = [model.decode_step(first, cache)] + [model.decode_step(x[:, i:i + 1], cache) for i in range(5, 9)]
    ref = model(x)
    for i, lp in zip(range(4, 9), steps):
        torch.testing.assert_close(lp, ref[:, i], atol=1e-5, rtol=1e-5)
    assert steps[0].dtype == torch.float32


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [40], [1, 2, 3, 4]]


def greedy(model, prompts, n=12, use_cache=True):
    cache, first = model.start_decoding(prompts, n, pad_id=0)
    return generate(model, cache, first, SamplingOptions(max_new_tokens=n), use_cache=use_cache)


def test_cached_equals_uncached_generation():
    model = tiny()
    torch.testing.assert_close(greedy(model, PROMPTS), greedy(model, PROMPTS, use_cache=False), rtol=0, atol=0)


def test_a_batched_prompt_gives_what_it_gives_alone():
    model = tiny()
    batched = greedy(model, PROMPTS)
    alone = torch.cat([greedy(model, [p]) for p in PROMPTS])
    assert len(set(map(tuple, alone.tolist()))) == len(PROMPTS)      # the continuations differ ...
    assert torch.equal(batched, alone)                                # ... and batching changes none
    # and the next-token distributions agree, not only their argmax
    cache, first = model.start_decoding(PROMPTS, 1, pad_id=0)
    batched_lp = model.decode_step(first, cache)
    for i, p in enumerate(PROMPTS):
        cache, first = model.start_decoding([p], 1)
        torch.testing.assert_close(batched_lp[i], model.decode_step(first, cache)[0], atol=1e-5, rtol=1e-5)


def test_start_decoding_refuses_empty_and_overlong_prompts():
    model = tiny()
    with pytest.raises(InputError, match="at least one token"):
        model.start_decoding([[1, 2], []], 4)
    with pytest.raises(InputError, match="context of 64"):
        model.start_decoding([[1] * 60], 5)
    with pytest.raises(InputError, match="context of 64"):
        model(torch.zeros(1, 65, dtype=torch.long))
