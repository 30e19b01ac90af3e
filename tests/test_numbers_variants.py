"""The number corpus speaks as people type: German "hundert" / "tausend" for num2words' "einhundert" /
"eintausend", inside numbers too; trained on beside the written forms, and scored on held-out numbers."""

from __future__ import annotations

import pytest

from glassformer.data.numbers import number_corpus, spell, spoken_forms
from glassformer.training.quickstart import exact_match, training_pairs


def spoken(n: int) -> list[str]:
    return spoken_forms(spell(n, "de"), "de")


@pytest.fixture(scope="module")
def corpus():
    return number_corpus("de", "en", max_number=2999, n_valid=200, n_test=300, seed=5)


def has_a_spoken_form(n: int) -> bool:
    """Below 100,000: one thousand (1,000-1,999), or one hundred in the last three digits."""
    return n // 1000 == 1 or n // 100 % 10 == 1


def test_spoken_forms_are_the_german_people_write():
    assert spoken(100) == ["hundert"] and spoken(1000) == ["tausend"]
    assert spoken(102) == ["hundertzwei"] and spoken(1001) == ["tausendeins"]
    assert spoken(2100) == ["zweitausendhundert"] and spoken(21_100) == ["einundzwanzigtausendhundert"]
    assert spoken(1100) == ["eintausendhundert", "tausendeinhundert", "tausendhundert"]   # either "ein", or both
    assert spoken(99_199) == ["neunundneunzigtausendhundertneunundneunzig"]
    assert spoken(100_000) == ["hunderttausend"]          # beyond the quickstart's 0..99,999, still right
    # No "ein" to leave out: not one hundred or one thousand ("einunddreißigtausend" is 31,000).
    for n in (0, 1, 99, 200, 2000, 11_000, 31_000, 21_000, 99_999):
        assert spoken(n) == [], n
    assert "hunderttausend" not in spoken(101_000)         # that would be 100,000
    assert spoken_forms(spell(100, "en"), "en") == [] and spoken_forms(spell(100, "fr"), "fr") == []


def test_every_form_names_one_number():
    forms: dict[str, int] = {}
    for n in [*range(2200), *range(99_000, 99_200), *range(100_000, 101_100)]:
        written = spell(n, "de")
        others = spoken_forms(written, "de")
        for form in [written, *others]:
            assert forms.setdefault(form, n) == n, f"{form!r} is both {forms[form]} and {n}"
        assert bool(others) == has_a_spoken_form(n) or n >= 100_000, n


def test_corpus_has_every_spoken_form_of_each_split_number(corpus):
    for split in ("train", "valid", "test"):
        numbers, forms = corpus.numbers[split], corpus.spoken_numbers[split]
        assert set(forms) == {n for n in numbers if has_a_spoken_form(n)}
        assert all(forms.count(n) == (3 if 1100 <= n < 1200 else 1) for n in set(forms))
        assert corpus.spoken[split] == [(form, spell(n, "en")) for n, (form, _) in zip(forms, corpus.spoken[split])]
        assert len(forms) == len(corpus.spoken[split])
    assert ("hundert", "one hundred") in corpus.spoken["train"] + corpus.spoken["valid"] + corpus.spoken["test"]


def test_held_out_spoken_forms_are_of_numbers_never_trained_on(corpus):
    trained = set(corpus.numbers["train"]) | set(corpus.spoken_numbers["train"])
    assert corpus.spoken_numbers["test"] and not set(corpus.spoken_numbers["test"]) & trained
    trained_sources = {src for src, _ in training_pairs(corpus)}
    assert not {src for src, _ in corpus.spoken["test"]} & trained_sources
    assert not {src for src, _ in corpus.test} & trained_sources


def test_training_holds_the_spoken_forms_as_often_as_the_written_ones(corpus):
    pairs = training_pairs(corpus, {100: 4, 1000: 2})
    n = next(n for n in corpus.numbers["train"] if 100 <= n < 200)
    written, (form,) = spell(n, "de"), spoken(n)
    assert pairs.count((written, spell(n, "en"))) == pairs.count((form, spell(n, "en"))) == 2
    assert {form for form, _ in corpus.spoken["train"]} <= {src for src, _ in pairs}


def test_a_source_language_without_spoken_forms_has_none():
    c = number_corpus("fr", "en", max_number=1999, n_valid=50, n_test=150, seed=0)
    assert all(c.spoken[split] == [] == c.spoken_numbers[split] for split in ("train", "valid", "test"))
    assert training_pairs(c, {}) == c.train


def test_exact_match_of_a_group():
    assert exact_match(["one hundred ", "x"], ["one hundred", "two"]) == {"n": 2, "exact_match": 50.0}
    assert exact_match([], []) == {"n": 0, "exact_match": None}

