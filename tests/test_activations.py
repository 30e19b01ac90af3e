"""GPT-2's tanh-approximated GELU (nn.activations.gelu_tanh): its value and derivative against the
closed form in float64 and against PyTorch's own kernel, on every path (grad, no grad, other dtypes)."""

import math

import pytest
import torch
import torch.nn.functional as F

from glassformer.nn import activation_fn
from glassformer.nn.activations import gelu_tanh


def closed_form(x):
    """½ x (1 + tanh(√(2/π) (x + 0.044715 x³))), written out (float64 in, float64 out)."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def inputs():
    torch.manual_seed(0)
    return torch.cat([torch.randn(50_000) * 3, torch.linspace(-40, 40, 20_001), torch.tensor([0.0, -0.0, 1e-30])])


def test_value_and_derivative_match_the_closed_form_within_float32_rounding():
    x = inputs().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    expected = closed_form(x64)
    (slope64,) = torch.autograd.grad(expected.sum(), x64)
    y = gelu_tanh(x)
    (slope,) = torch.autograd.grad(y.sum(), x)
    assert y.dtype == slope.dtype == torch.float32
    # as close as PyTorch's own float32 kernel is, within a few units in the last place of values near 1
    builtin = F.gelu(x.detach(), approximate="tanh").double()
    assert (builtin - expected).abs().max() < 1e-6
    assert (y.detach().double() - expected).abs().max() < 1e-6
    assert (slope.double() - slope64).abs().max() < 4e-6
    torch.testing.assert_close(y.detach(), F.gelu(x.detach(), approximate="tanh"), rtol=2e-6, atol=1e-6)


def test_gradient_flows_with_the_incoming_gradient_and_no_grad_gives_the_same_values():
    x = (torch.randn(4, 7, 33) * 2).requires_grad_()
    ref = x.detach().clone().requires_grad_()
    upstream = torch.randn(4, 7, 33)
    gelu_tanh(x).backward(upstream)
    F.gelu(ref, approximate="tanh").backward(upstream)
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-5, atol=4e-6)
    with torch.no_grad():
        torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"), rtol=2e-6, atol=1e-6)
    assert gelu_tanh(x.detach()).shape == (4, 7, 33)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes_use_pytorchs_kernel(dtype):
    x = torch.randn(3, 17, dtype=dtype)
    assert torch.equal(gelu_tanh(x), F.gelu(x, approximate="tanh"))


def test_configs_name_it_gelu_tanh():
    assert activation_fn("gelu_tanh") is gelu_tanh
