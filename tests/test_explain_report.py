"""``glassformer explain`` and glassformer.explain.report: one self-contained HTML page (issue 12)."""

import html
import json
import re
from types import SimpleNamespace

import pytest
import torch

from helpers import one_line_error, run_cli, untrained_translator

from glassformer.explain.attention import capture_attention
from glassformer.explain.report import explain, write_html
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import build_model, preset
from glassformer.tokenizers import Tokenizer

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "the bird sang in the tree"]


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = Tokenizer.train_char(TEXTS)
    path = tmp_path_factory.mktemp("gpt") / "model"
    save_model_dir(path, build_model(preset("gpt-tiny", vocab_size=tok.vocab_size, max_len=256)), tok)
    return path


@pytest.fixture(scope="module")
def translator_dir(tmp_path_factory):
    corpus = SimpleNamespace(train=[("the cat sat", "die katze sass"), ("a dog ran", "ein hund lief"),
                                    ("the bird sang", "der vogel sang")] * 3)
    return untrained_translator(tmp_path_factory.mktemp("tr") / "model", corpus, 60, 64)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = Tokenizer.train_wordpiece(TEXTS * 3, 80)
    path = tmp_path_factory.mktemp("bert") / "model"
    save_model_dir(path, build_model(preset("bert-tiny", vocab_size=tok.vocab_size, head="mlm")), tok)
    return path


def embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', page, re.S)
    assert m, "no embedded attention data"
    return json.loads(m.group(1))


def check_page(page: str, report: dict) -> None:
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert "url(http" not in page and "@import" not in page
    assert "<link" not in page
    for toks in report["tokens"].values():
        for t in toks:
            assert f"</i>{html.escape(t)}</span>" in page, t
    expected = sum(len(m["heads"]) for m in report["attention"])
    assert len(re.findall(r"<div class='grid' data-grid ", page)) == expected
    data = embedded(page)
    assert [m["name"] for m in data["modules"]] == [m["name"] for m in report["attention"]]


def test_gpt_report_html_matches_captured_weights(gpt_dir, tmp_path):
    loaded = load_model_dir(gpt_dir)
    report = explain(loaded, "the cat")
    assert report["tokens"]["input"] == list("the cat")
    pred = report["prediction"]
    assert len(pred["next_token_top5"]) == 5 and isinstance(pred["continuation"], str)
    n_layers, n_heads = loaded.config.n_layers, loaded.config.n_heads
    assert len(report["attention"]) == n_layers
    out = write_html(report, tmp_path / "r.html")
    page = out.read_text(encoding="utf-8")
    check_page(page, report)
    assert len(re.findall(r"data-layer=", page)) == n_layers * n_heads
    assert not list(tmp_path.glob(".*tmp*"))

    # the embedded numbers for one head equal an independent capture
    ids = torch.tensor([loaded.tokenizer.encode("the cat")])
    with capture_attention(loaded.model) as cap:
        loaded.model(ids)
    name = report["attention"][1]["name"]
    data = embedded(page)["modules"][1]
    assert torch.allclose(torch.tensor(data["weights"][1]), cap.weights[name][0, 1], atol=1e-6)


def test_translator_report_has_cross_alignment(translator_dir, tmp_path, capsys):
    out, png = tmp_path / "t.html", tmp_path / "png"
    code, stdout, err = run_cli(capsys, "explain", translator_dir, "the cat sat", "--out", out, "--png", png)
    assert code == 0, err
    assert stdout.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    report = explain(translator_dir, "the cat sat")
    check_page(page, report)
    kinds = {m["kind"] for m in report["attention"]}
    assert kinds == {"self", "cross"}
    assert "data-alignment=" in page
    cross = [m for m in report["attention"] if m["kind"] == "cross"]
    assert cross[0]["weights"].shape[1:] == (len(report["tokens"]["target"]), len(report["tokens"]["source"]))
    assert len(list(png.glob("*.png"))) == len(report["attention"])

    given = explain(translator_dir, "the cat sat", target="die katze")
    assert given["prediction"]["translation"] == "die katze" and given["prediction"]["target_given"]


def test_bert_fill_mask_and_layer_head_selection(bert_dir, tmp_path, capsys):
    report = explain(bert_dir, "the cat [MASK] on the mat")
    assert report["tokens"]["input"][0] == "[CLS]" and "[MASK]" in report["tokens"]["input"]
    assert len(report["prediction"]["masks"][0]["top5"]) == 5
    out, png = tmp_path / "b.html", tmp_path / "png"
    code, _, err = run_cli(capsys, "explain", bert_dir, "the cat sat", "--out", out, "--png", png,
                           "--layers", "1", "--heads", "0", "2")
    assert code == 0, err
    page = out.read_text(encoding="utf-8")
    assert len(re.findall(r"data-layer='1'", page)) == 2
    assert re.findall(r"data-head='(\d)'", page) == ["0", "2"]
    assert [p.name for p in png.glob("*.png")] == ["encoder.layers.1.self_attention.png"]


def test_long_input_is_block_averaged(gpt_dir, tmp_path):
    text = ("the cat sat on the mat " * 6)[:130]
    report = explain(gpt_dir, text, layers=[0], heads=[0])
    data = embedded(write_html(report, tmp_path / "l.html").read_text(encoding="utf-8"))
    m = data["modules"][0]
    assert m["blocked"] and len(m["weights"][0]) <= 64 and len(m["weights"][0][0]) <= 64


@pytest.mark.parametrize("args, words", [
    (["", ], ["tokenizes to nothing"]),
    (["the cat", "--layers", "7"], ["layer 7"]),
    (["the cat", "--heads", "9"], ["head 9"]),
    (["the cat", "--layers", "-1"], ["layer -1"]),
])
def test_bad_input_is_one_line_and_writes_nothing(gpt_dir, tmp_path, capsys, args, words):
    out, png = tmp_path / "x.html", tmp_path / "png"
    code, _, err = run_cli(capsys, "explain", gpt_dir, *args, "--out", out, "--png", png)
    one_line_error(code, err, *words)
    assert not out.exists() and not png.exists()
    assert list(tmp_path.iterdir()) == []


def test_gpt_logit_lens_and_saliency(gpt_dir, tmp_path):
    from glassformer.explain.lens import saliency

    loaded = load_model_dir(gpt_dir)
    report = explain(loaded, "the cat", max_new_tokens=0)
    ids = loaded.tokenizer.encode("the cat")
    lens = report["logit_lens"]
    assert len(lens) == loaded.config.n_layers + 1 and lens[0]["layer"] == "embed"
    assert all(len(r["top1"]) == len(ids) for r in lens)
    predicted = report["prediction"]["next_token_top5"][0]
    assert lens[-1]["top1"][-1]["id"] == predicted["id"]
    assert abs(lens[-1]["top1"][-1]["probability"] - predicted["probability"]) < 1e-5
    page = write_html(report, tmp_path / "g.html").read_text(encoding="utf-8")
    check_page(page, report)
    last = re.search(r"<table id='lens-last'>(.*?)</table>", page, re.S).group(1)
    rows = re.findall(r"<tr data-lens-layer='([^']*)'><td>[^<]*</td><td class='tok'>([^<]*)</td>", last)
    assert [r[0] for r in rows] == ["embed"] + [f"layer {i}" for i in range(loaded.config.n_layers)]
    assert html.unescape(rows[-1][1]) == predicted["token"]
    m = re.search(r'<script type="application/json" id="saliency-data">(.*?)</script>', page, re.S)
    sal = json.loads(m.group(1))
    expected = saliency(loaded.model, ids, len(ids) - 1, predicted["id"], method="grad_x_input")
    assert torch.allclose(torch.tensor(sal["values"]), expected, atol=1e-6)
    assert max(sal["normalised"]) == pytest.approx(1.0) and min(sal["normalised"]) >= 0
    assert len(re.findall(r"data-saliency=", page)) == len(ids)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "model"
    save_model_dir(path, build_model(preset("vit-tiny")))
    return path


def test_vit_report_from_an_image(vit_dir, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "grey.png"
    Image.new("L", (8, 8), 128).save(image)
    out = tmp_path / "v.html"
    code, stdout, err = run_cli(capsys, "explain", vit_dir, image, "--out", out)
    assert code == 0, err
    assert stdout.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    loaded = load_model_dir(vit_dir)
    report = explain(loaded, image)
    assert report["family"] == "vit"
    assert report["tokens"]["input"] == ["[CLS]", "patch 0,0", "patch 0,1", "patch 1,0", "patch 1,1"]
    check_page(page, report)
    config = loaded.config
    assert len(re.findall(r"<div class='grid' data-grid ", page)) == config.n_layers * config.n_heads
    classes = report["prediction"]["classes_top5"]
    assert len(classes) == min(5, config.n_classes)
    with torch.no_grad():
        probs = torch.softmax(loaded.model(torch.full((1, 1, 8, 8), 128 / 255)), -1)[0]
    assert [c["id"] for c in classes] == probs.topk(len(classes)).indices.tolist()
    assert re.findall(r"<tr data-class='([^']*)'>", page) == [config.class_names[c["id"]] for c in classes]


def test_vit_non_image_is_one_line_and_writes_nothing(vit_dir, tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    code, _, err = run_cli(capsys, "explain", vit_dir, bad, "--out", tmp_path / "x.html")
    one_line_error(code, err, "image")
    assert code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_caption_models_are_refused(tmp_path, capsys):
    path = tmp_path / "cap"
    save_model_dir(path, build_model(preset("caption-tiny", vocab_size=20)))
    code, _, err = run_cli(capsys, "explain", path, "hello", "--out", tmp_path / "x.html")
    one_line_error(code, err, "caption")
    assert not (tmp_path / "x.html").exists()
