"""Image to text: a ViT encoder whose patches a Transformer decoder cross-attends to, trained to name the digits
of a strip of scikit-learn's digit images ("seven two").  Shapes, cross-attention weights, cached decoding
against the uncached reference, splits of the digit images that never meet, and the commands."""

from __future__ import annotations

import json

import pytest
import torch

from glassformer.data.captions import (DIGIT_NAMES, CaptionBatcher, CaptionStream, load_caption_data, load_strip,
                                       word_tokenizer)
from glassformer.errors import ConfigError
from glassformer.generation import BeamOptions, SamplingOptions, beam_search, generate
from glassformer.model_dir import load_model_dir
from glassformer.models import build_model, preset
from glassformer.nn import PatchEmbedding
from glassformer.tasks import caption_images
from helpers import one_line_error, run_cli


def _scrambled(name: str = "caption-tiny", **overrides):
    """A model whose random weights are large enough to give varied, confident tokens."""
    torch.manual_seed(0)
    model = build_model(preset(name, **overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def test_shapes_and_cross_attention_over_every_patch():
    model = _scrambled()
    c = model.config
    assert (c.image_size, c.image_width, c.n_patches) == (8, 16, 8)          # 2 × 4 patches of 4×4
    images, tgt = torch.rand(3, 1, 8, 16), torch.randint(4, c.vocab_size, (3, 5))
    assert model.encode(images).hidden.shape == (3, 1 + 8, c.d_model)
    assert model(images, tgt).shape == (3, 5, c.vocab_size)
    weights = model.cross_attention(images, tgt)
    assert len(weights) == c.decoder_layers
    for w in weights:
        assert w.shape == (3, c.n_heads, 5, 1 + 8)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, c.n_heads, 5))
    # The loss is the mean cross-entropy of the logits over the real targets (padding ignored).
    targets = tgt.clone()
    targets[0, 3:] = c.pad_id
    logits = model(images, tgt)
    real = targets != c.pad_id
    expected = torch.nn.functional.cross_entropy(logits[real], targets[real])
    torch.testing.assert_close(model(images, tgt, targets), expected)


def test_a_caption_token_never_sees_later_ones_but_sees_the_image():
    model = _scrambled()
    images, tgt = torch.rand(2, 1, 8, 16), torch.randint(4, 14, (2, 5))
    later = tgt.clone()
    later[:, 3:] = torch.randint(4, 14, (2, 2))
    torch.testing.assert_close(model(images, tgt)[:, :3], model(images, later)[:, :3])
    assert not torch.allclose(model(images, tgt)[:, 0], model(torch.rand(2, 1, 8, 16), tgt)[:, 0])


def test_rectangular_patches_are_read_row_by_row():
    torch.manual_seed(0)
    patches = PatchEmbedding(4, 2, 1, 8, width=6)                          # 2 × 3 patches
    images = torch.rand(2, 1, 4, 6)
    tokens = patches(images)
    assert tokens.shape == (2, 6, 8) and patches.n_patches == 6
    w, b = patches.projection.weight.reshape(8, -1), patches.projection.bias
    for r in range(2):
        for col in range(3):
            patch = images[:, :, 2 * r:2 * r + 2, 2 * col:2 * col + 2].reshape(2, -1)
            torch.testing.assert_close(tokens[:, 3 * r + col], patch @ w.T + b)


def test_cached_decoding_equals_the_uncached_reference_and_teacher_forcing():
    model = _scrambled()
    c = model.config
    images = torch.rand(4, 1, 8, 16)
    options = SamplingOptions(max_new_tokens=6, eos_id=c.eos_id, pad_id=c.pad_id)
    cached = generate(model, *model.start_decoding(images, 6), options)
    uncached = generate(model, *model.start_decoding(images, 6), options, use_cache=False)
    assert torch.equal(cached, uncached)
    assert len(set(map(tuple, cached.tolist()))) > 1                     # not one constant answer
    # Each cached step's logits are those of the whole teacher-forced sequence at that position.
    cache, start = model.start_decoding(images, 6)
    fed = torch.cat([start, torch.randint(4, c.vocab_size, (4, 5))], dim=1)
    with torch.no_grad():
        full = model(images, fed)
        for i in range(6):
            torch.testing.assert_close(model.decode_step(fed[:, i:i + 1], cache), full[:, i], atol=1e-5, rtol=1e-5)
    # Beam search of width 1 is greedy decoding.
    beam = beam_search(model, *model.start_decoding(images, 6), BeamOptions(beam=1, max_new_tokens=6, eos_id=c.eos_id,
                                                                            pad_id=c.pad_id))
    greedy = torch.nn.functional.pad(cached, (0, beam.tokens.shape[-1] - cached.shape[1]), value=c.pad_id)
    assert torch.equal(beam.tokens[:, 0], greedy)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        model.start_decoding(images, c.max_len + 1)


def test_strips_are_composed_within_disjoint_splits_of_the_images():
    data = load_caption_data(seed=3, min_digits=1, max_digits=3, valid_strips=200, test_strips=300)
    pools = {k: set(v.tolist()) for k, v in data.pools.items()}
    assert not (pools["train"] & pools["valid"] or pools["train"] & pools["test"] or pools["valid"] & pools["test"])
    assert len(pools["train"] | pools["valid"] | pools["test"]) == len(data.digits.labels) == 1797
    tokenizer = word_tokenizer()
    stream = CaptionStream(data, CaptionBatcher(tokenizer), 16, seed=3)
    train = [next(stream) for _ in range(5)]
    for part, strips in (("valid", data.valid), ("test", data.test)):
        used = strips.sources[strips.sources >= 0]
        assert set(used.tolist()) <= pools[part]
        counts = (strips.digits >= 0).sum(1)
        assert set(counts.tolist()) == {1, 2, 3}
        # Slot k shows image sources[k]; after the last digit the strip is blank.
        for i in range(20):
            for k in range(3):
                pixels = strips.images[i, :, :, 8 * k:8 * k + 8]
                if k < counts[i]:
                    assert torch.equal(pixels, data.digits.images[strips.sources[i, k]])
                    assert strips.digits[i, k] == data.digits.labels[strips.sources[i, k]]
                else:
                    assert not pixels.any()
        assert strips.captions[0] == " ".join(DIGIT_NAMES[d] for d in strips.digits[0].tolist() if d >= 0)
    # Training strips: images of the training part only, and their targets are the names then the end.
    train_images = data.digits.images[sorted(pools["train"])].flatten(1)
    for batch in train:
        for k in range(3):
            tiles = batch.images[:, 0, :, 8 * k:8 * k + 8].flatten(1)
            shown = tiles.any(dim=1)
            assert (torch.cdist(tiles[shown], train_images).min(dim=1).values == 0).all()
        text = tokenizer.decode(batch.tgt_out[0].tolist())
        assert 1 <= len(text.split()) <= 3 and set(text.split()) <= set(DIGIT_NAMES)
        shifted = batch.tgt_out[:, :-1]
        assert torch.equal(batch.tgt_in[:, 1:], shifted.masked_fill(shifted == tokenizer.eos_id, tokenizer.pad_id))
    # The stream resumes exactly.
    state = stream.state_dict()
    expected = next(stream)
    stream.load_state_dict(state)
    again = next(stream)
    assert torch.equal(again.images, expected.images) and torch.equal(again.tgt_out, expected.tgt_out)


def _save_png(pixels: torch.Tensor, path) -> None:
    from PIL import Image

    Image.fromarray((pixels * 255).round().to(torch.uint8).numpy(), mode="L").save(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short `train caption` run on strips of one or two digits (about 20 s on 2 CPU cores)."""
    from glassformer.cli.main import main

    out = tmp_path_factory.mktemp("caption") / "run"
    code = main(["train", "caption", "--dataset", "digits", "--preset", "caption-tiny", "--max-digits", "2",
                 "--steps", "200", "--eval-every", "100", "--batch-size", "32", "--lr", "3e-3", "--out", str(out),
                 "--device", "cpu", "--log-every", "100"])
    assert code == 0
    return out


def test_train_caption_learns_beyond_chance(trained):
    results = json.loads((trained / "results.json").read_text())
    # Guessing: one name in ten and the right length by luck, under 6% exact; after 200 steps about 70%.
    assert results["test_exact_match"] > 0.3, results
    assert results["test_token_accuracy"] > 0.6, results
    assert results["digits_per_strip"] == [1, 2] and results["steps"] == 200
    loaded = load_model_dir(trained / "best")
    assert loaded.config.family == "caption" and loaded.generation == {"task": "caption"}
    assert loaded.tokenizer.vocab_size == 14


def test_trained_decoder_looks_at_the_digit_it_names(trained):
    model = load_model_dir(trained / "best").model
    data = load_caption_data(seed=0, min_digits=2, max_digits=2, valid_strips=1, test_strips=200)
    batch = CaptionBatcher(word_tokenizer())(data.test)
    with torch.no_grad():
        weights = model.cross_attention(batch.images, batch.tgt_in)[-1].mean(dim=(0, 1))   # (tgt_len, 1 + 8)
    columns = weights[:, 1:].reshape(-1, 2, 4).sum(1)          # (tgt_len, 4 patch columns): 2 per digit
    first, second = columns[:, :2].sum(-1), columns[:, 2:].sum(-1)
    assert first[0] > 0.6 and second[1] > 0.6, weights          # name 1 looks left, name 2 right


def test_caption_command_reads_pngs(trained, tmp_path, capsys):
    model_dir = trained / "best"
    loaded = load_model_dir(model_dir)
    data = load_caption_data(seed=0, min_digits=1, max_digits=2, valid_strips=1, test_strips=4)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"strip{i}.png")
        _save_png(data.test.images[i, 0], paths[-1])
    single = tmp_path / "one.png"                                # one digit, 8×8: padded to the model's width
    _save_png(data.digits.images[int(data.pools["test"][0]), 0], single)
    code, out, err = run_cli(capsys, "caption", str(model_dir), *map(str, paths), str(single), "--device", "cpu")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in [*paths, single]]
    images = torch.stack([load_strip(p, 1, 8, 16) for p in [*paths, single]])
    assert [line["caption"] for line in lines] == caption_images(loaded.model, loaded.tokenizer, images)
    for line in lines:
        assert 1 <= len(line["caption"].split()) <= 2 and set(line["caption"].split()) <= set(DIGIT_NAMES)


def test_caption_refuses_images_that_do_not_fit(trained, tmp_path, capsys):
    model_dir = str(trained / "best")
    tall = tmp_path / "tall.png"
    _save_png(torch.zeros(10, 16), tall)
    one_line_error(*run_cli(capsys, "caption", model_dir, str(tall), "--device", "cpu")[::2], "tall.png", "16×10")
    wide = tmp_path / "wide.png"
    _save_png(torch.zeros(8, 24), wide)
    one_line_error(*run_cli(capsys, "caption", model_dir, str(wide), "--device", "cpu")[::2], "at most 16 wide")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    one_line_error(*run_cli(capsys, "caption", model_dir, str(bad), "--device", "cpu")[::2], "cannot be decoded")
    code, _, err = run_cli(capsys, "train", "caption", "--dataset", "digits", "--min-digits", "3", "--max-digits", "2",
                           "--out", str(tmp_path / "never"), "--device", "cpu")
    one_line_error(code, err, "min_digits=3")
