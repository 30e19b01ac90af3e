"""The post-training log-probabilities (posttrain.token_logprobs, response_logprob_sums) and SFT's loss
through the fused, chunked output layer at the wanted positions only: equal to the plain log-softmax of
the whole logits, values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_grads, grads

from glassformer.models import GPT, preset
from glassformer.nn.cross_entropy import linear_cross_entropy
from glassformer.nn.lora import LoRAConfig, add_lora
from glassformer.training.posttrain import response_logprob_sums, token_logprobs
from glassformer.training.sft import PER_TOKEN_BELOW, SFTBatch, sft_loss

VOCAB = 97


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return GPT(preset("gpt-tiny", vocab_size=VOCAB, max_len=64)).train()


def plain_logprobs(model, ids):
    """The reference: every position's logits, log-softmax, the next token's entry."""
    return F.log_softmax(model(ids[:, :-1]).float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def batch(seed=1, rows=3, seq=17):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (rows, seq), generator=g)
    mask = torch.rand(rows, seq - 1, generator=g) < 0.3          # the wanted positions (a response's)
    mask[:, -1] = True
    weights = torch.randn(rows, seq - 1, generator=g)            # a different gradient at every position
    return ids, mask, weights


def test_every_position_equals_the_plain_log_softmax_values_and_gradients(model):
    ids, _, weights = batch()
    ours = token_logprobs(model, ids)
    reference = plain_logprobs(model, ids)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert_same_grads(grads(model, (token_logprobs(model, ids) * weights).sum()),
                      grads(model, (plain_logprobs(model, ids) * weights).sum()))


def test_masked_positions_are_computed_alone_and_the_rest_are_zero(model):
    ids, mask, weights = batch()
    ours = token_logprobs(model, ids, mask)
    reference = plain_logprobs(model, ids)
    torch.testing.assert_close(ours[mask], reference[mask], atol=1e-5, rtol=0)
    assert (ours[~mask] == 0).all()
    # the gradient of the masked positions only: a position left out contributes nothing
    assert_same_grads(grads(model, (token_logprobs(model, ids, mask) * weights).sum()),
                      grads(model, (plain_logprobs(model, ids) * weights * mask).sum()))


def test_response_sums_equal_the_plain_masked_sums_values_and_gradients(model):
    ids, mask, _ = batch(seed=2)
    targets = torch.cat([torch.zeros(ids.shape[0], 1, dtype=torch.bool), mask], dim=1)     # (batch, seq)
    ours = response_logprob_sums(model, ids, targets)
    reference = (plain_logprobs(model, ids) * mask).sum(-1)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    # DPO's shape of gradient: one factor per row
    factor = torch.tensor([0.7, -1.3, 2.0])
    assert_same_grads(grads(model, (response_logprob_sums(model, ids, targets) * factor).sum()),
                      grads(model, ((plain_logprobs(model, ids) * mask).sum(-1) * factor).sum()))


def test_gradients_reach_the_lora_adapters_only_and_equal_the_plain_ones(model):
    add_lora(model, LoRAConfig(r=4, targets=("q", "v")))
    for p in model.parameters():                                 # B starts at zero: move it off, so A gets a gradient
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    ids, mask, weights = batch(seed=3)
    ours = grads(model, (token_logprobs(model, ids, mask) * weights).sum())
    assert ours and all("lora" in name for name in ours)
    assert_same_grads(ours, grads(model, (plain_logprobs(model, ids) * weights * mask).sum()))


def test_without_gradients_the_values_are_the_same(model):
    ids, mask, _ = batch(seed=4)
    with torch.no_grad():
        ours = token_logprobs(model.eval(), ids, mask)
        reference = plain_logprobs(model, ids)
    assert not ours.requires_grad
    torch.testing.assert_close(ours[mask], reference[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_per_row_fused_cross_entropy_equals_pytorchs_in_several_chunks(smoothing):
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(4, 9, 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(VOCAB, 16, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(VOCAB, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, VOCAB, (4, 9), generator=g)
    target[torch.rand(4, 9, generator=g) < 0.4] = -100
    upstream = torch.randn(4, 9, generator=g, dtype=torch.float64)
    ours = linear_cross_entropy(hidden, weight, target, bias=bias, label_smoothing=smoothing, reduction="none",
                                chunk_rows=3)
    reference = F.cross_entropy(F.linear(hidden, weight, bias).transpose(1, 2), target, label_smoothing=smoothing,
                                reduction="none")
    torch.testing.assert_close(ours, reference, atol=1e-10, rtol=0)
    assert (ours[target == -100] == 0).all()
    mine = torch.autograd.grad((ours * upstream).sum(), (hidden, weight, bias))
    theirs = torch.autograd.grad((reference * upstream).sum(), (hidden, weight, bias))
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    assert (mine[0][target == -100] == 0).all()                  # an ignored row never reaches the output layer


@pytest.mark.parametrize("share", [0.3, 1.0])           # a response's targets (per token) / every token (the sum)
def test_the_sft_loss_equals_the_plain_cross_entropy_values_and_gradients(model, share):
    ids, _, _ = batch(seed=6, rows=4)
    g = torch.Generator().manual_seed(7)
    labels = ids[:, 1:].masked_fill(torch.rand(ids.shape[0], ids.shape[1] - 1, generator=g) >= share, -100)
    sft_batch = SFTBatch(ids[:, :-1], labels, int((labels != -100).sum()))
    assert (sft_batch.n_tokens < PER_TOKEN_BELOW * labels.numel()) == (share < 1)     # both paths are taken
    out = sft_loss(model, sft_batch)
    reference = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), labels.flatten(), reduction="sum")
    assert out.n_tokens == sft_batch.n_tokens
    torch.testing.assert_close(out.total, reference, atol=1e-4, rtol=1e-6)
    assert_same_grads(grads(model, sft_loss(model, sft_batch).total), grads(model, reference))
