"""Bad values get one clear line, never garbage: non-finite and out-of-range numbers on the command
line, in the library's decoding options and in the server's JSON; text that is not Unicode and text
far too long for the model, refused by the server before any work."""

import argparse
import math

import pytest
import torch
from helpers import one_line_error, run_cli, untrained_gpt, untrained_translator

from glassformer.cli.main import _leaves, build_parser
from glassformer.data.numbers import number_corpus
from glassformer.errors import ConfigError
from glassformer.generation import BeamOptions, SamplingOptions, decode, length_limits
from glassformer.models import build_model, preset
from glassformer.tokenizers import Tokenizer

TEXT = "the quick brown fox jumps over the lazy dog. "
NOT_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"]


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    return untrained_gpt(tmp_path_factory.mktemp("bad") / "gpt", TEXT * 3)


@pytest.fixture(scope="module")
def translator_dir(tmp_path_factory):
    corpus = number_corpus("de", "en", max_number=999, n_train=200, n_valid=10, n_test=10, seed=3)
    return untrained_translator(tmp_path_factory.mktemp("bad") / "translator", corpus, 120, max_len=24)


# -- the command line ------------------------------------------------------------------------------
def float_options():
    """(command, option, its type) for every option of every command that reads a float."""
    found = []
    for leaf in _leaves(build_parser()):
        for action in leaf._actions:
            if not action.option_strings or action.type is None or not callable(action.type):
                continue
            try:
                value = action.type("0.5")
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                continue                                  # not a number that may be fractional
            if isinstance(value, float):
                found.append((leaf.prog, action.option_strings[-1], action.type))
    return found


def test_every_float_option_refuses_nan_and_infinities():
    options = float_options()
    names = {name for _, name, _ in options}
    assert {"--temperature", "--top-p", "--alpha", "--repetition-penalty", "--max-len-a", "--lr",
            "--weight-decay", "--label-smoothing", "--valid-fraction", "--time-limit"} <= names, names
    for prog, name, parse in options:
        assert parse is not float, f"{prog} {name} takes any float (NaN and infinities too)"
        for text in NOT_FINITE:
            with pytest.raises(argparse.ArgumentTypeError, match="is invalid; it must be a number"):
                parse(text)


@pytest.mark.parametrize("args, flag", [
    (["generate", "MODEL", "hi", "--temperature", "nan"], "--temperature"),
    (["generate", "MODEL", "hi", "--temperature", "inf"], "--temperature"),
    (["generate", "MODEL", "hi", "--beam", "2", "--alpha", "nan"], "--alpha"),
    (["generate", "MODEL", "hi", "--top-p", "nan"], "--top-p"),
    (["generate", "MODEL", "hi", "--repetition-penalty", "inf"], "--repetition-penalty"),
    (["generate", "MODEL", "hi", "--seed", "-1"], "--seed"),
    (["translate", "MODEL", "eins", "--alpha", "nan"], "--alpha"),
    (["translate", "MODEL", "eins", "--max-len-a=-inf"], "--max-len-a"),
    (["train", "lm", "--data", "x.txt", "--weight-decay", "nan"], "--weight-decay"),
    (["train", "translation", "--src", "a", "--tgt", "b", "--valid-fraction", "nan"], "--valid-fraction"),
])
def test_a_bad_number_is_one_line_before_any_work(capsys, gpt_dir, args, flag):
    code, out, err = run_cli(capsys, *[gpt_dir if a == "MODEL" else a for a in args])
    one_line_error(code, err, flag, "is invalid")
    assert out == ""


@pytest.mark.parametrize("args, words", [
    (["--temperature", "1e308"], ["temperature=1e+308", "between 0.01 and 100"]),
    (["--temperature", "0.001"], ["temperature=0.001", "0 (greedy)"]),
    (["--repetition-penalty", "1e308"], ["repetition_penalty", "between 0.01 and 100"]),
    (["--beam", "2", "--alpha", "1e308"], ["alpha", "between 0 and 10"]),
])
def test_a_number_out_of_the_sensible_range_is_one_line(capsys, gpt_dir, args, words):
    code, out, err = run_cli(capsys, "generate", gpt_dir, "the", "--max-new-tokens", 4, *args)
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert out == ""


# -- the library --------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, values", [
    ("temperature", [math.nan, math.inf, -math.inf, 1e308, 1e-40, 0.001, 101.0, -1.0, "1", None, True]),
    ("top_p", [math.nan, math.inf, 0.0, 1.5, "0.5"]),
    ("repetition_penalty", [math.nan, math.inf, 1e308, 1e-308, 0.0, -1.0, True]),
    ("seed", [-1, 2 ** 64, 1.5, True, "3"]),
])
def test_sampling_options_refuse_what_cannot_be_computed(field, values):
    for value in values:
        with pytest.raises(ConfigError, match=f"^{field}="):
            SamplingOptions(**{field: value})
    SamplingOptions(temperature=100.0, top_p=1e-9, repetition_penalty=0.01, seed=2 ** 64 - 1)   # the edges are fine


@pytest.mark.parametrize("field, value", [("alpha", math.nan), ("alpha", math.inf), ("alpha", 11.0),
                                          ("alpha", -0.1), ("repetition_penalty", math.nan)])
def test_beam_options_refuse_what_cannot_be_computed(field, value):
    with pytest.raises(ConfigError, match=f"^{field}="):
        BeamOptions(**{field: value})


def test_decode_refuses_a_nan_alpha_and_length_limit_before_any_work():
    model = build_model(preset("gpt-tiny", vocab_size=20)).eval()
    cache, first = model.start_decoding([[5, 6]], 4, 0)
    with pytest.raises(ConfigError, match="^alpha=nan"):
        decode(model, cache, first, SamplingOptions(max_new_tokens=4), beam=2, alpha=math.nan)
    with pytest.raises(ConfigError, match="^max_len_a=nan"):
        length_limits(torch.tensor([[5, 6]]), 0, a=math.nan)


# -- the server ---------------------------------------------------------------------------------------
def client(model_dir):
    """A test client of ``glassformer serve`` that answers a server error as a 500 (as the server does)."""
    pytest.importorskip("fastapi", reason="serve needs fastapi: pip install 'glassformer[serve]'")
    from fastapi.testclient import TestClient

    from glassformer.serve.app import create_app

    return TestClient(create_app(model_dir), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def gpt(gpt_dir):
    return client(gpt_dir)


@pytest.fixture(scope="module")
def translator(translator_dir):
    return client(translator_dir)


def refused(response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    message = response.json()["error"]
    assert "\n" not in message and all(w in message for w in words), message
    return message


def raw(client, path: str, body: str):
    """POST a JSON body as written (NaN, Infinity and "\\ud800" are what Python's JSON reader accepts)."""
    return client.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("body, words", [
    ('{"prompt": "the", "temperature": 1e308}', ["temperature", "100"]),
    ('{"prompt": "the", "temperature": NaN}', ["temperature", "finite"]),
    ('{"prompt": "the", "temperature": Infinity}', ["temperature", "finite"]),
    ('{"prompt": "the", "temperature": -Infinity}', ["temperature", "finite"]),
    ('{"prompt": "the", "temperature": 1.0, "seed": 18446744073709551616}', ["seed", "18446744073709551615"]),
    ('{"prompt": "the", "temperature": 1.0, "seed": -1}', ["seed", "0"]),
    ('{"prompt": "th\\ud800e"}', ["prompt", "lone surrogate", "U+D800"]),
])
def test_generate_refuses_bad_values_with_422(gpt, body, words):
    refused(raw(gpt, "/v1/generate", body), 422, *words)


def test_a_temperature_too_small_to_compute_is_400_naming_the_range(gpt):
    refused(gpt.post("/v1/generate", json={"prompt": "the", "temperature": 1e-40}), 400, "temperature", "0.01")
    ok = gpt.post("/v1/generate", json={"prompt": "the", "temperature": 100, "max_new_tokens": 3,
                                        "seed": 2 ** 64 - 1})
    assert ok.status_code == 200 and len(ok.json()["text"]) > 0, ok.text


@pytest.mark.parametrize("path, body, field", [
    ("/v1/attention", '{"text": "the \\udfff fox"}', "text"),
    ("/v1/embed", '{"texts": ["fine", "\\ud800"]}', "texts"),
    ("/v1/generate", '{"prompt": "the", "\\ud800": 1}', "body"),    # a field name too
])
def test_text_that_is_not_unicode_is_422_on_every_endpoint(gpt, path, body, field):
    refused(raw(gpt, path, body), 422, field)


def test_translate_refuses_a_lone_surrogate(translator):
    refused(raw(translator, "/v1/translate", '{"text": "eins\\ud800"}'), 422, "text", "lone surrogate")
    refused(raw(translator, "/v1/attention", '{"text": "eins", "kind": "cross", "target": "\\udc80"}'), 422,
            "target", "lone surrogate")


def test_a_huge_text_is_413_before_it_is_tokenized(gpt, translator, monkeypatch):
    """5 MB of text took seconds to tokenize before its 413; now no tokenizer sees it."""
    def short_only(method):
        def encode(self, text, *args, **kwargs):
            assert len(text) < 10_000, "a huge text was tokenized"
            return method(self, text, *args, **kwargs)
        return encode

    monkeypatch.setattr(Tokenizer, "encode", short_only(Tokenizer.encode))
    huge = "the fox " * 650_000
    refused(gpt.post("/v1/generate", json={"prompt": huge}), 413, "5,200,000 characters", "at most 64 tokens")
    refused(gpt.post("/v1/attention", json={"text": huge}), 413, "characters")
    refused(translator.post("/v1/translate", json={"text": huge}), 413, "at most 24 tokens")
    refused(translator.post("/v1/attention", json={"text": "eins", "kind": "cross", "target": huge}), 413, "target")


def test_no_page_loads_from_the_network(gpt):
    assert gpt.get("/docs").status_code == 404 and gpt.get("/redoc").status_code == 404
    assert "/v1/generate" in gpt.get("/openapi.json").json()["paths"]
