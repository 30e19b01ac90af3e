"""Scaled dot-product and multi-head attention against PyTorch's own implementations.

References: ``torch.nn.functional.scaled_dot_product_attention`` for the core
(both of our paths), ``torch.nn.MultiheadAttention`` with the same weights for
the multi-head layer.  Masks follow two conventions here: ours (True = may
attend) and PyTorch's ``key_padding_mask`` (True = ignore); the tests convert
between them explicitly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import port_mha
from torch import nn

from glassformer.errors import ConfigError
from glassformer.nn import (
    KVCache,
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)

ATOL = 1e-5


def qkv(rng, batch=2, heads=3, q_len=5, k_len=5, d=8, dtype=torch.float32):
    def r(*shape):
        return torch.randn(*shape, generator=rng, dtype=dtype)

    return r(batch, heads, q_len, d), r(batch, heads, k_len, d), r(batch, heads, k_len, d)


def both_paths(q, k, v, mask=None, **kw):
    """(explicit output, explicit weights, fused output) of our core."""
    explicit = scaled_dot_product_attention(q, k, v, mask, need_weights=True, **kw)
    fused = scaled_dot_product_attention(q, k, v, mask, need_weights=False, **kw)
    assert fused.weights is None
    return explicit.output, explicit.weights, fused.output


def bottom_right_causal(q_len, k_len):
    """Query i (the (k_len - q_len + i)-th position) sees keys 0..k_len-q_len+i; built without our helpers."""
    return torch.ones(q_len, k_len, dtype=torch.bool).tril(diagonal=k_len - q_len)


# --- the core: equation (1) --------------------------------------------------------


def test_matches_formula_and_torch_without_mask(rng):
    q, k, v = qkv(rng, q_len=4, k_len=6)
    out, weights, fused = both_paths(q, k, v)
    by_hand = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    reference = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(weights, by_hand, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(fused, reference, atol=ATOL, rtol=0)


def test_padding_mask_matches_torch(rng):
    q, k, v = qkv(rng, q_len=5, k_len=7)
    lengths = torch.tensor([7, 4])
    keep = torch.arange(7)[None, :] < lengths[:, None]          # (batch, k_len)
    mask = keep[:, None, None, :]
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out, weights, fused = both_paths(q, k, v, mask)
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(fused, reference, atol=ATOL, rtol=0)
    # Padded keys get exactly zero weight; each row of weights sums to one.
    assert torch.all(weights[1, :, :, 4:] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5), atol=ATOL, rtol=0)


def test_causal_flag_matches_torch_when_square(rng):
    q, k, v = qkv(rng, q_len=6, k_len=6)
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out, weights, fused = both_paths(q, k, v, is_causal=True)
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(fused, reference, atol=ATOL, rtol=0)
    assert torch.all(weights.triu(diagonal=1) == 0)


@pytest.mark.parametrize("q_len,k_len", [(1, 7), (3, 7)])
def test_causal_with_cache_aligns_bottom_right(rng, q_len, k_len):
    # With a KV cache the q_len new queries are the *last* positions of k_len.
    q, k, v = qkv(rng, q_len=q_len, k_len=k_len)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=bottom_right_causal(q_len, k_len))
    out, _, fused = both_paths(q, k, v, is_causal=True)
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(fused, reference, atol=ATOL, rtol=0)
    # ...and it equals the last q_len rows of full causal attention over k_len queries.
    q_full = torch.cat([torch.randn(2, 3, k_len - q_len, 8, generator=rng), q], dim=2)
    full = F.scaled_dot_product_attention(q_full, k, v, is_causal=True)[:, :, -q_len:]
    torch.testing.assert_close(fused, full, atol=ATOL, rtol=0)


def test_causal_and_padding_together(rng):
    q, k, v = qkv(rng, q_len=3, k_len=6)
    keep = torch.tensor([[True] * 6, [False, False, True, True, True, True]])   # left padding in row 1
    mask = keep[:, None, None, :]
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask & bottom_right_causal(3, 6))
    out, _, fused = both_paths(q, k, v, mask, is_causal=True)
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(fused, reference, atol=ATOL, rtol=0)


def test_mask_helpers_follow_true_means_attend():
    tokens = torch.tensor([[5, 6, 0], [7, 0, 0]])
    assert padding_mask(tokens, pad_id=0).tolist() == [[[[True, True, False]]], [[[True, False, False]]]]
    assert padding_mask(tokens, 0).shape == (2, 1, 1, 3)
    torch.testing.assert_close(causal_mask(2, 4)[0, 0], bottom_right_causal(2, 4))
    torch.testing.assert_close(causal_mask(4)[0, 0], bottom_right_causal(4, 4))


@pytest.mark.parametrize("need_weights", [True, False])
def test_fully_masked_row_gives_zeros_and_finite_gradients(rng, need_weights):
    q, k, v = qkv(rng, q_len=4, k_len=5)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    mask = torch.ones(2, 1, 4, 5, dtype=torch.bool)
    mask[0, :, 2, :] = False                 # query 2 of item 0 may attend to nothing
    mask[1] = False                          # item 1 may attend to nothing at all
    out, weights = scaled_dot_product_attention(q, k, v, mask, need_weights=need_weights)
    assert torch.isfinite(out).all()
    assert torch.all(out[0, :, 2] == 0) and torch.all(out[1] == 0)
    # Rows that can attend are untouched by the empty ones.
    reference = F.scaled_dot_product_attention(q[:1], k[:1], v[:1], attn_mask=mask[:1] | ~mask[:1].any(-1, keepdim=True))
    torch.testing.assert_close(out[0, :, [0, 1, 3]], reference[0, :, [0, 1, 3]], atol=ATOL, rtol=0)
    if need_weights:
        assert torch.all(weights[0, :, 2] == 0) and torch.all(weights[1] == 0)
    (out.square().sum()).backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.all(q.grad[1] == 0)         # nothing flows through an empty row


def test_fully_masked_rows_with_causal_and_padding(rng):
    # A left-padded row under a causal mask: the first queries see only padding.
    q, k, v = qkv(rng, batch=1, q_len=4, k_len=4)
    mask = torch.tensor([False, False, True, True])[None, None, None, :]
    for need_weights in (True, False):
        out, _ = scaled_dot_product_attention(q, k, v, mask, is_causal=True, need_weights=need_weights)
        assert torch.isfinite(out).all()
        assert torch.all(out[0, :, :2] == 0)
        reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask & bottom_right_causal(4, 4))
        torch.testing.assert_close(out[0, :, 2:], reference[0, :, 2:], atol=ATOL, rtol=0)


# --- multi-head attention vs torch.nn.MultiheadAttention ----------------------------





def randomise(module: nn.Module, rng) -> None:
    """Non-trivial values everywhere (torch zero-initialises attention biases)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=rng) * 0.3)


@pytest.mark.parametrize("use_fused", [True, False])
def test_self_attention_matches_torch_multihead(rng, use_fused):
    d, h = 16, 4
    theirs = nn.MultiheadAttention(d, h, batch_first=True)
    randomise(theirs, rng)
    ours = MultiHeadAttention(d, h)
    port_mha(ours, theirs)
    x = torch.randn(3, 6, d, generator=rng)
    lengths = torch.tensor([6, 4, 1])
    keep = torch.arange(6)[None, :] < lengths[:, None]
    ref_out, ref_w = theirs(x, x, x, key_padding_mask=~keep, average_attn_weights=False)
    out, weights = ours(x, mask=keep[:, None, None, :], need_weights=True, use_fused=use_fused)
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)
    torch.testing.assert_close(weights, ref_w, atol=ATOL, rtol=0)
    # Without need_weights no weights come back, and the output is the same.
    plain = ours(x, mask=keep[:, None, None, :], use_fused=use_fused)
    assert plain.weights is None
    torch.testing.assert_close(plain.output, ref_out, atol=ATOL, rtol=0)


def test_causal_self_attention_matches_torch_multihead(rng):
    d, h = 16, 2
    theirs = nn.MultiheadAttention(d, h, batch_first=True)
    randomise(theirs, rng)
    ours = MultiHeadAttention(d, h)
    port_mha(ours, theirs)
    x = torch.randn(2, 5, d, generator=rng)
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)          # torch: True = may NOT attend
    ref_out, _ = theirs(x, x, x, attn_mask=future, need_weights=False)
    torch.testing.assert_close(ours(x, is_causal=True).output, ref_out, atol=ATOL, rtol=0)


@pytest.mark.parametrize("use_fused", [True, False])
def test_cross_attention_matches_torch_multihead(rng, use_fused):
    d, h = 16, 4
    theirs = nn.MultiheadAttention(d, h, batch_first=True)
    randomise(theirs, rng)
    ours = MultiHeadAttention(d, h, cross_attention=True)
    port_mha(ours, theirs)
    x = torch.randn(2, 3, d, generator=rng)            # decoder queries
    memory = torch.randn(2, 7, d, generator=rng)       # encoder output
    keep = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    ref_out, ref_w = theirs(x, memory, memory, key_padding_mask=~keep, average_attn_weights=False)
    out, weights = ours(x, memory, mask=keep[:, None, None, :], need_weights=True, use_fused=use_fused)
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)
    torch.testing.assert_close(weights, ref_w, atol=ATOL, rtol=0)


def test_cross_attention_shares_memory_across_beams(rng):
    # batch = memory batch x beams: each group of queries attends to its own sentence's memory.
    d, h, beams = 16, 4, 3
    ours = MultiHeadAttention(d, h, cross_attention=True)
    randomise(ours, rng)
    memory = torch.randn(2, 5, d, generator=rng)
    keep = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]
    x = torch.randn(2 * beams, 2, d, generator=rng)
    shared = ours(x, memory, mask=keep, need_weights=True)
    copied = ours(x, memory.repeat_interleave(beams, 0), mask=keep.repeat_interleave(beams, 0), need_weights=True)
    torch.testing.assert_close(shared.output, copied.output, atol=ATOL, rtol=0)
    torch.testing.assert_close(shared.weights, copied.weights, atol=ATOL, rtol=0)


def test_cached_self_attention_equals_full_causal(rng):
    d, h = 16, 4
    ours = MultiHeadAttention(d, h)
    randomise(ours, rng)
    x = torch.randn(2, 6, d, generator=rng)
    full = ours(x, is_causal=True).output
    cache = KVCache(1, batch=2, kv_heads=h, d_head=d // h, max_len=6)
    steps, addresses = [], {cache.keys.data_ptr()}
    for chunk in (x[:, :3], x[:, 3:4], x[:, 4:5], x[:, 5:]):    # a prompt of 3, then one at a time
        # attention reads the whole 6-position buffer; the step mask hides what is not written yet
        steps.append(ours(chunk, mask=cache.step_mask(chunk.shape[1]), cache=cache).output)
        cache.advance(chunk.shape[1])
        addresses.add(cache.keys.data_ptr())
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)
    assert addresses == {cache.keys.data_ptr()} and int(cache.position) == cache.length == 6   # written in place
    with pytest.raises(ValueError, match="6"):
        cache.check_room(1)


def test_heads_must_divide_d_model():
    with pytest.raises(ConfigError) as info:
        MultiHeadAttention(30, 4)
    message = str(info.value)
    assert "30" in message and "4" in message and "d_model" in message and "n_heads" in message
    MultiHeadAttention(32, 4)  # divisible: fine
