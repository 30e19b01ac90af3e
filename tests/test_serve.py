"""``glassformer serve``: the JSON API (happy paths, every 4xx with a JSON "error"), concurrency
through a real uvicorn server, and (when a Chromium is installed) the page in a headless browser."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

fastapi = pytest.importorskip("fastapi", reason="serve needs fastapi: pip install 'glassformer[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="serve needs uvicorn: pip install 'glassformer[serve]'")
httpx = pytest.importorskip("httpx", reason="the tests need httpx: pip install 'glassformer[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from helpers import run_cli, screenshot, untrained_gpt, untrained_translator, wait_for  # noqa: E402

from glassformer.data.numbers import number_corpus  # noqa: E402
from glassformer.explain.attention import attention_modules, capture_attention  # noqa: E402
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
    return untrained_gpt(tmp_path_factory.mktemp("serve") / "gpt", TEXT * 3)


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
def long_gpt_dir(tmp_path_factory):
    """A GPT whose context holds 1,100 tokens: attention over long inputs."""
    torch.manual_seed(0)
    tok = Tokenizer.train_char([TEXT * 3])
    return save_model_dir(tmp_path_factory.mktemp("serve") / "long-gpt",
                          build_model(preset("gpt-tiny", vocab_size=tok.vocab_size, max_len=1100)), tok)


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = Tokenizer.train_wordpiece([TEXT] * 20, 120)
    return save_model_dir(tmp_path_factory.mktemp("serve") / "mlm",
                          build_model(preset("bert-tiny", vocab_size=tok.vocab_size, head="mlm")), tok)


@pytest.fixture(scope="module")
def mlm(mlm_dir):
    return TestClient(create_app(mlm_dir))


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_model_dir(tmp_path_factory.mktemp("serve") / "vit", build_model(preset("vit-tiny")))


@pytest.fixture(scope="module")
def caption_dir(tmp_path_factory):
    """caption-tiny (8 × 16 strips: [CLS] + 2 × 4 patches), weights scrambled so its captions vary."""
    from glassformer.data.captions import word_tokenizer

    torch.manual_seed(0)
    model = build_model(preset("caption-tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return save_model_dir(tmp_path_factory.mktemp("serve") / "caption", model, word_tokenizer(),
                          generation={"task": "caption"})


def png_bytes(width: int, height: int, seed: int = 1) -> bytes:
    from PIL import Image

    pixels = torch.rand(height, width, generator=torch.Generator().manual_seed(seed))
    out = io.BytesIO()
    Image.fromarray((pixels * 255).round().to(torch.uint8).numpy(), mode="L").save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def vit(vit_dir):
    return TestClient(create_app(vit_dir))


@pytest.fixture(scope="module")
def captioner(caption_dir):
    return TestClient(create_app(caption_dir))


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


def test_fill_mask_is_the_library_fill_mask(mlm, mlm_dir):
    from glassformer.tasks import fill_mask

    loaded = load_model_dir(mlm_dir)
    text = "the quick [MASK] fox jumps over the [MASK] dog."
    expected = fill_mask(loaded.model, loaded.tokenizer, text, 3)
    r = mlm.post("/v1/fill-mask", json={"text": text, "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["filled"] == expected["filled"] and len(body["masks"]) == 2
    for got, exp in zip(body["masks"], expected["masks"]):
        assert got["position"] == exp["position"]
        assert [c["id"] for c in got["candidates"]] == [c["id"] for c in exp["candidates"]]
        assert [c["probability"] for c in got["candidates"]] == pytest.approx([c["probability"] for c in
                                                                             exp["candidates"]], abs=1e-6)
    info = mlm.get("/v1/info").json()
    assert info["task"] == "fill-mask" and info["endpoints"] == ["fill-mask", "embed", "attention"]
    assert mlm.post("/v1/embed", json={"texts": ["the dog"]}).status_code == 200     # an MLM BERT embeds too


def test_cross_attention_is_the_translators_decoder_over_the_source(translator, translator_dir):
    loaded = load_model_dir(translator_dir)
    model, config = loaded.model.eval(), loaded.config
    info = translator.get("/v1/info").json()
    assert info["cross_layers"] == len(model.decoder.layers) >= 1
    layer, head = info["cross_layers"] - 1, info["heads"] - 1
    target = translate(model, loaded.src_tokenizer, loaded.tokenizer, ["dreiundzwanzig"])[0]
    r = translator.post("/v1/attention", json={"text": "dreiundzwanzig", "kind": "cross", "layer": layer,
                                               "head": head})
    assert r.status_code == 200, r.text
    body = r.json()
    src = loaded.src_tokenizer.encode("dreiundzwanzig") + [config.eos_id]
    tgt = ([config.start_id] + loaded.tokenizer.encode(target))[: config.max_len]
    assert len(body["key_tokens"]) == len(src) and len(body["tokens"]) == len(tgt)
    assert body["rows"] == body["tokens"] and body["cols"] == body["key_tokens"]
    name = [n for n, m in attention_modules(model).items() if m.cross_attention][layer]
    with torch.no_grad(), capture_attention(model, layers=[name], heads=[head]) as cap:
        model(torch.tensor([src]), torch.tensor([tgt]))
    weights = torch.tensor(body["weights"])
    torch.testing.assert_close(weights, cap.weights[name][0, 0].float())
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(tgt)))
    given = translator.post("/v1/attention", json={"text": "dreiundzwanzig", "kind": "cross", "target": "three"})
    assert given.status_code == 200 and len(given.json()["tokens"]) == 1 + len(loaded.tokenizer.encode("three"))


def test_long_input_comes_back_as_averaged_blocks(long_gpt_dir):
    from glassformer.explain.figures import block_average

    client = TestClient(create_app(long_gpt_dir))
    text = (TEXT * 30)[:1024]                                 # 1,024 characters: 1,024 tokens
    full = client.post("/v1/attention", json={"text": text, "layer": 1, "head": 2}).json()
    assert len(full["weights"]) == 1024 and len(full["tokens"]) == 1024
    r = client.post("/v1/attention", json={"text": text, "layer": 1, "head": 2, "max_cells": 64})
    assert r.status_code == 200, r.text
    blocked = r.json()
    weights = torch.tensor(blocked["weights"])
    assert weights.shape == (64, 64) and blocked["rows"][:2] == ["0–15", "16–31"] and blocked["cols"][-1] == "1008–1023"
    assert len(blocked["tokens"]) == 1024                     # the tokens themselves are all still there
    torch.testing.assert_close(weights, block_average(torch.tensor(full["weights"]), 64)[0])
    torch.testing.assert_close(weights.sum(-1), torch.full((64,), 1 / 16), atol=1e-5, rtol=0)  # means of 16 columns
    short = client.post("/v1/attention", json={"text": "the fox", "max_cells": 64}).json()
    assert short["rows"] == short["tokens"] == list("the fox")          # short inputs are not averaged


def test_classify_is_the_vits_own_softmax(vit, vit_dir):
    from glassformer.data.images import load_image

    loaded = load_model_dir(vit_dir)
    data = png_bytes(8, 8)
    with torch.no_grad():
        probs = torch.softmax(loaded.model.eval()(load_image(data, 1, 8)[None])[0], -1)
    r = vit.post("/v1/classify", json={"image": b64(data), "top_k": 3})
    assert r.status_code == 200, r.text
    classes = r.json()["classes"]
    top = probs.topk(3)
    assert [c["id"] for c in classes] == top.indices.tolist()
    assert [c["label"] for c in classes] == [loaded.config.class_names[i] for i in top.indices.tolist()]
    assert [c["probability"] for c in classes] == pytest.approx(top.values.tolist(), abs=1e-6)
    as_url = vit.post("/v1/classify", json={"image": "data:image/png;base64," + b64(data), "top_k": 3})
    assert as_url.json() == r.json()


def test_caption_is_the_librarys_greedy_caption(captioner, caption_dir):
    from glassformer.data.captions import load_strip
    from glassformer.tasks import caption_images

    loaded = load_model_dir(caption_dir)
    for width in (16, 8):                                   # a narrower strip is padded, as the CLI does
        data = png_bytes(width, 8, seed=width)
        expected = caption_images(loaded.model.eval(), loaded.tokenizer, load_strip(data, 1, 8, 16)[None])[0]
        r = captioner.post("/v1/caption", json={"image": b64(data)})
        assert r.status_code == 200, r.text
        assert r.json() == {"caption": expected}


def test_image_attention_is_the_captured_attention_over_patches(vit, vit_dir, captioner, caption_dir):
    from glassformer.data.captions import load_strip
    from glassformer.data.images import load_image

    data = png_bytes(8, 8)
    loaded = load_model_dir(vit_dir)
    model = loaded.model.eval()
    name = [n for n, m in attention_modules(model).items()][1]
    with torch.no_grad(), capture_attention(model, layers=[name], heads=[1]) as cap:
        model(load_image(data, 1, 8)[None])
    body = vit.post("/v1/attention", json={"image": b64(data), "layer": 1, "head": 1}).json()
    assert body["tokens"] == body["key_tokens"] == ["[CLS]", "patch 0,0", "patch 0,1", "patch 1,0", "patch 1,1"]
    torch.testing.assert_close(torch.tensor(body["weights"]), cap.weights[name][0, 0].float())

    data = png_bytes(16, 8)
    loaded = load_model_dir(caption_dir)
    model, config, tok = loaded.model.eval(), loaded.config, loaded.tokenizer
    name = [n for n, m in attention_modules(model).items() if m.cross_attention][0]
    ids = [config.bos_id] + tok.encode("one four two")
    with torch.no_grad(), capture_attention(model, layers=[name], heads=[0]) as cap:
        model(load_strip(data, 1, 8, 16)[None], torch.tensor([ids]))
    body = captioner.post("/v1/attention", json={"image": b64(data), "kind": "cross", "head": 0,
                                                 "target": "one four two"}).json()
    assert body["tokens"] == [tok.id_to_token(i) for i in ids] and len(body["key_tokens"]) == 1 + 2 * 4
    weights = torch.tensor(body["weights"])
    torch.testing.assert_close(weights, cap.weights[name][0, 0].float())
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(ids)))


def test_image_requests_that_are_refused(vit, captioner, gpt):
    image = b64(png_bytes(8, 8))
    error(vit.post("/v1/attention", json={"text": "a cat"}), 422, "reads images", '"image"')
    error(vit.post("/v1/attention", json={"image": image, "text": "a cat"}), 422, 'no "text"')
    error(gpt.post("/v1/attention", json={"image": image}), 422, "reads texts", '"text"')
    error(vit.post("/v1/classify", json={"image": "not base64!"}), 400, "base64")
    error(vit.post("/v1/classify", json={"image": ""}), 400, "empty")
    error(vit.post("/v1/classify", json={"image": b64(b"plain text, not a picture")}), 400, "cannot be decoded")
    error(vit.post("/v1/classify", json={"image": b64(png_bytes(9, 9))}), 400, "9×9", "8×8")
    error(captioner.post("/v1/caption", json={"image": b64(png_bytes(24, 8))}), 400, "at most 16 wide")
    error(vit.post("/v1/caption", json={"image": image}), 400, "'vit'", "/v1/classify")
    error(captioner.post("/v1/classify", json={"image": image}), 400, "'caption'", "/v1/caption")
    error(gpt.post("/v1/classify", json={"image": image}), 400, "'gpt'")
    error(vit.post("/v1/attention", json={"image": image, "kind": "cross"}), 400, "only self-attention")
    error(vit.post("/v1/classify", json={"image": "A" * (16 * 2 ** 20 + 4)}), 422, "image")


def test_openapi_lists_the_endpoints_and_the_page_has_an_input(gpt):
    doc = gpt.get("/openapi.json").json()
    for path in ("/v1/generate", "/v1/translate", "/v1/embed", "/v1/fill-mask", "/v1/classify", "/v1/caption",
                 "/v1/attention"):
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


def test_attention_and_fill_mask_refusals(gpt, bert, mlm, translator):
    error(gpt.post("/v1/attention", json={"text": "the", "kind": "cross"}), 400, "encoder–decoder", "'self'")
    error(translator.post("/v1/attention", json={"text": "eins", "target": "one"}), 422, "kind 'cross'")
    error(gpt.post("/v1/attention", json={"text": "the", "max_cells": 1}), 422, "max_cells")
    error(gpt.post("/v1/attention", json={"text": "the", "kind": "sideways"}), 422, "kind")
    error(bert.post("/v1/fill-mask", json={"text": "the [MASK] dog"}), 400, "masked-LM head")
    error(mlm.post("/v1/fill-mask", json={"text": "the lazy dog"}), 400, "[MASK]")
    error(mlm.post("/v1/fill-mask", json={"text": "the [MASK] dog " * 40}), 413, "at most 64")
    error(translator.post("/v1/attention", json={"text": "eins", "kind": "cross", "target": "one two " * 30}), 413,
          "target", "at most 24")


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


@pytest.mark.parametrize("which, endpoints", [
    ("gpt", ["generate"]), ("translator", ["translate"]), ("bert", ["embed"]), ("mlm", ["fill-mask", "embed"]),
    ("vit", ["classify"]), ("captioner", ["caption"])])
def test_the_page_is_its_static_file_filled_in_for_the_family(request, which, endpoints):
    """Each family's adapter gives its endpoints (the first is the page's); the page is static/index.html
    with every __PLACEHOLDER__ filled in and nothing else changed."""
    import re
    from importlib.resources import files

    client = request.getfixturevalue(which)
    info = client.get("/v1/info").json()
    assert info["endpoints"] == endpoints + ["attention"] and info["task"] == endpoints[0]
    static = files("glassformer.serve").joinpath("static", "index.html").read_text(encoding="utf-8")
    page = client.get("/").text
    assert re.findall(r"__[A-Z_]+__", static) and not re.findall(r"__[A-Z_]+__", page)
    at = 0
    for part in re.split(r"__[A-Z_]+__", static):                # the file's own text, in order
        at = page.index(part, at) + len(part)
    assert at == len(page) and f"/v1/{endpoints[0]})" in page


def test_cli_serve_refuses_a_missing_model_dir_in_one_line(capsys, tmp_path):
    code, out, err = run_cli(capsys, "serve", tmp_path / "absent", "--port", "0")
    assert code == 2 and err.startswith("glassformer: error:") and len(err.strip().splitlines()) == 1, err


# -- a real server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(model_dir):
    """A real uvicorn server for ``model_dir`` on a free loopback port: yields its base URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(model_dir), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def server(gpt_dir):
    with running(gpt_dir) as url:
        yield url


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


# -- the page in a real browser (the `browser` fixture: tests/conftest.py) ----------------------------
def grid_of(driver) -> tuple[list[str], list[list[float]]]:
    """The attention table the page drew: (column tokens, cell weights from each cell's title)."""
    return driver.execute_script("""
        const t = document.querySelector('#attention table.grid');
        if (!t) return [[], []];
        const cols = [...t.tHead.rows[0].cells].slice(1).map((c) => c.textContent);
        const rows = [...t.tBodies[0].rows].map((r) => [...r.cells].slice(1).map((c) => Number(c.title)));
        return [cols, rows];""")


def shows_grid(want: dict):
    """A wait condition: the page's grid has the columns and (to 1e-3) the weights of the API answer ``want``."""
    def check(driver):
        cols, rows = grid_of(driver)
        return cols == want["cols"] and len(rows) == len(want["weights"]) and all(
            abs(a - b) < 1e-3 for got, exp in zip(rows, want["weights"]) for a, b in zip(got, exp))
    return check


def submit(driver, text: str, button: str = "run") -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "input")
    box.clear()
    driver.execute_script("arguments[0].value = arguments[1];", box, text)     # fast for long texts
    driver.find_element(By.ID, button).click()


def output_of(driver) -> str:
    from selenium.webdriver.common.by import By

    return wait_for(driver, "the output", lambda d: d.find_element(By.ID, "output").text not in ("", "...") and
                    d.find_element(By.ID, "output").text)


def test_page_in_headless_chromium_generates_and_draws_attention(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    prompt = "the quick"
    with httpx.Client(base_url=server, timeout=60) as client:
        continuation = client.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": 50}).json()["text"]
        expected = {(layer, head): client.post("/v1/attention", json={"text": prompt, "layer": layer,
                                                                       "head": head}).json()
                    for layer, head in ((0, 0), (1, 0), (1, 3))}
    for want in expected.values():
        assert want["cols"] == want["tokens"]                          # short: the page's grid is every token
    assert expected[(0, 0)]["weights"] != expected[(1, 3)]["weights"]      # switching must change the grid

    browser.get(server + "/")
    assert "glassformer" in browser.title
    submit(browser, prompt)
    output = output_of(browser)
    assert output == (prompt + continuation).strip() or output == prompt + continuation, output

    def shows(layer, head):
        return shows_grid(expected[(layer, head)])

    wait_for(browser, "the attention grid of layer 0, head 0", shows(0, 0))
    assert Select(browser.find_element(By.ID, "layer")).first_selected_option.text == "0"
    cols, rows = grid_of(browser)
    assert len(cols) == len(prompt) and all(abs(sum(r) - 1) < 1e-2 for r in rows)     # a character tokenizer
    assert all(w == 0 for i, r in enumerate(rows) for w in r[i + 1:])                  # causal: nothing ahead
    lines = browser.execute_script("return document.querySelectorAll('#headview line').length")
    assert lines == sum(w > 0 for r in expected[(0, 0)]["weights"] for w in r) == len(prompt) * (len(prompt) + 1) // 2

    Select(browser.find_element(By.ID, "layer")).select_by_value("1")
    wait_for(browser, "the grid of layer 1, head 0 after choosing layer 1", shows(1, 0))
    Select(browser.find_element(By.ID, "head")).select_by_value("3")
    wait_for(browser, "the grid of layer 1, head 3 after choosing head 3", shows(1, 3))

    screenshot(browser, "serve-gpt-page.png")


def test_translator_page_shows_the_cross_attention_of_its_translation(browser, translator_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with running(translator_dir) as url, httpx.Client(base_url=url, timeout=60) as client:
        translation = client.post("/v1/translate", json={"text": "dreiundzwanzig"}).json()["translation"]
        want = client.post("/v1/attention", json={"text": "dreiundzwanzig", "kind": "cross", "layer": 0, "head": 1,
                                                  "max_cells": 64}).json()        # the target: its translation
        browser.get(url + "/")
        submit(browser, "dreiundzwanzig")
        assert output_of(browser) == translation.strip()
        Select(browser.find_element(By.ID, "head")).select_by_value("1")
        Select(browser.find_element(By.ID, "kind")).select_by_value("cross")
        wait_for(browser, "the cross-attention of the translation over the source", shows_grid(want))
        rows = browser.execute_script("return [...document.querySelectorAll('#attention tbody th')]"
                                      ".map((th) => th.textContent)")
        assert rows == want["rows"] and rows[0] == "<s>"                  # target tokens down, source across
        screenshot(browser, "serve-translator-cross-attention.png")


def test_page_averages_a_1024_token_input_and_fills_masks(browser, long_gpt_dir, mlm_dir):
    text = (TEXT * 30)[:1024]
    with running(long_gpt_dir) as url, httpx.Client(base_url=url, timeout=60) as client:
        want = client.post("/v1/attention", json={"text": text, "layer": 0, "head": 0, "max_cells": 64}).json()
        browser.get(url + "/")
        submit(browser, text, button="show-attention")
        wait_for(browser, "a 64 × 64 grid of averaged blocks", shows_grid(want))
        assert len(grid_of(browser)[1]) == 64
        screenshot(browser, "serve-gpt-1024-tokens.png")
    with running(mlm_dir) as url, httpx.Client(base_url=url, timeout=60) as client:
        text = "the quick [MASK] fox."
        filled = client.post("/v1/fill-mask", json={"text": text}).json()
        browser.get(url + "/")
        submit(browser, text)
        shown = output_of(browser)
        assert shown.splitlines()[0] == filled["filled"] and shown.splitlines()[1].startswith("[MASK] 1: ")
        assert filled["masks"][0]["candidates"][0]["token"] in shown.splitlines()[1]


def test_image_pages_classify_and_caption_an_uploaded_file(browser, vit_dir, caption_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    digit, strip = tmp_path / "digit.png", tmp_path / "strip.png"
    digit.write_bytes(png_bytes(8, 8))
    strip.write_bytes(png_bytes(16, 8))
    with running(vit_dir) as url, httpx.Client(base_url=url, timeout=60) as client:
        classes = client.post("/v1/classify", json={"image": b64(digit.read_bytes()), "top_k": 5}).json()["classes"]
        want = client.post("/v1/attention", json={"image": b64(digit.read_bytes()), "layer": 0, "head": 0,
                                                  "max_cells": 64}).json()
        browser.get(url + "/")
        assert not browser.find_element(By.ID, "input").is_displayed()
        browser.find_element(By.ID, "run").click()                      # no image yet: a message, no request
        assert "choose an image" in output_of(browser)
        browser.find_element(By.ID, "image").send_keys(str(digit))
        wait_for(browser, "the preview", lambda d: d.execute_script("return $('preview').naturalWidth") == 8)
        browser.find_element(By.ID, "run").click()
        wait_for(browser, "the classes", lambda d: d.find_element(By.ID, "output").text.startswith(
            classes[0]["label"] + " "))
        shown = browser.find_element(By.ID, "output").text.splitlines()
        assert [line.split()[0] for line in shown] == [c["label"] for c in classes]
        wait_for(browser, "the patch attention grid", shows_grid(want))
        screenshot(browser, "serve-vit-page.png")
    with running(caption_dir) as url, httpx.Client(base_url=url, timeout=60) as client:
        caption = client.post("/v1/caption", json={"image": b64(strip.read_bytes())}).json()["caption"]
        want = client.post("/v1/attention", json={"image": b64(strip.read_bytes()), "kind": "cross", "layer": 0,
                                                  "head": 1, "max_cells": 64}).json()
        browser.get(url + "/")
        browser.find_element(By.ID, "image").send_keys(str(strip))
        wait_for(browser, "the preview", lambda d: d.execute_script("return $('preview').naturalWidth") == 16)
        browser.find_element(By.ID, "run").click()
        assert output_of(browser) == caption
        Select(browser.find_element(By.ID, "head")).select_by_value("1")
        Select(browser.find_element(By.ID, "kind")).select_by_value("cross")
        wait_for(browser, "the caption's cross-attention over the patches", shows_grid(want))
        screenshot(browser, "serve-caption-cross-attention.png")
