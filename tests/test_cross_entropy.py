"""The fused, chunked linear + cross-entropy against PyTorch's plain expression.

    reference = F.cross_entropy(F.linear(hidden, weight, bias), target, label_smoothing=ε, reduction="sum")

In float64 the reference keeps float64 logits (the library's ``.float()`` before the loss would
round them to float32 and hide any error below 1e-6); under bf16 autocast it is exactly
``F.linear(...).float()``. Values and gradients must agree; chunking must not show.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from glassformer.errors import ConfigError
from glassformer.nn import linear_cross_entropy

IGNORE = -100


def reference(hidden, weight, target, bias=None, label_smoothing=0.0):
    """PyTorch's own loss on fully materialised logits, in at least float32."""
    logits = F.linear(hidden, weight, bias)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # .float(), but float64 stays float64
    return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=IGNORE,
                           label_smoothing=label_smoothing, reduction="sum")


def problem(rng, batch=3, seq=7, d_model=16, vocab=37, bias=True, ignored=True, dtype=torch.float64):
    """hidden (batch, seq, d_model), weight (vocab, d_model), bias (vocab,) | None, target (batch, seq)."""
    hidden = torch.randn(batch, seq, d_model, generator=rng, dtype=dtype).requires_grad_()
    weight = torch.randn(vocab, d_model, generator=rng, dtype=dtype).requires_grad_()
    b = torch.randn(vocab, generator=rng, dtype=dtype).requires_grad_() if bias else None
    target = torch.randint(0, vocab, (batch, seq), generator=rng)
    if ignored:  # padding at the end of every sequence, and one whole sequence
        target[:, -2:] = IGNORE
        target[0] = IGNORE
    return hidden, weight, b, target


def value_and_grads(fn, inputs, scale=1.7):
    """fn() -> loss; the loss and d(scale · loss)/d(inputs) (scale ≠ 1 checks that backward uses grad_output)."""
    loss = fn()
    return loss.detach(), torch.autograd.grad(loss * scale, inputs)


@pytest.mark.parametrize("chunk_rows", [None, 1, 4, 21, 100])  # 21 rows in all: 4 does not divide it
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("ignored", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_value_and_gradients_match_pytorch_in_float64(rng, label_smoothing, ignored, bias, chunk_rows):
    hidden, weight, b, target = problem(rng, bias=bias, ignored=ignored)
    inputs = [t for t in (hidden, weight, b) if t is not None]
    want, want_grads = value_and_grads(lambda: reference(hidden, weight, target, b, label_smoothing), inputs)
    got, got_grads = value_and_grads(
        lambda: linear_cross_entropy(hidden, weight, target, bias=b, ignore_index=IGNORE,
                                     label_smoothing=label_smoothing, chunk_rows=chunk_rows), inputs)
    assert got.dtype == torch.float64 and got.shape == ()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    for g, w in zip(got_grads, want_grads):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def test_ignored_rows_contribute_nothing(rng):
    hidden, weight, b, target = problem(rng)
    loss = linear_cross_entropy(hidden, weight, target, bias=b, label_smoothing=0.1, chunk_rows=4)
    (grad_hidden,) = torch.autograd.grad(loss, hidden)
    assert (grad_hidden[target == IGNORE] == 0).all()
    assert (grad_hidden[target != IGNORE].abs().sum(-1) > 0).all()
    all_ignored = torch.full_like(target, IGNORE)
    assert linear_cross_entropy(hidden, weight, all_ignored, bias=b, label_smoothing=0.1).item() == 0.0


def test_mean_reduction_is_pytorchs_mean_over_the_counted_tokens(rng):
    hidden, weight, b, target = problem(rng)
    mean = linear_cross_entropy(hidden, weight, target, bias=b, label_smoothing=0.1, reduction="mean")
    expected = F.cross_entropy(F.linear(hidden, weight, b).flatten(0, -2), target.flatten(), ignore_index=IGNORE,
                               label_smoothing=0.1)
    torch.testing.assert_close(mean, expected.to(mean.dtype))
    all_ignored = torch.full_like(target, IGNORE)
    assert linear_cross_entropy(hidden, weight, all_ignored, bias=b, reduction="mean").item() == 0.0
    with pytest.raises(ConfigError, match="reduction"):
        linear_cross_entropy(hidden, weight, target, reduction="avg")


@pytest.mark.parametrize("layout", ["2d", "transposed", "strided"])
def test_two_dimensional_and_non_contiguous_hidden(rng, layout):
    base, weight, b, target = problem(rng, batch=4, seq=6)
    if layout == "2d":  # (rows, d_model)
        hidden, target = base.reshape(-1, base.shape[-1]), target.reshape(-1)
    elif layout == "transposed":  # (seq, batch, d_model) view of (batch, seq, d_model)
        hidden, target = base.transpose(0, 1), target.t()
    else:  # every other d_model feature of a wider tensor: a view with a gap in memory
        hidden = torch.cat([base, base], dim=-1)[..., ::2]
    assert layout == "2d" or not hidden.is_contiguous()
    inputs = [base, weight, b]
    want, want_grads = value_and_grads(lambda: reference(hidden, weight, target, b, 0.1), inputs)
    got, got_grads = value_and_grads(
        lambda: linear_cross_entropy(hidden, weight, target, bias=b, label_smoothing=0.1, chunk_rows=5), inputs)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


class MatmulCounter(TorchDispatchMode):
    """Counts the matrix products (mm, addmm, addmm_) that run while it is active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_no_grad_gives_the_same_value_and_forms_no_gradients(rng):
    hidden, weight, b, target = problem(rng)  # 21 rows in chunks of 8: 3 chunks
    with MatmulCounter() as training:
        loss = linear_cross_entropy(hidden, weight, target, bias=b, label_smoothing=0.1, chunk_rows=8)
    with torch.no_grad(), MatmulCounter() as evaluating:
        loss_no_grad = linear_cross_entropy(hidden, weight, target, bias=b, label_smoothing=0.1, chunk_rows=8)
    assert loss_no_grad.item() == loss.item() and not loss_no_grad.requires_grad
    assert training.count == 3 * 3  # per chunk: the logits, ∂loss/∂hidden, ∂loss/∂weight
    assert evaluating.count == 3  # the logits only


def test_bf16_autocast_is_close_to_the_plain_expression_under_autocast(rng):
    hidden, weight, b, target = problem(rng, batch=4, seq=16, d_model=64, vocab=300, dtype=torch.float32)
    inputs = [hidden, weight, b]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, want_grads = value_and_grads(lambda: reference(hidden, weight, target, b, 0.1), inputs)
        got, got_grads = value_and_grads(
            lambda: linear_cross_entropy(hidden, weight, target, bias=b, label_smoothing=0.1, chunk_rows=16), inputs)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-2, atol=0)
    for g, w, x in zip(got_grads, want_grads, inputs):
        assert g.dtype == x.dtype == torch.float32  # gradients come back in each input's dtype
        assert (g - w).norm() <= 2e-2 * w.norm()


def test_tied_weight_slice_leaves_pad_rows_without_gradient(rng):
    vocab, padded, d_model = 37, 40, 16  # a vocabulary padded to a round size; rows 37..39 are never predicted
    embedding = torch.nn.Embedding(padded, d_model, dtype=torch.float64)
    tokens = torch.randint(0, vocab, (3, 7), generator=rng)
    target = torch.randint(0, vocab, (3, 7), generator=rng)
    target[:, -1] = IGNORE

    def loss_of(fn):
        embedding.zero_grad()
        hidden = torch.tanh(embedding(tokens))  # the same matrix is used as input embedding and output projection
        fn(hidden, embedding.weight[:vocab]).mul(1.7).backward()
        return embedding.weight.grad.clone()

    want = loss_of(lambda h, w: reference(h, w, target, label_smoothing=0.1))
    got = loss_of(lambda h, w: linear_cross_entropy(h, w, target, label_smoothing=0.1, chunk_rows=4))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert (got[vocab:] == 0).all() and (got[:vocab] != 0).any()


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 12),
    d_model=st.integers(1, 9),
    vocab=st.integers(1, 20),
    bias=st.booleans(),
    label_smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_chunking_is_invisible(rows, d_model, vocab, bias, label_smoothing, seed):
    """One row at a time and all rows at once give the same loss and gradients (float64, 1e-10)."""
    rng = torch.Generator().manual_seed(seed)
    hidden = (3 * torch.randn(rows, d_model, generator=rng, dtype=torch.float64)).requires_grad_()
    weight = torch.randn(vocab, d_model, generator=rng, dtype=torch.float64).requires_grad_()
    b = torch.randn(vocab, generator=rng, dtype=torch.float64).requires_grad_() if bias else None
    target = torch.randint(0, vocab, (rows,), generator=rng)
    target[torch.rand(rows, generator=rng) < 0.3] = IGNORE
    inputs = [t for t in (hidden, weight, b) if t is not None]
    results = [
        value_and_grads(lambda: linear_cross_entropy(hidden, weight, target, bias=b,
                                                     label_smoothing=label_smoothing, chunk_rows=c), inputs)
        for c in (1, rows)
    ]
    (one_value, one_grads), (all_value, all_grads) = results
    torch.testing.assert_close(one_value, all_value, rtol=0, atol=1e-10)
    for g1, g_all in zip(one_grads, all_grads):
        torch.testing.assert_close(g1, g_all, rtol=0, atol=1e-10)


def test_bad_arguments_are_named(rng):
    hidden, weight, b, target = problem(rng)
    with pytest.raises(ValueError, match="d_model"):
        linear_cross_entropy(hidden, weight[:, :-1], target)
    with pytest.raises(ValueError, match="target"):
        linear_cross_entropy(hidden, weight, target[:, :-1])
    with pytest.raises(ConfigError, match="chunk_rows=0"):
        linear_cross_entropy(hidden, weight, target, chunk_rows=0)
    with pytest.raises(ConfigError, match="label_smoothing=1.5"):
        linear_cross_entropy(hidden, weight, target, label_smoothing=1.5)
