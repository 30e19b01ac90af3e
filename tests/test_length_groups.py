"""Rows grouped by length (posttrain.length_groups) and the forwards that use the groups — DPO's and
RL's summed log-probabilities (response_logprob_sums with lengths) and SFT's loss (an SFTBatch with
lengths): the grouping is the cheapest partition (checked by brute force), and the grouped forwards
give the same values and gradients as one right-padded forward."""

import itertools
import random

import pytest
import torch
from helpers import assert_same_grads, grads

from glassformer.models import GPT, preset
from glassformer.training.posttrain import GROUP_CHARGE, length_groups, response_logprob_sums
from glassformer.training.sft import Example, collate, sft_loss

VOCAB = 61


def cost(groups, lengths):
    """Padded tokens of ``groups`` plus their charge, as length_groups counts them."""
    charge = GROUP_CHARGE * len(lengths) * max(lengths)
    return sum(len(g) * max(lengths[i] for i in g) + charge for g in groups)


def cheapest(lengths):
    """The cheapest contiguous partition of the rows sorted by length, by trying every one."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = None
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, start = [], 0
        for k, cut in enumerate(cuts, 1):
            if cut:
                groups.append(order[start:k])
                start = k
        groups.append(order[start:])
        best = min(best, cost(groups, lengths)) if best is not None else cost(groups, lengths)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_groups_are_the_cheapest_partition_and_hold_every_row_once(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(3, 12), rng.randint(40, 90)]) for _ in range(rng.randint(1, 11))]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(lengths[a] <= lengths[b] for g in groups for a, b in zip(g, g[1:]))
    assert cost(groups, lengths) == pytest.approx(cheapest(lengths))


def test_rows_of_one_length_stay_one_group_and_far_apart_ones_split():
    assert length_groups([20] * 9) == [list(range(9))]
    assert [sorted(g) for g in length_groups([5, 100, 6, 101, 5, 99])] == [[0, 2, 4], [1, 3, 5]]


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return GPT(preset("gpt-tiny", vocab_size=VOCAB, max_len=96)).train()


def rows(seed=3):
    """Right-padded rows of very different lengths (padding: id 0), their answer targets and lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = [9, 70, 12, 66, 10, 31]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    targets = torch.zeros_like(ids, dtype=torch.bool)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(1, VOCAB, (n,), generator=g)
        targets[r, n // 2:n] = True
    return ids, targets, lengths


def test_grouped_logprob_sums_equal_one_padded_forward(model):
    ids, targets, lengths = rows()
    assert len(length_groups(lengths)) > 1
    weights = torch.randn(len(lengths))                        # a different gradient for every row
    grouped = response_logprob_sums(model, ids, targets, lengths)
    whole = response_logprob_sums(model, ids, targets)
    torch.testing.assert_close(grouped, whole, atol=1e-4, rtol=1e-5)
    assert_same_grads(grads(model, (response_logprob_sums(model, ids, targets, lengths) * weights).sum()),
                grads(model, (response_logprob_sums(model, ids, targets) * weights).sum()))


def test_grouped_sft_loss_equals_one_padded_forward(model):
    ids, targets, lengths = rows(4)
    examples = [Example(ids[r, :n].tolist(), targets[r, :n].tolist()) for r, n in enumerate(lengths)]
    batch = collate(examples, pad_id=0)
    assert batch.lengths == tuple(lengths)
    whole = sft_loss(model, batch.__class__(batch.tokens, batch.labels, batch.n_tokens)).total
    grouped = sft_loss(model, batch).total
    torch.testing.assert_close(grouped, whole, atol=1e-4, rtol=1e-5)
    assert_same_grads(grads(model, sft_loss(model, batch).total),
                grads(model, sft_loss(model, batch.__class__(batch.tokens, batch.labels, batch.n_tokens)).total))
