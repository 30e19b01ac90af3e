"""ViT: patches as tokens, against Hugging Face's ViTForImageClassification with the same weights; training on
scikit-learn's digits; images that do not fit."""

from __future__ import annotations

import pytest
import torch

from glassformer.data.images import ImageStream, load_digits, load_image, split
from glassformer.errors import InputError
from glassformer.model_dir import load_model_dir
from glassformer.models import build_model, num_parameters, preset
from helpers import run_cli

transformers = pytest.importorskip("transformers")


def test_patches_are_a_linear_map_of_each_flattened_patch():
    torch.manual_seed(0)
    model = build_model(preset("vit-tiny"))
    images = torch.rand(2, 1, 8, 8)
    tokens = model.patches(images)                                     # (2, 4, d)
    w = model.patches.projection.weight.reshape(model.config.d_model, -1)   # (d, 1·4·4)
    b = model.patches.projection.bias
    for r in range(2):
        for c in range(2):
            patch = images[:, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].reshape(2, -1)
            torch.testing.assert_close(tokens[:, 2 * r + c], patch @ w.T + b)


def test_vit_equals_hugging_face(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64, num_labels=3,
                                 id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    hf = transformers.ViTForImageClassification(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "layernorm" in name or name.endswith("bias") or "embeddings" in name:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ours = load_model_dir(tmp_path / "hf").model
    assert ours.config.labels == ["a", "b", "c"]
    images = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), hf(pixel_values=images).logits, atol=1e-5, rtol=1e-5)


def test_vit_b16_has_the_papers_size():
    with torch.device("meta"):
        assert num_parameters(build_model(preset("vit-b16"))) == 86_567_656     # ViT-B/16, 1000 classes: 86M


def test_digits_split_is_stratified_and_disjoint():
    data = load_digits()
    parts = split(data, seed=0)
    n = len(data.labels)
    assert len(parts.train.labels) + len(parts.valid.labels) + len(parts.test.labels) == n
    assert abs(len(parts.test.labels) - 0.2 * n) < 10
    for c in range(10):                      # every class in every part, in its share
        share = (parts.test.labels == c).float().sum() / (data.labels == c).float().sum()
        assert abs(share - 0.2) < 0.02
    stream = ImageStream(parts.train, 32, seed=0)
    next(stream)
    state = stream.state_dict()
    a = next(stream)
    stream.load_state_dict(state)
    assert torch.equal(next(stream).labels, a.labels)


def test_train_vit_on_digits_learns(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "vit", "--dataset", "digits", "--steps", "200", "--eval-every", "100",
                                "--out", str(out), "--device", "cpu")
    assert code == 0, err
    accuracy = float(stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 60                       # 200 steps; the full recipe's figure is in the README
    png = tmp_path / "seven.png"
    _save_png(load_digits().images[7, 0], png)
    code, stdout, err = run_cli(capsys, "classify-image", str(out / "best"), str(png))
    assert code == 0 and '"label"' in stdout


def _save_png(pixels: torch.Tensor, path) -> None:
    from PIL import Image

    Image.fromarray((pixels * 255).round().to(torch.uint8).numpy(), mode="L").save(path)


def test_images_that_do_not_fit_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot be decoded"):
        load_image(bad, 1)
    wide = tmp_path / "wide.png"
    from PIL import Image

    Image.new("L", (8, 6)).save(wide)
    with pytest.raises(InputError, match="8×6; the ViT takes square images"):
        load_image(wide, 1)
    with pytest.raises(InputError, match="do not fit the model"):
        build_model(preset("vit-tiny"))(torch.rand(1, 1, 12, 12))
    folder = tmp_path / "classes"
    for name, size in (("a", 8), ("b", 16)):
        (folder / name).mkdir(parents=True)
        Image.new("L", (size, size)).save(folder / name / "x.png")
    code, _, err = run_cli(capsys, "train", "vit", "--dataset", str(folder), "--preset", "vit-tiny",
                           "--out", str(tmp_path / "run"))
    assert code == 2 and "16×16 but the model takes 8×8" in err and not (tmp_path / "run").exists()
