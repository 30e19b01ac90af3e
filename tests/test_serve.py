"""``glassformer serve``: the JSON API (happy paths, every 4xx with a JSON "error"), concurrency
through a real uvicorn server, and (when a Chromium is installed) the page in a headless browser."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

fastapi = pytest.importorskip("fastapi", reason="serve needs fastapi: pip install 'glassformer[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="serve needs uvicorn: pip install 'glassformer[serve]'")
httpx = pytest.importorskip("httpx", reason="the tests need httpx: pip install 'glassformer[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from helpers import run_cli, untrained_translator  # noqa: E402

from glassformer.data.numbers import number_corpus  # noqa: E402
from glassformer.generation import SamplingOptions  # noqa: E402
from glassformer.generation.embeddings import embed_texts  # noqa: E402
from glassformer.generation.text import complete_batch, prompt_ids  # noqa: E402
from glassformer.generation.translation import translate  # noqa: E402
from glassformer.model_dir import load_model_dir, save_model_dir  # noqa: E402
from glassformer.models import build_model, preset  # noqa: E402
from glassformer.serve.app import create_app  # noqa: E402
from glassformer.tokenizers import Tokenizer  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = Tokenizer.train_char([TEXT * 3])
    return save_model_dir(tmp_path_factory.mktemp("serve") / "gpt",
                          build_model(preset("gpt-tiny", vocab_size=tok.vocab_size)), tok)


@pytest.fixture(scope="module")
def translator_dir(tmp_path_factory):
    corpus = number_corpus("de", "en", max_number=999, n_train=200, n_valid=10, n_test=10, seed=3)
    return untrained_translator(tmp_path_factory.mktemp("serve") / "translator", corpus, 120, max_len=24)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = Tokenizer.train_wordpiece([TEXT] * 20, 120)
    return save_model_dir(tmp_path_factory.mktemp("serve") / "bert",
                          build_model(preset("bert-tiny", vocab_size=tok.vocab_size)), tok)


@pytest.fixture(scope="module")
def gpt(gpt_dir):
    return TestClient(create_app(gpt_dir))


@pytest.fixture(scope="module")
def translator(translator_dir):
    return TestClient(create_app(translator_dir))


@pytest.fixture(scope="module")
def bert(bert_dir):
    return TestClient(create_app(bert_dir))


def error(response, status: int, *words: str) -> str:
    """A refused request: ``status``, a JSON body whose "error" names ``words``."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    for w in words:
        assert w in body["error"], body["error"]
    return body["error"]


# -- happy paths ---------------------------------------------------------------------------------
def test_generate_is_the_library_greedy_output(gpt, gpt_dir):
    loaded = load_model_dir(gpt_dir)
    ids = prompt_ids(loaded.tokenizer, "the quick", loaded.config.max_len, 12)
    expected = complete_batch(loaded.model, loaded.tokenizer, [ids], SamplingOptions(max_new_tokens=12))[0]
    r = gpt.post("/v1/generate", json={"prompt": "the quick", "max_new_tokens": 12})
    assert r.status_code == 200, r.text
    assert r.json() == {"text": expected}
    sampled = gpt.post("/v1/generate", json={"prompt": "the", "max_new_tokens": 5, "temperature": 1.0})
    assert sampled.status_code == 200 and isinstance(sampled.json()["text"], str)


def test_translate_is_the_library_translation(translator, translator_dir):
    loaded = load_model_dir(translator_dir)
    expected = translate(loaded.model, loaded.src_tokenizer, loaded.tokenizer, ["dreiundzwanzig"])[0]
    r = translator.post("/v1/translate", json={"text": "dreiundzwanzig"})
    assert r.status_code == 200, r.text
    assert r.json() == {"translation": expected}


def test_embed_is_the_library_embedding(bert, bert_dir):
    loaded = load_model_dir(bert_dir)
    texts = ["the quick fox", "a lazy dog"]
    r = bert.post("/v1/embed", json={"texts": texts})
    assert r.status_code == 200, r.text
    got = torch.tensor(r.json()["embeddings"])
    assert got.shape == (2, loaded.config.d_model)
    torch.testing.assert_close(got, embed_texts(loaded.model, loaded.tokenizer, texts))


@pytest.mark.parametrize("which, text, n_tokens", [("gpt", "the fox", 7), ("translator", "dreiundzwanzig", None),
                                                   ("bert", "the lazy dog", None)])
def test_attention_rows_are_probabilities(request, which, text, n_tokens):
    client = request.getfixturevalue(which)
    info = client.get("/v1/info").json()
    r = client.post("/v1/attention", json={"text": text, "layer": info["layers"] - 1, "head": info["heads"] - 1})
    assert r.status_code == 200, r.text
    body = r.json()
    n = len(body["tokens"])
    assert n >= 2 and all(isinstance(t, str) for t in body["tokens"])
    if n_tokens is not None:
        assert n == n_tokens
    if which == "bert":
        assert body["tokens"][0] == "[CLS]" and body["tokens"][-1] == "[SEP]"
    weights = torch.tensor(body["weights"])
    assert weights.shape == (n, n)
    torch.testing.assert_close(weights.sum(-1), torch.ones(n))
    if which == "gpt":                                   # causal: nothing above the diagonal
        assert torch.all(weights.triu(1) == 0)


def test_openapi_lists_the_endpoints_and_the_page_has_an_input(gpt):
    doc = gpt.get("/openapi.json").json()
    for path in ("/v1/generate", "/v1/translate", "/v1/embed", "/v1/attention"):
        assert "post" in doc["paths"][path], path
    schemas = doc["components"]["schemas"]
    assert {"prompt", "max_new_tokens", "temperature"} <= set(schemas["GenerateRequest"]["properties"])
    assert "weights" in schemas["AttentionResponse"]["properties"]
    page = gpt.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<textarea id="input"' in page.text and "/v1/generate" in page.text and "/v1/attention" in page.text
    assert "http://" not in page.text and "https://" not in page.text      # nothing fetched from the network


# -- refusals ------------------------------------------------------------------------------------
def test_malformed_and_invalid_requests_are_422(gpt):
    error(gpt.post("/v1/generate", content=b'{"prompt": ', headers={"Content-Type": "application/json"}), 422)
    error(gpt.post("/v1/generate", json={}), 422, "prompt")
    error(gpt.post("/v1/generate", json={"prompt": 5}), 422, "prompt")
    error(gpt.post("/v1/generate", json={"prompt": "the", "max_new_tokens": 0}), 422, "max_new_tokens")
    error(gpt.post("/v1/generate", json={"prompt": "the", "max_new_tokens": 513}), 422, "max_new_tokens")
    error(gpt.post("/v1/generate", json={"prompt": "the", "temperature": -1}), 422, "temperature")
    error(gpt.post("/v1/generate", json={"prompt": "the", "temprature": 1}), 422, "temprature")
    error(gpt.post("/v1/attention", json={"text": "the", "layer": "one"}), 422, "layer")
    error(gpt.post("/v1/embed", json={"texts": "not a list"}), 422, "texts")
    error(gpt.post("/v1/embed", json={"texts": []}), 422, "texts")


def test_too_long_is_413(gpt, translator, bert):
    error(gpt.post("/v1/generate", json={"prompt": "the fox " * 20, "max_new_tokens": 10}), 413, "tokens")
    error(gpt.post("/v1/attention", json={"text": "the fox " * 20}), 413, "at most 64")
    error(translator.post("/v1/translate", json={"text": "dreiundzwanzig " * 30}), 413, "at most 24")
    error(bert.post("/v1/embed", json={"texts": ["ok", "the lazy dog " * 100]}), 413, "text 1")


def test_wrong_endpoint_for_the_model_type_is_400(gpt, translator, bert):
    error(gpt.post("/v1/translate", json={"text": "the"}), 400, "'gpt'", "/v1/generate")
    error(gpt.post("/v1/embed", json={"texts": ["the"]}), 400, "'gpt'")
    error(translator.post("/v1/generate", json={"prompt": "eins"}), 400, "'transformer'", "/v1/translate")
    error(bert.post("/v1/translate", json={"text": "the"}), 400, "'bert'", "/v1/embed")


def test_layer_and_head_out_of_range_name_the_range(gpt):
    info = gpt.get("/v1/info").json()
    error(gpt.post("/v1/attention", json={"text": "the", "layer": info["layers"], "head": 0}), 422,
          f"0..{info['layers'] - 1}")
    error(gpt.post("/v1/attention", json={"text": "the", "layer": -1, "head": 0}), 422, "layer")
    error(gpt.post("/v1/attention", json={"text": "the", "layer": 0, "head": info["heads"]}), 422,
          f"0..{info['heads'] - 1}")


def test_text_that_tokenizes_to_nothing_is_400(gpt, translator, bert):
    error(gpt.post("/v1/generate", json={"prompt": ""}), 400, "empty")
    error(gpt.post("/v1/attention", json={"text": "   "}), 400, "empty")
    error(gpt.post("/v1/generate", json={"prompt": "ЖЖЖ"}), 400, "unknown")      # a library InputError
    error(translator.post("/v1/translate", json={"text": " "}), 400, "empty")
    error(bert.post("/v1/embed", json={"texts": ["fine", ""]}), 400, "text 1")
    error(gpt.get("/v1/nowhere"), 404)


def test_cli_serve_refuses_a_missing_model_dir_in_one_line(capsys, tmp_path):
    code, out, err = run_cli(capsys, "serve", tmp_path / "absent", "--port", "0")
    assert code == 2 and err.startswith("glassformer: error:") and len(err.strip().splitlines()) == 1, err


# -- a real server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(gpt_dir):
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(gpt_dir), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    assert not thread.is_alive()


def test_parallel_requests_equal_sequential_ones(server):
    requests = [("/v1/generate", {"prompt": p, "max_new_tokens": 8 + i % 5})
                for i, p in enumerate(["the", "quick", "brown fox", "lazy dog", "jumps", "over", "a", "the end"])]
    requests += [("/v1/attention", {"text": t, "layer": i % 2, "head": i % 4})
                 for i, t in enumerate(["the", "quick fox", "brown", "lazy dog", "jumps over", "the dog", "o", "fox"])]
    with httpx.Client(base_url=server, timeout=60) as client:
        sequential = [client.post(path, json=body) for path, body in requests]
        assert all(r.status_code == 200 for r in sequential), [r.text for r in sequential]

        def send(item):
            with httpx.Client(base_url=server, timeout=60) as own:
                return own.post(item[0], json=item[1])

        with ThreadPoolExecutor(max_workers=16) as pool:
            parallel = list(pool.map(send, requests))
    assert len(parallel) == 16
    for item, seq, par in zip(requests, sequential, parallel):
        assert par.status_code == 200, par.text
        assert par.json() == seq.json(), item


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def test_page_renders_in_headless_chromium(server):
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip(f"no headless browser: none of {', '.join(BROWSERS)} is on PATH")
    dom = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom", server + "/"],
                         capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr
    assert '<textarea id="input"' in dom.stdout and 'id="run"' in dom.stdout
