"""Positional encoding (§3.5) against the paper's formula, computed here in plain Python.

    PE(pos, 2i)   = sin(pos / 10000^(2i / d_model))
    PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model))
"""

from __future__ import annotations

import math

import pytest
import torch

from glassformer.nn import (
    InputEmbedding,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_table,
)


def paper_pe(pos: int, k: int, d_model: int) -> float:
    """Entry k of the encoding of position pos, straight from the formula (math module, float64)."""
    i = k // 2
    angle = pos / 10000 ** (2 * i / d_model)
    return math.sin(angle) if k % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize("d_model", [8, 32, 512, 7])
def test_interleaved_table_is_the_papers_formula(d_model):
    max_len = 60
    expected = torch.tensor([[paper_pe(p, k, d_model) for k in range(d_model)] for p in range(max_len)])
    table = sinusoidal_table(max_len, d_model)
    assert table.shape == (max_len, d_model) and table.dtype == torch.float32
    torch.testing.assert_close(table, expected.float(), atol=1e-6, rtol=0)


def test_known_values():
    table = sinusoidal_table(3, 4)
    # pos 0: sin 0 = 0 in even, cos 0 = 1 in odd dimensions.
    assert table[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    # pos 1, i = 0: angle 1; i = 1: angle 1/100.
    torch.testing.assert_close(table[1], torch.tensor([math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)]))


def test_split_layout_is_a_permutation_of_the_same_values():
    d_model = 16
    interleaved, split = sinusoidal_table(20, d_model), sinusoidal_table(20, d_model, layout="split")
    torch.testing.assert_close(split[:, : d_model // 2], interleaved[:, 0::2], atol=0, rtol=0)   # all sines
    torch.testing.assert_close(split[:, d_model // 2 :], interleaved[:, 1::2], atol=0, rtol=0)   # all cosines
    with pytest.raises(ValueError, match="layout"):
        sinusoidal_table(4, 4, layout="zigzag")


def test_relative_position_is_a_linear_function():
    # §3.5: for a fixed offset k, PE(pos + k) is a linear function of PE(pos) — a rotation per pair.
    d_model, k = 16, 5
    table = sinusoidal_table(40, d_model).double()
    for i in range(d_model // 2):
        w = 1 / 10000 ** (2 * i / d_model)
        c, s = math.cos(k * w), math.sin(k * w)
        rotation = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)      # [sin, cos] @ R
        pair = table[:, 2 * i : 2 * i + 2]
        torch.testing.assert_close(pair[:-k] @ rotation, pair[k:], atol=1e-5, rtol=0)


def test_module_looks_up_positions_and_is_not_saved():
    pe = SinusoidalPositionalEncoding(8, max_len=10)
    positions = torch.tensor([[3, 4], [0, 9]])
    torch.testing.assert_close(pe(positions), sinusoidal_table(10, 8)[positions])
    assert list(pe.parameters()) == [] and "table" not in pe.state_dict()     # a function of the config


def test_input_embedding_is_scaled_tokens_plus_positions(rng):
    d_model = 16
    emb = InputEmbedding(30, d_model, max_len=12, dropout=0.0)
    tokens = torch.randint(0, 30, (2, 5), generator=rng)
    positions = torch.arange(5)
    pe = torch.tensor([[paper_pe(p, k, d_model) for k in range(d_model)] for p in range(5)])
    expected = emb.token.weight[tokens] * math.sqrt(d_model) + pe
    torch.testing.assert_close(emb(tokens, positions), expected, atol=1e-5, rtol=0)
    unscaled = InputEmbedding(30, d_model, max_len=12, scale_embedding=False)
    torch.testing.assert_close(unscaled(tokens, positions), unscaled.token.weight[tokens] + pe, atol=1e-5, rtol=0)


def test_learned_positions_are_trained_parameters():
    learned = LearnedPositionalEmbedding(8, max_len=10)
    assert [p.shape for p in learned.parameters()] == [torch.Size([10, 8])]
    torch.testing.assert_close(learned(torch.tensor([2, 7])), learned.weight[[2, 7]])
