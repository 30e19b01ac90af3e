"""T5 (and Marian) start decoding from the pad token: that row of the embedding is the start token's vector,
initialised and trained like every other, not a padding vector held at zero."""

from __future__ import annotations

import pytest
import torch

from glassformer.models import build_model, preset


def one_step(model) -> torch.Tensor:
    """One Adam step of the cross-entropy on decoder outputs; returns the start row before the step."""
    c = model.config
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, c.src_vocab_size, (4, 9), generator=g)
    targets = torch.randint(3, c.tgt_vocab_size, (4, 6), generator=g)
    tgt = torch.cat([torch.full((4, 1), c.start_id), targets[:, :-1]], dim=1)   # teacher forcing from the start
    before = model.tgt_embed.token.weight[c.start_id].detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(src, tgt, targets).backward()
    optimizer.step()
    return before


@pytest.mark.parametrize("tie", ["inputs", "none", "all"])
def test_the_start_token_is_learned_when_it_is_the_pad_token(tie):
    torch.manual_seed(0)
    model = build_model(preset("t5-tiny", tie_embeddings=tie, gated=tie == "inputs", activation="gelu"))
    assert model.config.start_id == model.config.pad_id == 0
    before = one_step(model)
    assert before.abs().sum() > 0                       # initialised like the other rows ...
    assert before.std() == pytest.approx(model.tgt_embed.token.weight[5:].std().item(), rel=0.5)
    after = model.tgt_embed.token.weight[0].detach()
    assert not torch.equal(after, before)               # ... and trained: the decoder reads it first, every time


def test_a_pad_token_that_is_only_padding_stays_a_zero_padding_vector():
    torch.manual_seed(0)
    model = build_model(preset("vaswani-tiny"))          # starts from <s> (bos_id=1), pad_id=0 only pads
    assert model.config.start_id != model.config.pad_id
    for embedding in (model.src_embed.token, model.tgt_embed.token):
        assert embedding.padding_idx == 0 and not embedding.weight[0].any()
