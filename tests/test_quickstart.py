"""The quickstart's corpus split, its per-range scoring and the command end to end at toy scale."""

from __future__ import annotations

import json

import pytest

from glassformer.data.numbers import number_corpus, number_ranges, range_label, spell, stratified_sizes
from glassformer.errors import ConfigError
from glassformer.training.quickstart import exact_match_by_range, run_quickstart, seen_numbers, training_pairs

SMALL = dict(max_number=2999, n_valid=200, n_test=300)


@pytest.fixture(scope="module")
def corpus():
    return number_corpus("de", "en", seed=5, **SMALL)


# -- ranges and stratified sizes --------------------------------------------------------
def test_number_ranges_by_magnitude():
    assert number_ranges(99_999) == [range(0, 100), range(100, 1000), range(1000, 10_000), range(10_000, 100_000)]
    assert number_ranges(2999) == [range(0, 100), range(100, 1000), range(1000, 3000)]
    assert number_ranges(50) == [range(0, 51)]
    assert [range_label(r) for r in number_ranges(2999)] == ["0-99", "100-999", "1000-2999"]


def test_stratified_sizes_raise_small_ranges_to_a_floor():
    # proportional shares would be 2 / 18 / 180 / 1800
    assert stratified_sizes([100, 900, 9000, 90_000], 2000) == [2, 18, 180, 1800]
    # floors: min(50, a fifth of the range); the largest range gives up the 50 they took
    assert stratified_sizes([100, 900, 9000, 90_000], 2000, 50, 0.2) == [20, 50, 180, 1750]
    # a small n is shared out evenly at most (n // ranges), and the total is always n
    assert stratified_sizes([100, 900, 9000, 90_000], 100, 50, 0.2) == [20, 25, 25, 30]
    assert stratified_sizes([100], 10, 50, 0.2) == [10]
    with pytest.raises(ConfigError, match="cannot draw"):
        stratified_sizes([10, 20], 31)


# -- the corpus split -------------------------------------------------------------------
def test_corpus_test_set_is_stratified_and_splits_are_disjoint(corpus):
    nums = corpus.numbers
    in_range = lambda split, r: sum(n in r for n in nums[split])  # noqa: E731
    ranges = number_ranges(2999)
    assert [in_range("test", r) for r in ranges] == stratified_sizes([100, 900, 2000], 300, 50, 0.2) == [20, 90, 190]
    assert [in_range("valid", r) for r in ranges] == stratified_sizes([80, 810, 1810], 200)   # proportional
    assert len(nums["train"]) == 3000 - 300 - 200
    assert set(nums["train"]) | set(nums["valid"]) | set(nums["test"]) == set(range(3000))
    assert len(set(nums["train"]) | set(nums["valid"]) | set(nums["test"])) == 3000     # disjoint
    assert [len(corpus.train), len(corpus.valid), len(corpus.test)] == [2500, 200, 300]
    n, (de, en) = nums["test"][0], corpus.test[0]
    assert (de, en) == (spell(n, "de"), spell(n, "en"))
    assert nums["test"][:20] != sorted(nums["test"][:20])                # shuffled, not grouped by range


def test_corpus_is_determined_by_its_seed(corpus):
    again = number_corpus("de", "en", seed=5, **SMALL)
    assert again.numbers == corpus.numbers and again.train == corpus.train
    other = number_corpus("de", "en", seed=6, **SMALL)
    assert set(other.numbers["test"]) != set(corpus.numbers["test"])


def test_zero_is_never_held_out():
    """"null"/"zero" occur in no other number: holding 0 out would test luck, not generalisation."""
    held = lambda c: set(c.numbers["test"]) | set(c.numbers["valid"])  # noqa: E731
    small = dict(max_number=99, n_valid=10, n_test=40)
    assert all(0 not in held(number_corpus("de", "en", seed=s, **small)) for s in range(10))
    assert all(0 in number_corpus("de", "en", seed=s, **small).numbers["train"] for s in range(3))
    assert any(0 in held(number_corpus("de", "en", seed=s, always_train=(), **small)) for s in range(10))


def test_corpus_n_train_draws_from_the_rest():
    c = number_corpus("de", "en", max_number=999, n_train=100, n_valid=50, n_test=60, seed=1)
    assert len(c.train) == 100
    assert not set(c.numbers["train"]) & (set(c.numbers["test"]) | set(c.numbers["valid"]))


# -- what the quickstart trains and evaluates on ----------------------------------------
def test_training_pairs_repeat_the_small_numbers(corpus):
    pairs = training_pairs(corpus, {100: 4, 1000: 2})
    train = corpus.numbers["train"]
    every = train + corpus.spoken_numbers["train"]                            # written forms, then spoken ones
    assert len(pairs) == len(every) + 3 * sum(n < 100 for n in every) + sum(100 <= n < 1000 for n in every)
    seven, three_hundred = next(n for n in train if n < 100), next(n for n in train if 100 <= n < 1000)
    assert pairs.count((spell(seven, "de"), spell(seven, "en"))) == 4
    assert pairs.count((spell(three_hundred, "de"), spell(three_hundred, "en"))) == 2
    assert pairs[:len(train)] == corpus.train                                  # every pair once, in order, first
    assert training_pairs(corpus, {}) == corpus.train + corpus.spoken["train"]


def test_seen_numbers_cover_small_ranges_and_sample_large_ones(corpus):
    ranges = number_ranges(2999)
    numbers, pairs = seen_numbers(corpus, ranges, per_range=200, seed=0)
    train = set(corpus.numbers["train"])
    assert set(numbers) <= train
    assert {n for n in numbers if n < 100} == {n for n in train if n < 100}            # 80: all of them
    assert sum(n in ranges[1] for n in numbers) == 200                                   # 810 in training
    assert sum(n in ranges[2] for n in numbers) == 200
    assert pairs[0] == (spell(numbers[0], "de"), spell(numbers[0], "en"))
    assert seen_numbers(corpus, ranges, per_range=200, seed=0)[0] == numbers


def test_exact_match_by_range_on_hand_made_inputs():
    ranges = number_ranges(99_999)
    numbers = [7, 12, 40, 212, 5000, 77_777, 99_999]
    refs = ["seven", "twelve", "forty", "two hundred and twelve", "five thousand", "x", "y"]
    hyps = ["seven", "twelve thousand", "forty ", "two hundred and twelve", "five thousand", "x", "z"]
    out = exact_match_by_range(numbers, hyps, refs, ranges)
    assert out == {"0-99": {"n": 3, "exact_match": 66.67}, "100-999": {"n": 1, "exact_match": 100.0},
                   "1000-9999": {"n": 1, "exact_match": 100.0}, "10000-99999": {"n": 2, "exact_match": 50.0}}
    assert exact_match_by_range([], [], [], ranges[:1]) == {"0-99": {"n": 0, "exact_match": None}}
    with pytest.raises(ValueError, match="align"):
        exact_match_by_range([1, 2], ["one"], ["one"], ranges)
    with pytest.raises(ValueError, match="none of the ranges"):
        exact_match_by_range([100_000], ["x"], ["x"], ranges)


# -- end to end -------------------------------------------------------------------------
def test_run_quickstart_toy_scale_reports_ranges(tmp_path, capsys):
    out = tmp_path / "qs"
    result = run_quickstart(out, steps=2, n_test=40, max_number=199, progress=False)
    stdout = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(result))
    assert saved["sentences"] == 40 and saved["train_steps"] == 2 and saved["max_steps"] == 2
    assert saved["time_limited"] is False
    assert saved["model"] == "average of the checkpoints of steps 2"          # the one evaluated and saved as best
    assert json.loads((out / "best" / "generation.json").read_text(encoding="utf-8"))["averaged_from"]
    assert set(saved["by_range"]) == {"0-99", "100-199"}
    assert saved["by_range"]["0-99"]["held_out"]["n"] == 20 and saved["by_range"]["100-199"]["held_out"]["n"] == 20
    in_valid = stratified_sizes([80, 80], 20)                                  # validation's share of the rest
    assert saved["by_range"]["0-99"]["seen"]["n"] == 80 - in_valid[0]         # every trained number: all seen
    assert saved["by_range"]["100-199"]["seen"]["n"] == 80 - in_valid[1]
    for parts in saved["by_range"].values():
        for part in ("seen", "held_out"):
            assert 0.0 <= parts[part]["exact_match"] <= 100.0
            assert f"{parts[part]['exact_match']:6.2f}% of {parts[part]['n']:>4}" in stdout
    spoken = saved["spoken_forms"]                                             # "hundertzwei" for "einhundertzwei"
    assert spoken["held_out"]["n"] == 20 and spoken["seen"]["n"] == 80 - in_valid[1]
    assert "spoken forms" in stdout and "Some held-out spoken forms:" in stdout
    assert "time limit" not in stdout


def test_run_quickstart_says_when_the_time_limit_cut_training(tmp_path, capsys):
    result = run_quickstart(tmp_path / "qs", steps=50, time_limit=1e-6, n_test=20, max_number=199, progress=False)
    stdout = capsys.readouterr().out
    assert result["time_limited"] is True and result["train_steps"] == 1 and result["max_steps"] == 50
    assert "stopped by the time limit" in stdout and "after 1 of 50 steps" in stdout


def test_batches_without_length_buckets_mix_lengths_within_the_budgets():
    from glassformer.data.batching import token_budget_batches

    lengths = [2] * 50 + [7] * 450
    batches = token_budget_batches(lengths, 700, seed=3, max_sentences=100, by_length=False)
    assert sorted(i for b in batches for i in b) == list(range(500))                  # each example once
    assert all(len(b) <= 100 and len(b) * max(lengths[i] for i in b) <= 700 for b in batches)
    short_per_batch = [sum(lengths[i] == 2 for i in b) for b in batches]
    assert sum(s > 0 for s in short_per_batch) >= len(batches) - 1                    # short ones reach every step
    assert batches == token_budget_batches(lengths, 700, seed=3, max_sentences=100, by_length=False)
    assert batches != token_budget_batches(lengths, 700, seed=3, epoch=1, max_sentences=100, by_length=False)
    bucketed = token_budget_batches(lengths, 700, seed=3, max_sentences=100)
    assert sum(any(lengths[i] == 2 for i in b) for b in bucketed) == 1                # all 50 in one batch
