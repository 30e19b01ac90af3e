"""One decoder for three families, one image encoder for two: the encoder–decoder, the captioner and the
GPT decode through ``models.decoding.DecodingMixin``; the captioner encodes images with ViT's encoder."""

import torch

from glassformer.models import build_model, preset
from glassformer.models.caption import CaptionModel
from glassformer.models.decoding import DecodingMixin
from glassformer.models.gpt import GPT
from glassformer.models.transformer import Transformer
from glassformer.models.vit import ImageEncoder, ViT


def test_no_family_writes_its_own_decoding_step():
    for family in (Transformer, CaptionModel, GPT):
        assert issubclass(family, DecodingMixin)
        for name in ("step", "decoder_states", "logits", "new_cache", "max_positions"):
            assert all(name not in vars(cls) for cls in family.__mro__ if cls not in (DecodingMixin, object)), \
                (family.__name__, name)


def test_the_captioner_encodes_images_as_a_vit_with_its_weights():
    torch.manual_seed(0)
    captioner = build_model(preset("caption-tiny", image_width=8)).eval()          # square: a ViT's images
    c = captioner.config
    vit = ViT(preset("vit-tiny", image_size=c.image_size, patch_size=c.patch_size, channels=c.channels,
                     d_model=c.d_model, n_layers=c.encoder_layers, n_heads=c.n_heads, d_ff=c.d_ff,
                     norm_eps=c.norm_eps, activation=c.activation)).eval()
    assert type(captioner.encoder) is ImageEncoder and isinstance(vit, ImageEncoder)
    ours = {k.replace("stack.", "encoder.", 1): v for k, v in captioner.encoder.state_dict().items()}
    vit.load_state_dict({**vit.state_dict(), **ours})
    images = torch.rand(3, c.channels, c.image_size, c.image_width)
    torch.testing.assert_close(captioner.encode(images).hidden, vit.features(images).hidden, atol=0, rtol=0)


def test_saved_caption_and_vit_parameter_names_stay():
    # Saved model directories (tests, benchmarks/out, users' runs) load by these names.
    caption = build_model(preset("caption-tiny")).state_dict()
    assert {"encoder.cls_token", "encoder.position", "encoder.patches.projection.weight",
            "encoder.stack.layers.0.self_attention.qkv_proj.weight", "encoder.stack.final_norm.weight",
            "tgt_embed.token.weight", "decoder.layers.0.cross_attention.kv_proj.weight",
            "generator.proj.weight"} <= set(caption)
    assert not any(k.startswith("encoder.encoder.") for k in caption)
    vit = build_model(preset("vit-tiny")).state_dict()
    assert {"cls_token", "position", "patches.projection.weight", "encoder.layers.0.self_attention.qkv_proj.weight",
            "encoder.final_norm.weight", "head.weight"} <= set(vit)
    assert not any(k.startswith("stack.") for k in vit)
