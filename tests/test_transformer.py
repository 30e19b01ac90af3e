"""Properties the encoder–decoder must always have, checked on ``vaswani-tiny``.

* causality: a target token never influences the outputs before it;
* padding (of the source or of the target batch) never changes a real position;
* cached decoding gives the same tokens and log-probabilities as re-running the prefix;
* the paper's details: embeddings scaled by sqrt(d_model), three-way weight tying.
"""

from __future__ import annotations

import math

import pytest
import torch

from glassformer.generation import SamplingOptions, generate
from glassformer.models import Transformer, num_parameters, preset
from glassformer.nn import sinusoidal_table

PAD = 0
FIRST_WORD = 4          # ids below are pad, bos, eos, unk


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(preset("vaswani-tiny")).eval()


def words(rng, *shape) -> torch.Tensor:
    return torch.randint(FIRST_WORD, 50, shape, generator=rng)


def pad_to(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    return torch.stack([torch.cat([r, r.new_full((length - len(r),), PAD)]) for r in rows])


@torch.no_grad()
def test_output_is_logits_of_the_generator(model, rng):
    src, tgt = words(rng, 2, 5), words(rng, 2, 4)
    out = model(src, tgt)
    assert out.shape == (2, 4, 50) and out.dtype == torch.float32
    enc = model.encode(src)
    hidden = model.decode(tgt, enc.memory, enc.mask).hidden
    torch.testing.assert_close(out, hidden @ model.generator.proj.weight.T, atol=1e-5, rtol=0)


@torch.no_grad()
def test_future_target_tokens_never_change_earlier_outputs(model, rng):
    src, tgt = words(rng, 2, 6), words(rng, 2, 7)
    base = model(src, tgt)
    for j in range(tgt.shape[1]):
        changed = tgt.clone()
        changed[:, j] = FIRST_WORD + (changed[:, j] - FIRST_WORD + 1) % (50 - FIRST_WORD)
        out = model(src, changed)
        torch.testing.assert_close(out[:, :j], base[:, :j], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, j], base[:, j], atol=1e-4)    # the changed position does see it


@torch.no_grad()
def test_source_padding_never_changes_real_outputs(model, rng):
    sources = [words(rng, n) for n in (7, 4, 1)]
    tgt = words(rng, 3, 5)
    alone = [model(s[None], t[None])[0] for s, t in zip(sources, tgt)]
    for length in (7, 10):                        # padded to the longest, and with extra padding columns
        batched = model(pad_to(sources, length), tgt)
        for i, expected in enumerate(alone):
            torch.testing.assert_close(batched[i], expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_target_padding_never_changes_real_positions(model, rng):
    src = words(rng, 3, 6)
    targets = [words(rng, n) for n in (6, 3, 1)]
    batched = model(src, pad_to(targets, 8))
    for i, t in enumerate(targets):
        alone = model(src[i : i + 1], t[None])[0]
        torch.testing.assert_close(batched[i, : len(t)], alone, atol=1e-5, rtol=0)


@torch.no_grad()
def test_explicit_and_fused_attention_give_one_model(model, rng):
    src, tgt = pad_to([words(rng, 5), words(rng, 2)], 5), words(rng, 2, 4)
    fused_enc = model.encode(src)
    explicit_enc = model.encode(src, need_weights=True, use_fused=False)
    torch.testing.assert_close(explicit_enc.memory, fused_enc.memory, atol=1e-5, rtol=0)
    fused = model.decode(tgt, fused_enc.memory, fused_enc.mask).hidden
    explicit = model.decode(tgt, fused_enc.memory, fused_enc.mask, need_weights=True, use_fused=False)
    torch.testing.assert_close(explicit.hidden, fused, atol=1e-5, rtol=0)
    assert len(explicit_enc.weights) == 2 and len(explicit.cross_weights) == 2
    assert torch.all(explicit.cross_weights[0][1, :, :, 2:] == 0)       # never attends to source padding


# --- cached vs uncached decoding ---------------------------------------------------------


class Recorder:
    """Passes ``decode_step`` through and keeps the log-probabilities of every step."""

    def __init__(self, model):
        self.model, self.steps = model, []

    def decode_step(self, tokens, cache):
        scores = self.model.decode_step(tokens, cache)
        self.steps.append(scores.clone())
        return scores


def decode_both_ways(model, src, options):
    results = []
    for use_cache in (True, False):
        recorder = Recorder(model)
        cache, first = model.start_decoding(src, options.max_new_tokens)
        tokens = generate(recorder, cache, first, options, use_cache=use_cache)
        results.append((tokens, torch.stack(recorder.steps, dim=1)))
    return results


@pytest.mark.parametrize(
    "options",
    [
        SamplingOptions(max_new_tokens=12),
        SamplingOptions(max_new_tokens=12, temperature=1.0, seed=7),
        SamplingOptions(max_new_tokens=12, temperature=0.8, top_k=10, top_p=0.9, seed=3),
    ],
    ids=["greedy", "sampling", "top-k-top-p"],
)
def test_cached_decoding_equals_uncached(model, rng, options):
    src = pad_to([words(rng, 6), words(rng, 3), words(rng, 5)], 6)
    (cached, cached_scores), (uncached, uncached_scores) = decode_both_ways(model, src, options)
    assert cached.shape == (3, 12)
    assert torch.equal(cached, uncached)
    torch.testing.assert_close(cached_scores, uncached_scores, atol=1e-5, rtol=0)


@torch.no_grad()
def test_decode_step_equals_teacher_forcing(model, rng):
    # The logits of step t of cached decoding are row t of the teacher-forced forward pass.
    src = words(rng, 2, 5)
    tgt = torch.cat([torch.full((2, 1), model.config.start_id), words(rng, 2, 5)], dim=1)
    full = model(src, tgt)
    cache, _ = model.start_decoding(src, tgt.shape[1])
    steps = [model.decode_step(tgt[:, t : t + 1], cache) for t in range(tgt.shape[1])]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=0)


def test_sampling_is_reproducible_with_a_seed(model, rng):
    src = words(rng, 2, 4)
    runs = []
    for seed in (11, 11, 12):
        cache, first = model.start_decoding(src, 10)
        runs.append(generate(model, cache, first, SamplingOptions(max_new_tokens=10, temperature=1.5, seed=seed)))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


# --- the paper's details ----------------------------------------------------------------


@torch.no_grad()
def test_token_embedding_is_scaled_by_sqrt_d_model(model, rng):
    d_model = model.config.d_model
    seen = {}
    hook = model.encoder.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    try:
        src = words(rng, 2, 5)
        model.encode(src)
    finally:
        hook.remove()
    positions = torch.tensor([[math.sin(p / 10000 ** (2 * (k // 2) / d_model)) if k % 2 == 0
                               else math.cos(p / 10000 ** (2 * (k // 2) / d_model))
                               for k in range(d_model)] for p in range(5)])
    expected = model.src_embed.token.weight[src] * math.sqrt(d_model) + positions
    torch.testing.assert_close(seen["x"], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.src_embed.position.table[:5], sinusoidal_table(5, d_model))


def test_embedding_init_has_unit_variance_after_scaling():
    torch.manual_seed(0)
    model = Transformer(preset("vaswani-tiny", src_vocab_size=4000, tgt_vocab_size=4000))
    scaled = model.tgt_embed.token.weight[1:] * math.sqrt(model.config.d_model)
    assert abs(scaled.std().item() - 1.0) < 0.05
    assert torch.all(model.tgt_embed.token.weight[PAD] == 0)            # the padding row starts at zero


def test_three_way_weight_tying_shares_one_tensor():
    model = Transformer(preset("vaswani-tiny"))
    src, tgt, out = model.src_embed.token.weight, model.tgt_embed.token.weight, model.generator.proj.weight
    assert src is tgt is out
    unique = {p.data_ptr(): p.numel() for p in model.parameters()}
    assert num_parameters(model) == sum(unique.values())
    untied = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert untied - num_parameters(model) == 2 * 50 * 32                  # two copies not counted
    # One tensor: a change through one name is seen through the others.
    with torch.no_grad():
        out[7, 3] = 42.0
    assert src[7, 3].item() == 42.0 and tgt[7, 3].item() == 42.0
    # And the gradient is the sum from all three uses.
    model.zero_grad()
    model(torch.tensor([[7, 8]]), torch.tensor([[1, 7]])).sum().backward()
    assert out.grad is not None and out.grad[7].abs().sum() > 0


def test_partial_and_no_tying():
    decoder_only = Transformer(preset("vaswani-tiny", tie_embeddings="decoder", src_vocab_size=40))
    assert decoder_only.generator.proj.weight is decoder_only.tgt_embed.token.weight
    assert decoder_only.src_embed.token.weight is not decoder_only.tgt_embed.token.weight
    untied = Transformer(preset("vaswani-tiny", tie_embeddings="none"))
    ptrs = {untied.src_embed.token.weight.data_ptr(), untied.tgt_embed.token.weight.data_ptr(),
            untied.generator.proj.weight.data_ptr()}
    assert len(ptrs) == 3


# --- a property over many shapes --------------------------------------------------------

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # hypothesis is a test extra; the checks above do not need it
    given = None

if given is not None:

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        src_len=st.integers(1, 8),
        extra_pad=st.integers(0, 4),
        tgt_len=st.integers(1, 8),
        change_at=st.integers(0, 7),
        seed=st.integers(0, 2**16),
    )
    def test_causality_and_padding_for_any_shape(model, src_len, extra_pad, tgt_len, change_at, seed):
        rng = torch.Generator().manual_seed(seed)
        change_at = min(change_at, tgt_len - 1)
        src, tgt = words(rng, 1, src_len), words(rng, 1, tgt_len)
        with torch.no_grad():
            base = model(src, tgt)
            padded = model(torch.cat([src, src.new_full((1, extra_pad), PAD)], dim=1), tgt)
            changed = tgt.clone()
            changed[0, change_at] = FIRST_WORD + (changed[0, change_at] - FIRST_WORD + 1) % (50 - FIRST_WORD)
            after = model(src, changed)
        torch.testing.assert_close(padded, base, atol=1e-5, rtol=0)
        torch.testing.assert_close(after[:, :change_at], base[:, :change_at], atol=1e-6, rtol=0)
