"""Encoder and decoder layers and stacks against ``torch.nn.Transformer*`` with the same weights.

PyTorch names the sublayers differently; the port below is the whole mapping:

    ours                         torch
    self_attention               self_attn
    self_attention_norm          norm1
    cross_attention              multihead_attn        (decoder)
    cross_attention_norm         norm2                 (decoder)
    feed_forward.linear1/2       linear1/2
    feed_forward_norm            norm2 (encoder) / norm3 (decoder)
    final_norm (pre-norm stack)  the stack's ``norm`` argument
"""

from __future__ import annotations

import pytest
import torch
from helpers import port_mha
from torch import nn

from glassformer.nn import (
    FeedForward,
    TransformerLayer,
    TransformerStack,
)

D, H, FF = 16, 4, 32
ATOL = 1e-5





def port_layer(ours: TransformerLayer, theirs: nn.Module) -> None:
    port_mha(ours.self_attention, theirs.self_attn)
    ours.self_attention_norm.load_state_dict(theirs.norm1.state_dict())
    ours.feed_forward.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.feed_forward.linear2.load_state_dict(theirs.linear2.state_dict())
    if isinstance(theirs, nn.TransformerDecoderLayer):
        port_mha(ours.cross_attention, theirs.multihead_attn)
        ours.cross_attention_norm.load_state_dict(theirs.norm2.state_dict())
        ours.feed_forward_norm.load_state_dict(theirs.norm3.state_dict())
    else:
        ours.feed_forward_norm.load_state_dict(theirs.norm2.state_dict())


def randomise(module: nn.Module, rng) -> None:
    """Torch starts biases at 0 and norm gains at 1; random values make a wrong port visible."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=rng)
            p.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else 0.2 * noise)


def inputs(rng, batch=3, seq=6, src_len=7):
    x = torch.randn(batch, seq, D, generator=rng)
    memory = torch.randn(batch, src_len, D, generator=rng)
    src_keep = torch.arange(src_len)[None, :] < torch.tensor([src_len, 4, 2])[:batch, None]
    return x, memory, src_keep


def torch_causal(seq: int) -> torch.Tensor:
    """torch's additive look-ahead mask: -inf above the diagonal."""
    return nn.Transformer.generate_square_subsequent_mask(seq)


# --- single layers -------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("use_fused", [True, False])
def test_encoder_layer_matches_torch(rng, norm_first, use_fused):
    theirs = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    randomise(theirs, rng)
    ours = TransformerLayer(D, H, FF, dropout=0.0, norm_first=norm_first)
    port_layer(ours, theirs)
    _, x, keep = inputs(rng)                    # a (batch, 7, D) input with padded keys
    reference = theirs(x, src_key_padding_mask=~keep)
    out = ours(x, keep[:, None, None, :], use_fused=use_fused).hidden
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("use_fused", [True, False])
def test_decoder_layer_matches_torch(rng, norm_first, use_fused):
    theirs = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    randomise(theirs, rng)
    ours = TransformerLayer(D, H, FF, cross_attention=True, dropout=0.0, norm_first=norm_first)
    port_layer(ours, theirs)
    x, memory, keep = inputs(rng)
    reference = theirs(x, memory, tgt_mask=torch_causal(x.shape[1]), memory_key_padding_mask=~keep)
    out = ours(x, is_causal=True, memory=memory, memory_mask=keep[:, None, None, :], use_fused=use_fused)
    torch.testing.assert_close(out.hidden, reference, atol=ATOL, rtol=0)


def test_decoder_layer_weights_are_causal_and_respect_padding(rng):
    ours = TransformerLayer(D, H, FF, cross_attention=True, dropout=0.0)
    randomise(ours, rng)
    x, memory, keep = inputs(rng)
    out = ours(x, is_causal=True, memory=memory, memory_mask=keep[:, None, None, :], need_weights=True)
    assert out.self_weights.shape == (3, H, 6, 6) and out.cross_weights.shape == (3, H, 6, 7)
    assert torch.all(out.self_weights.triu(diagonal=1) == 0)
    assert torch.all(out.cross_weights[2, :, :, 2:] == 0)           # item 2 has 2 real source tokens
    torch.testing.assert_close(out.cross_weights.sum(-1), torch.ones(3, H, 6), atol=ATOL, rtol=0)


def test_feed_forward_is_the_papers_formula(rng):
    ff = FeedForward(D, FF)
    randomise(ff, rng)
    x = torch.randn(2, 5, D, generator=rng)
    w1, b1, w2, b2 = ff.linear1.weight, ff.linear1.bias, ff.linear2.weight, ff.linear2.bias
    expected = torch.clamp(x @ w1.T + b1, min=0) @ w2.T + b2        # max(0, x W1 + b1) W2 + b2
    torch.testing.assert_close(ff(x), expected, atol=ATOL, rtol=0)
    # Position-wise: each position is transformed on its own.
    torch.testing.assert_close(ff(x[:, 3:4]), expected[:, 3:4], atol=ATOL, rtol=0)


# --- whole stacks ----------------------------------------------------------------------


def port_stack(ours: TransformerStack, theirs: nn.Module) -> None:
    for our_layer, their_layer in zip(ours.layers, theirs.layers, strict=True):
        port_layer(our_layer, their_layer)
    if theirs.norm is None:
        assert ours.final_norm is None
    else:
        ours.final_norm.load_state_dict(theirs.norm.state_dict())


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_stack_matches_torch(rng, norm_first):
    layer = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    final = nn.LayerNorm(D) if norm_first else None
    theirs = nn.TransformerEncoder(layer, num_layers=3, norm=final, enable_nested_tensor=False)
    randomise(theirs, rng)
    ours = TransformerStack(3, D, n_heads=H, d_ff=FF, dropout=0.0, norm_first=norm_first)
    port_stack(ours, theirs)
    _, x, keep = inputs(rng)
    reference = theirs(x, src_key_padding_mask=~keep)
    out = ours(x, keep[:, None, None, :], need_weights=True)
    torch.testing.assert_close(out.hidden, reference, atol=ATOL, rtol=0)
    assert len(out.self_weights) == 3 and out.cross_weights is None


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_stack_matches_torch(rng, norm_first):
    layer = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    final = nn.LayerNorm(D) if norm_first else None
    theirs = nn.TransformerDecoder(layer, num_layers=2, norm=final)
    randomise(theirs, rng)
    ours = TransformerStack(2, D, n_heads=H, d_ff=FF, dropout=0.0, norm_first=norm_first, cross_attention=True)
    port_stack(ours, theirs)
    x, memory, keep = inputs(rng)
    reference = theirs(x, memory, tgt_mask=torch_causal(x.shape[1]), memory_key_padding_mask=~keep)
    out = ours(x, None, is_causal=True, memory=memory, memory_mask=keep[:, None, None, :])
    torch.testing.assert_close(out.hidden, reference, atol=ATOL, rtol=0)


def test_stack_layers_are_independent():
    stack = TransformerStack(3, D, n_heads=H, d_ff=FF, norm_first=False)
    pointers = {p.data_ptr() for p in stack.parameters()}
    assert len(pointers) == len(list(stack.parameters()))          # no accidental sharing between layers
    assert len(stack.layers) == 3 and stack.final_norm is None


def test_dropout_is_off_in_eval_and_on_in_train(rng):
    layer = TransformerLayer(D, H, FF, dropout=0.5)
    x = torch.randn(2, 4, D, generator=rng)
    layer.eval()
    torch.testing.assert_close(layer(x).hidden, layer(x).hidden, atol=0, rtol=0)
    layer.train()
    torch.manual_seed(0)
    assert not torch.allclose(layer(x).hidden, layer(x).hidden)
