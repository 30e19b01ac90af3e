"""``glassformer explain`` and glassformer.explain.report: one self-contained HTML page (issue 12)."""

import html
import json
import re
from types import SimpleNamespace

import pytest
import torch

from helpers import one_line_error, run_cli, screenshot, untrained_translator, wait_for

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


# -- caption models ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def caption_dir(tmp_path_factory):
    """An untrained caption-tiny (8×16 images: [CLS] + 2 × 4 patches) whose weights are scrambled so that
    its greedy caption has several different words (as tests/test_caption.py)."""
    from glassformer.data.captions import word_tokenizer

    torch.manual_seed(0)
    model = build_model(preset("caption-tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path_factory.mktemp("caption") / "model"
    save_model_dir(path, model, word_tokenizer(), generation={"task": "caption"})
    return path


@pytest.fixture(scope="module")
def strip_png(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "strip.png"
    pixels = torch.rand(8, 16, generator=torch.Generator().manual_seed(1))
    Image.fromarray((pixels * 255).round().to(torch.uint8).numpy(), mode="L").save(path)
    return path


def test_caption_report_cross_attention_equals_the_models_own_weights(caption_dir, strip_png, tmp_path):
    from glassformer.data.captions import load_strip
    from glassformer.tasks import caption_images

    loaded = load_model_dir(caption_dir)
    model, tok, c = loaded.model, loaded.tokenizer, loaded.config
    image = load_strip(strip_png, 1, 8, 16)[None]
    report = explain(loaded, strip_png, target="one four two")
    assert report["family"] == "caption" and report["patch_grid"] == [2, 4]
    patches = ["[CLS]"] + [f"patch {r},{col}" for r in range(2) for col in range(4)]
    assert report["tokens"]["patches"] == report["tokens"]["input"] == patches
    assert report["tokens"]["target"] == ["<s>", "one", "four", "two"]
    tgt = torch.tensor([[c.bos_id] + tok.encode("one four two")])
    with torch.no_grad():
        reference = model.cross_attention(image, tgt)          # the model's own explicit path, per decoder layer
        logits = model(image, tgt)
    by_kind = {}
    for m in report["attention"]:
        by_kind.setdefault((m["name"].split(".")[0], m["kind"]), []).append(m)
    assert set(by_kind) == {("encoder", "self"), ("decoder", "self"), ("decoder", "cross")}
    for m in by_kind["encoder", "self"]:
        assert m["weights"].shape == (c.n_heads, 1 + c.n_patches, 1 + c.n_patches) and m["k_tokens"] == patches
    for m in by_kind["decoder", "self"]:
        assert m["weights"].shape == (c.n_heads, 4, 4)
        assert not m["weights"].triu(1).any()                                   # a caption token sees no later one
    cross = by_kind["decoder", "cross"]
    assert len(cross) == c.decoder_layers
    for m, ref in zip(cross, reference):
        w = m["weights"]
        assert w.shape == (c.n_heads, 4, 1 + c.n_patches)                      # (heads, caption_len, [CLS] + patches)
        torch.testing.assert_close(w.sum(-1), torch.ones(c.n_heads, 4))
        torch.testing.assert_close(w, ref[0], atol=1e-5, rtol=1e-5)
        assert m["q_tokens"] == report["tokens"]["target"] and m["k_tokens"] == patches
    expected_top = torch.softmax(logits[0, -1], -1).topk(5)
    assert [t["id"] for t in report["prediction"]["next_token_top5"]] == expected_top.indices.tolist()
    assert report["prediction"] == {**report["prediction"], "caption": "one four two", "target_given": True}

    page = write_html(report, tmp_path / "c.html").read_text(encoding="utf-8")
    check_page(page, report)
    assert "<span class='pred' id='caption'>one four two</span>" in page
    assert f"data-alignment='{cross[0]['name']}'" in page
    # the per-token patch maps: the mean over heads of key 1 + r·4 + c, computed here by hand
    maps = json.loads(re.search(r'<script type="application/json" id="patch-maps-data">(.*?)</script>',
                                page, re.S).group(1))[cross[0]["name"]]
    w = reference[0][0]
    assert maps["grid"] == [2, 4] and maps["tokens"] == ["<s>", "one", "four", "two"]
    for t in range(4):
        assert maps["cls"][t] == pytest.approx(float(w[:, t, 0].mean()), abs=1e-5)
        for r in range(2):
            for col in range(4):
                assert maps["maps"][t][r][col] == pytest.approx(float(w[:, t, 1 + 4 * r + col].mean()), abs=1e-5)
    assert len(re.findall(r"<figure data-patch-map=", page)) == 4 * c.decoder_layers

    # without --target: the caption of the library's greedy captioner, fed after the start token
    greedy = explain(loaded, strip_png)
    words = caption_images(model, tok, image)[0]
    assert greedy["prediction"]["caption"] == words and not greedy["prediction"]["target_given"]
    assert greedy["tokens"]["target"] == (["<s>"] + words.split())[: c.max_len]


def test_caption_cli_end_to_end(caption_dir, strip_png, tmp_path, capsys):
    out, png = tmp_path / "c.html", tmp_path / "png"
    code, stdout, err = run_cli(capsys, "explain", caption_dir, strip_png, "--out", out, "--png", png,
                                "--target", "seven")
    assert code == 0, err
    assert stdout.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    assert "Caption (given caption): <span class='pred' id='caption'>seven</span>" in page
    assert "data-patch-maps='decoder.layers.0.cross_attention'" in page
    assert sorted(p.name for p in png.glob("*.png")) == [
        "decoder.layers.0.cross_attention.patches.png", "decoder.layers.0.cross_attention.png",
        "decoder.layers.0.self_attention.png", "encoder.stack.layers.0.self_attention.png"]


@pytest.mark.parametrize("args, words", [
    (["missing.png"], ["missing.png", "does not exist"]),
    (["notes.txt"], ["notes.txt", "cannot be decoded"]),
    (["strip.png", "--neurons", "0"], ["--neurons", "caption", "GPT, BERT, ViT and translation"]),
    (["strip.png", "--layers", "3"], ["layer 3"]),
])
def test_caption_bad_input_is_one_line_and_writes_nothing(caption_dir, strip_png, tmp_path, capsys, args, words):
    import shutil

    shutil.copy(strip_png, tmp_path / "strip.png")
    (tmp_path / "notes.txt").write_text("hello")
    args = [str(tmp_path / args[0]), *args[1:]]
    code, _, err = run_cli(capsys, "explain", caption_dir, *args, "--out", tmp_path / "x.html", "--png", tmp_path / "p")
    one_line_error(code, err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "strip.png"]


# -- integrated gradients ------------------------------------------------------------------------
def test_gpt_integrated_gradients_match_lens_and_are_complete(gpt_dir, tmp_path):
    """float64 and 256 steps: the midpoint rule is then exact to ~1e-6 of the logit difference, while
    grad × input (or a sum that forgot to divide by the steps) is off by far more than the tolerance."""
    from glassformer.explain.lens import saliency

    loaded = load_model_dir(gpt_dir)
    model = loaded.model.double()
    torch.manual_seed(1)
    with torch.no_grad():                     # larger weights: a clearly non-linear path from the baseline
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    text = "the cat"
    ids = loaded.tokenizer.encode(text)
    report = explain(loaded, text, max_new_tokens=0, saliency_steps=256)
    ig = report["integrated_gradients"]
    predicted = report["prediction"]["next_token_top5"][0]["id"]
    assert ig["method"] == "integrated_gradients" and ig["steps"] == 256 and ig["target_id"] == predicted
    direct = saliency(model, ids, len(ids) - 1, predicted, method="integrated_gradients", steps=256)
    assert torch.allclose(torch.tensor(ig["values"], dtype=torch.float64), direct.double(), atol=1e-6)

    # completeness, against logits computed here: the real input, and zero token embeddings (positions kept)
    batch = torch.tensor([ids])
    with torch.no_grad():
        logit_input = float(model(batch)[0, -1, predicted])
        handle = model.embed.token.register_forward_hook(lambda m, i, out: torch.zeros_like(out))
        try:
            logit_baseline = float(model(batch)[0, -1, predicted])
        finally:
            handle.remove()
    gap = logit_input - logit_baseline
    assert ig["input_logit"] == pytest.approx(logit_input, abs=1e-9)
    assert ig["baseline_logit"] == pytest.approx(logit_baseline, abs=1e-9)
    tolerance = 1e-4 * max(1.0, abs(gap))
    assert abs(sum(ig["values"]) - gap) < tolerance
    assert abs(sum(report["saliency"]["values"]) - gap) > 10 * tolerance         # the test can tell them apart
    few = explain(loaded, text, max_new_tokens=0, saliency_steps=2)["integrated_gradients"]
    assert abs(sum(few["values"]) - gap) > tolerance                               # and 2 steps are not enough

    page = write_html(report, tmp_path / "ig.html").read_text(encoding="utf-8")
    assert "<div class='toks sal' data-method='grad_x_input'>" in page
    assert "<div class='toks sal' data-method='integrated_gradients'>" in page
    assert "<h3>Gradient × input</h3>" in page and "<h3>Integrated gradients (256 steps" in page
    assert len(re.findall(r"data-ig=", page)) == len(ids) == len(re.findall(r"data-saliency=", page))
    data = json.loads(re.search(r'<script type="application/json" id="integrated-gradients-data">(.*?)</script>',
                                page, re.S).group(1))
    assert data["values"] == ig["values"]


def test_saliency_steps_flag(gpt_dir, tmp_path, capsys):
    out = tmp_path / "s.html"
    code, _, err = run_cli(capsys, "explain", gpt_dir, "the cat", "--out", out, "--saliency-steps", "4")
    assert code == 0, err
    assert "<h3>Integrated gradients (4 steps" in out.read_text(encoding="utf-8")
    code, _, err = run_cli(capsys, "explain", gpt_dir, "the cat", "--out", out, "--saliency-steps", "0")
    one_line_error(code, err, "--saliency-steps")


# -- feed-forward neurons ------------------------------------------------------------------------
_ACT = {"gelu": torch.nn.functional.gelu, "relu": torch.nn.functional.relu,
        "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}


def _hand_activations(model, layer_module, activation: str, run) -> torch.Tensor:
    """act(W1 x + b1) of one layer's feed-forward, from the input x of its first linear (seq, d_ff)."""
    seen = []
    linear1 = layer_module.feed_forward.linear1
    handle = linear1.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    with torch.no_grad():
        return _ACT[activation](seen[0][0] @ linear1.weight.T + linear1.bias)


def _check_neurons(info, acts, tokens, layer):
    assert info["layer"] == layer and info["d_ff"] == acts.shape[1]
    peaks = acts.max(0).values
    expected = peaks.argsort(descending=True, stable=True)[:8].tolist()
    assert [n["neuron"] for n in info["top"]] == expected
    for n in info["top"]:
        j = n["neuron"]
        assert n["max"] == pytest.approx(float(peaks[j]), abs=1e-5)
        assert n["values"] == pytest.approx(acts[:, j].tolist(), abs=1e-5)
        best = acts[:, j].argsort(descending=True, stable=True)[:3].tolist()
        assert [t["position"] for t in n["top_tokens"]] == best
        assert [t["token"] for t in n["top_tokens"]] == [tokens[p] for p in best]


def test_gpt_neurons_equal_a_hand_computation(gpt_dir, tmp_path, capsys):
    loaded = load_model_dir(gpt_dir)
    model, text = loaded.model, "the cat sat"
    report = explain(loaded, text, neurons=1)
    ids = torch.tensor([loaded.tokenizer.encode(text)])
    acts = _hand_activations(model, model.decoder.layers[1], loaded.config.activation, lambda: model(ids))
    _check_neurons(report["neurons"], acts, report["tokens"]["input"], 1)

    out, png = tmp_path / "n.html", tmp_path / "png"
    code, _, err = run_cli(capsys, "explain", gpt_dir, text, "--out", out, "--png", png, "--neurons", "1")
    assert code == 0, err
    page = out.read_text(encoding="utf-8")
    rows = re.findall(r"<tr data-neuron='(\d+)'>", page)
    assert [int(r) for r in rows] == [n["neuron"] for n in report["neurons"]["top"]]
    assert len(re.findall(r"data-activation=", page)) == 8 * ids.shape[1]
    data = json.loads(re.search(r'<script type="application/json" id="neurons-data">(.*?)</script>',
                                page, re.S).group(1))
    assert data["top"][0]["values"] == pytest.approx(acts[:, data["top"][0]["neuron"]].tolist(), abs=1e-5)
    assert (png / "neurons.layer1.png").is_file()


def test_bert_neurons_equal_a_hand_computation(bert_dir):
    loaded = load_model_dir(bert_dir)
    model, text = loaded.model, "the cat sat on the mat"
    report = explain(loaded, text, neurons=0)
    ids = torch.tensor([loaded.tokenizer.encode_sentences([text])[0][0]])
    acts = _hand_activations(model, model.encoder.layers[0], loaded.config.activation, lambda: model.encode(ids))
    _check_neurons(report["neurons"], acts, report["tokens"]["input"], 0)


def test_vit_neurons_equal_a_hand_computation(vit_dir, tmp_path):
    from PIL import Image

    image = tmp_path / "noise.png"
    pixels = torch.rand(8, 8, generator=torch.Generator().manual_seed(2))
    Image.fromarray((pixels * 255).round().to(torch.uint8).numpy(), mode="L").save(image)
    loaded = load_model_dir(vit_dir)
    report = explain(loaded, image, neurons=0)
    batch = ((pixels * 255).round() / 255)[None, None]
    acts = _hand_activations(loaded.model, loaded.model.encoder.layers[0], loaded.config.activation,
                             lambda: loaded.model(batch))
    _check_neurons(report["neurons"], acts, report["tokens"]["input"], 0)


def test_translator_neurons_are_its_encoders_over_the_source(translator_dir, tmp_path):
    loaded = load_model_dir(translator_dir)
    model, config = loaded.model.eval(), loaded.config
    report = explain(loaded, "the cat sat", target="die katze", neurons=1)
    src = torch.tensor([loaded.src_tokenizer.encode("the cat sat") + [config.eos_id]])
    acts = _hand_activations(model, model.encoder.layers[1], config.activation, lambda: model.encode(src))
    _check_neurons(report["neurons"], acts, report["tokens"]["source"], 1)
    assert report["neurons"]["stack"] == "encoder"
    assert "Feed-forward neurons, encoder layer 1" in write_html(report, tmp_path / "t.html").read_text("utf-8")


def test_the_report_is_typed_and_its_plain_form_holds_the_parts_that_apply(gpt_dir, translator_dir, tmp_path):
    from glassformer.explain.report import AttentionModule, Neurons, Report

    report = explain(load_model_dir(gpt_dir), "the cat", neurons=0)
    assert isinstance(report, Report) and isinstance(report.neurons, Neurons) and report.patch_grid is None
    assert report.attention and all(isinstance(m, AttentionModule) for m in report.attention)
    plain = report.to_dict()
    assert list(plain) == ["tokens", "prediction", "attention", "logit_lens", "saliency", "integrated_gradients",
                           "neurons", "family", "text"]
    assert list(plain["attention"][0]) == ["name", "kind", "layer", "heads", "q_tokens", "k_tokens", "weights"]
    assert plain["attention"][0]["weights"] is report.attention[0].weights
    assert plain["neurons"] == {"layer": 0, "d_ff": report.neurons.d_ff, "top": report.neurons.top}   # no "stack"
    for key in ("tokens", "prediction", "logit_lens", "saliency", "neurons", "family", "text"):
        assert report[key] == plain[key], key
    page = write_html(report, tmp_path / "g.html").read_text(encoding="utf-8")
    shown = re.search(r'<script type="application/json" id="neurons-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(shown) == json.loads(json.dumps(plain["neurons"]))

    plain = explain(load_model_dir(translator_dir), "the cat sat", neurons=0).to_dict()
    assert list(plain) == ["tokens", "prediction", "attention", "neurons", "family", "text"]
    assert plain["neurons"]["stack"] == "encoder" and list(plain["neurons"]) == ["layer", "d_ff", "top", "stack"]


@pytest.mark.parametrize("family_dir, layer, words", [
    ("gpt_dir", "2", ["feed-forward layer 2 does not exist", "0..1"]),
    ("gpt_dir", "-1", ["feed-forward layer -1 does not exist", "0..1"]),
    ("bert_dir", "5", ["feed-forward layer 5", "0..1"]),
    ("translator_dir", "9", ["feed-forward layer 9", "0..1"]),
])
def test_neurons_out_of_range_is_one_line(request, tmp_path, capsys, family_dir, layer, words):
    model_dir = request.getfixturevalue(family_dir)
    out = tmp_path / "x.html"
    code, _, err = run_cli(capsys, "explain", model_dir, "the cat", "--out", out, "--neurons", layer)
    one_line_error(code, err, *words)
    assert list(tmp_path.iterdir()) == []


# -- the other families of the library: Llama-style decoders and T5 ----------------------------------
@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = Tokenizer.train_char(TEXTS)
    path = tmp_path_factory.mktemp("llama") / "model"
    save_model_dir(path, build_model(preset("llama-tiny", vocab_size=tok.vocab_size)), tok)
    return path


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = Tokenizer.train_bpe(TEXTS * 3, 60)
    path = tmp_path_factory.mktemp("t5") / "model"
    config = preset("t5-tiny", src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size)
    save_model_dir(path, build_model(config), tok)
    return path


def test_llama_report_lens_ends_at_the_models_own_prediction(llama_dir, tmp_path):
    loaded = load_model_dir(llama_dir)
    report = explain(loaded, "the cat")
    ids = torch.tensor([loaded.tokenizer.encode("the cat")])
    with torch.no_grad():
        logits = loaded.model(ids)[0, -1]
    predicted = int(logits.argmax())
    assert report["prediction"]["next_token_top5"][0]["id"] == predicted
    # RoPE, RMSNorm and the final norm: the last row of the lens is the model's output distribution
    assert report["logit_lens"][-1]["top1"][-1]["id"] == predicted
    assert report["logit_lens"][-1]["top1"][-1]["probability"] == pytest.approx(
        float(torch.softmax(logits, -1).max()), abs=1e-5)
    for module in report["attention"]:
        w = module["weights"]                                       # (heads, seq, seq)
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert torch.all(w.triu(1) == 0)
    check_page(write_html(report, tmp_path / "l.html").read_text(encoding="utf-8"), report)


def test_t5_report_has_relative_position_attention_and_cross_alignment(t5_dir, tmp_path):
    loaded = load_model_dir(t5_dir)
    config = loaded.config
    report = explain(loaded, "the cat sat", target="a dog ran")
    src = loaded.tokenizer.encode("the cat sat") + [config.eos_id]
    tgt = [config.start_id] + loaded.tokenizer.encode("a dog ran")
    assert len(report["tokens"]["source"]) == len(src) and len(report["tokens"]["target"]) == len(tgt)
    with torch.no_grad(), capture_attention(loaded.model) as cap:
        logits = loaded.model(torch.tensor([src]), torch.tensor([tgt]))
    assert report["prediction"]["next_token_top5"][0]["id"] == int(logits[0, -1].argmax())
    assert {m["kind"] for m in report["attention"]} == {"self", "cross"}
    for module in report["attention"]:
        torch.testing.assert_close(module["weights"], cap.weights[module["name"]][0].float())
        rows = len(src) if module["name"].startswith("encoder") else len(tgt)
        cols = len(tgt) if module["name"].startswith("decoder") and module["kind"] == "self" else len(src)
        assert module["weights"].shape[1:] == (rows, cols)
    page = write_html(report, tmp_path / "t5.html").read_text(encoding="utf-8")
    check_page(page, report)
    assert "data-alignment=" in page


# -- the page in headless Chromium (the `browser` fixture: tests/conftest.py) ---------------------------
def test_report_draws_the_chosen_head_in_chromium(browser, gpt_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    text = ("the cat sat on the mat " * 12)[:256]                   # 256 characters: 64 × 64 blocks of 4
    report = explain(gpt_dir, text)
    out = write_html(report, tmp_path / "report.html")
    data = embedded(out.read_text(encoding="utf-8"))["modules"]
    browser.get(out.as_uri())

    def drawn():                       # (module index, head index, cell titles) of every grid drawn so far
        return browser.execute_script("""
            return [...document.querySelectorAll('.grid')].filter((g) => g.querySelector('svg').firstChild)
              .map((g) => [+g.dataset.moduleIndex, +g.dataset.headIndex, g.classList.contains('on'),
                           [...g.querySelectorAll('rect title')].map((t) => t.textContent)]);""")

    first = wait_for(browser, "the first head's grid", lambda d: drawn())
    assert [(m, h, on) for m, h, on, _ in first] == [(0, 0, True)]      # only the head shown is drawn
    titles = first[0][3]
    weights = data[0]["weights"][0]
    assert len(titles) == 64 * 64 == len(weights) * len(weights[0])
    assert titles[1] == f"0–3 → 4–7: {weights[0][1]:.4f}" and titles[-1].startswith("252–255 → 252–255: ")

    Select(browser.find_element(By.ID, "sel-module")).select_by_index(1)
    Select(browser.find_element(By.ID, "sel-head")).select_by_index(2)
    now = wait_for(browser, "module 1, head 2", lambda d: [g for g in drawn() if g[2] and g[:2] == [1, 2]])
    values = [float(t.rsplit(": ", 1)[1]) for t in now[0][3]]
    expected = [v for row in data[1]["weights"][2] for v in row]
    assert values == pytest.approx(expected, abs=1e-4)
    lines = browser.execute_script("return document.querySelectorAll('#headview line').length")
    assert lines == sum(v > 0 for v in expected)
    screenshot(browser, "explain-gpt-report.png")


def test_gpt_pngs_include_the_logit_lens_and_saliency_with_the_reports_numbers(gpt_dir, tmp_path):
    pytest.importorskip("matplotlib")
    from glassformer.explain.figures import logit_lens_figure, saliency_figure
    from glassformer.explain.report import write_pngs

    report = explain(gpt_dir, "the cat", saliency_steps=8)
    names = {p.name for p in write_pngs(report, tmp_path)}
    assert {"logit_lens.png", "saliency.png"} <= names and (tmp_path / "saliency.png").stat().st_size > 1000
    tokens = report["tokens"]["input"]

    gxi = torch.tensor(report["saliency"]["values"], dtype=torch.float64)
    ig = torch.tensor(report["integrated_gradients"]["values"], dtype=torch.float64)
    fig = saliency_figure({"gradient × input": gxi, "integrated gradients": ig}, tokens)
    drawn = torch.tensor(fig.axes[0].images[0].get_array().data, dtype=torch.float64)
    expected = torch.stack([gxi / gxi.abs().max(), ig / ig.abs().max()])       # each row its own scale
    torch.testing.assert_close(drawn, expected, atol=1e-6, rtol=0)

    long_tokens = [str(i) for i in range(128)]                   # 128 tokens: 64 blocks of 2, attributions summed
    values = torch.arange(128, dtype=torch.float64)
    drawn = fig_array(saliency_figure({"x": values}, long_tokens))
    sums = values.view(64, 2).sum(1)
    torch.testing.assert_close(drawn[0], sums / sums.max(), atol=1e-6, rtol=0)

    lens = report["logit_lens"]
    probs = [[c["probability"] for c in r["top1"]] for r in lens]
    fig = logit_lens_figure(probs, [[c["token"] for c in r["top1"]] for r in lens], [r["layer"] for r in lens], tokens)
    torch.testing.assert_close(fig_array(fig), torch.tensor(probs, dtype=torch.float64), atol=1e-6, rtol=0)
    assert [t.get_text() for t in fig.axes[0].texts][: len(tokens)] == [c["token"] for c in lens[0]["top1"]]
    with pytest.raises(Exception, match="one value per token"):
        saliency_figure({"x": values[:3]}, tokens)


def fig_array(fig) -> torch.Tensor:
    return torch.tensor(fig.axes[0].images[0].get_array().data, dtype=torch.float64)
