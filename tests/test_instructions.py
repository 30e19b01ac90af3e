"""The built-in numbers instruction task and the readers of a user's JSONL rows."""

import json
import re

import pytest
from num2words import num2words

from glassformer.data.instructions import (KINDS, is_correct, numbers_instructions, numbers_preferences,
                                           read_preference_rows, read_prompt_rows, read_sft_rows, split_numbers)
from glassformer.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def words():
    return {num2words(m, lang="en"): m for m in range(10_000)}


def numbers_in(text: str) -> set[int]:
    return {int(m.replace(",", "")) for m in re.findall(r"\d[\d,]*", text)}


def test_questions_have_the_answers_a_program_checks():
    rows = numbers_instructions("train", 400, seed=3)
    assert {q.kind for q in rows} == set(KINDS)
    assert all(sum(q.kind == k for q in rows) == 100 for k in KINDS)     # equal shares
    for q in rows:
        if q.kind == "words":
            (n,) = numbers_in(q.prompt)
            assert q.prompt == f"Write {n:,} in English words." and q.answer == num2words(n, lang="en")
        elif q.kind == "add":
            a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", q.prompt).groups())
            assert q.answer == str(a + b)
        elif q.kind == "compare":
            a, b = map(int, re.fullmatch(r"Which is larger, (\d+) or (\d+)\?", q.prompt).groups())
            assert a != b and q.answer == str(max(a, b))
        else:
            german = re.fullmatch(r"Translate '(.+)' into English\.", q.prompt).group(1)
            (n,) = q.numbers
            assert german == num2words(n, lang="de") and q.answer == num2words(n, lang="en")


def test_the_form_of_the_words():
    assert num2words(4071, lang="en") == "four thousand and seventy-one"      # what the answers look like
    assert num2words(312, lang="de") == "dreihundertzwölf"


def test_the_held_out_split_holds_numbers_never_seen_in_training():
    train = numbers_instructions("train", 3000, seed=0)
    for split in ("test", "valid"):
        held = numbers_instructions(split, 600, seed=0)
        seen = {n for q in train for n in q.numbers}
        # every number written in a held-out question or answer, read back from the text itself
        written = {n for q in held for n in numbers_in(q.prompt + " " + q.answer)} | \
                  {n for q in held if q.kind in ("words", "german") for n in q.numbers}
        assert written and not (written & seen)
        assert not ({q.prompt for q in held} & {q.prompt for q in train})
    parts = split_numbers(0)
    pools = {name: {n for pool in p for n in pool} for name, p in parts.items()}
    assert not (pools["train"] & pools["test"]) and not (pools["valid"] & pools["test"])
    assert set().union(*pools.values()) == set(range(10_000))


def test_the_same_seed_gives_the_same_questions_and_another_seed_others():
    assert numbers_instructions("test", 50, seed=1) == numbers_instructions("test", 50, seed=1)
    assert numbers_instructions("test", 50, seed=1) != numbers_instructions("test", 50, seed=2)


def test_preference_pairs_set_the_right_answer_against_a_plausible_wrong_one(words):
    pairs = numbers_preferences("train", 200, seed=0)
    questions = numbers_instructions("train", 200, seed=0)
    for pair, q in zip(pairs, questions):
        assert pair["prompt"] == q.prompt and pair["chosen"] == q.answer and pair["rejected"] != q.answer
        if q.kind == "compare":
            assert pair["rejected"] == str(min(numbers_in(q.prompt)))
        elif q.kind == "add":
            right, wrong = int(q.answer), int(pair["rejected"])
            assert abs(right - wrong) in (1, 10) or sorted(str(right)) == sorted(str(wrong))
        else:
            right, wrong = words[q.answer], words[pair["rejected"]]
            assert abs(right - wrong) in (1, 10) or sorted(str(right)) == sorted(str(wrong))


def test_is_correct_reads_the_first_line_exactly():
    assert is_correct("95", "95")
    assert is_correct("95", " 95 \nWhat is 1 + 1?")
    assert not is_correct("95", "950")
    assert not is_correct("four", "Four")
    assert not is_correct("95", "")


def test_bad_sizes_and_splits_are_refused():
    with pytest.raises(ConfigError, match="split='dev'"):
        numbers_instructions("dev")
    with pytest.raises(ConfigError, match="n=0"):
        numbers_instructions("train", 0)


# -- the readers ------------------------------------------------------------------------------------
def write(tmp_path, *lines, name="rows.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def test_rows_are_read_with_where_they_came_from(tmp_path):
    path = write(tmp_path, {"prompt": "a", "response": "b"}, "",
                 {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
                 {"prompt": "p", "completion": "c"})
    rows = read_sft_rows(path)
    assert rows == [{"prompt": "a", "response": "b"},
                    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
                    {"prompt": "p", "response": "c"}]
    assert [r.line for r in rows] == [1, 3, 4] and rows[1].where() == f"{path} line 3"
    prefs = read_preference_rows(write(tmp_path, {"prompt": "q", "chosen": "1", "rejected": "2"}))
    assert prefs == [{"prompt": "q", "chosen": "1", "rejected": "2"}]
    prompts = read_prompt_rows(write(tmp_path, {"prompt": "q", "answer": "7"}))
    assert prompts == [{"prompt": "q", "answer": "7"}]


SFT_BAD = [
    ("{not json", "line 2: not valid JSON"),
    ('["a", "b"]', "line 2: a JSON list, not an object"),
    ({"prompt": "a"}, "line 2: no 'response' field"),
    ({"response": "a"}, "line 2: no 'prompt' field"),
    ({"prompt": "a", "response": 3}, "line 2: 'response' is a int, not a string"),
    ({"prompt": "a", "response": "  "}, "line 2: 'response' is empty"),
    ({"messages": []}, "line 2: 'messages' must be a non-empty list"),
    ({"messages": [{"role": "user"}]}, "line 2: message 1 must be an object with a 'role' and a string 'content'"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "line 2: message 1 has the unknown role 'robot'"),
    ({"messages": [{"role": "user", "content": "x"}]}, "line 2: no assistant message"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
     "line 2: an assistant message is empty"),
]


@pytest.mark.parametrize("bad, message", SFT_BAD)
def test_each_bad_sft_row_is_refused_in_one_line(tmp_path, bad, message):
    path = write(tmp_path, {"prompt": "fine", "response": "ok"}, bad)
    with pytest.raises(InputError) as e:
        read_sft_rows(path)
    assert f"{path} {message}" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("bad, message", [
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "line 1: 'chosen' equals 'rejected'"),
    ({"prompt": "q", "chosen": "a"}, "line 1: no 'rejected' field"),
    ({"prompt": 1, "chosen": "a", "rejected": "b"}, "line 1: 'prompt' is a int, not a string"),
])
def test_each_bad_preference_row_is_refused_in_one_line(tmp_path, bad, message):
    path = write(tmp_path, bad)
    with pytest.raises(InputError, match=re.escape(f"{path} {message}")):
        read_preference_rows(path)


def test_bad_prompt_rows_and_files_are_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match="line 1: no 'prompt' field"):
        read_prompt_rows(write(tmp_path, {"question": "q"}))
    with pytest.raises(InputError, match="holds no rows"):
        read_sft_rows(write(tmp_path, ""))
    with pytest.raises(InputError, match="is not a file"):
        read_sft_rows(tmp_path / "missing.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "\xe9"}\n')
    with pytest.raises(InputError, match="is not UTF-8"):
        read_sft_rows(tmp_path / "latin1.jsonl")
