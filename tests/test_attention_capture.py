"""capture_attention: the weights recomputed beside the fused path equal the explicit path's."""

import pytest
import torch

from glassformer.errors import InputError
from glassformer.explain.attention import capture_attention
from glassformer.models import build_model
from glassformer.models.config import preset

ATOL = 1e-5


def _same(captured: dict, explicit: list, prefix: str, kind: str):
    assert len(explicit) == len([n for n in captured if n.startswith(prefix)])
    for i, w in enumerate(explicit):
        got = captured[f"{prefix}.layers.{i}.{kind}"]
        assert got.device.type == "cpu" and got.dtype == torch.float32
        assert got.shape == w.shape
        torch.testing.assert_close(got, w.float(), atol=ATOL, rtol=0)
        torch.testing.assert_close(got.sum(-1), torch.ones(got.shape[:-1]), atol=ATOL, rtol=0)


def _model(name, **kw):
    torch.manual_seed(0)
    return build_model(preset(name, **kw)).eval()


def test_gpt_matches_explicit_path_and_future_is_zero():
    model = _model("gpt-tiny")
    tokens = torch.randint(0, 64, (2, 12))
    with capture_attention(model) as cap:
        model.hidden_states(tokens)                                  # the fused path
    explicit = model.hidden_states(tokens, need_weights=True, use_fused=False).self_weights
    assert set(cap.cross_attention) == set()
    _same(cap.self_attention, explicit, "decoder", "self_attention")
    future = torch.ones(12, 12).triu(1).bool()
    for w in cap.weights.values():
        assert (w[..., future] == 0).all()


def test_llama_rotary_and_grouped_heads():
    model = _model("llama-tiny")
    tokens = torch.randint(0, 64, (1, 10))
    with capture_attention(model) as cap:
        model(tokens)
    explicit = model.hidden_states(tokens, need_weights=True, use_fused=False).self_weights
    _same(cap.weights, explicit, "decoder", "self_attention")


def test_translator_encoder_decoder_and_cross_attention():
    model = _model("vaswani-tiny")
    pad = model.config.pad_id
    src = torch.randint(4, 50, (2, 9))
    src[1, 6:] = pad                                                 # padding keys
    tgt = torch.randint(4, 50, (2, 7))
    with capture_attention(model) as cap:
        model(src, tgt)
    enc = model.encode(src, need_weights=True, use_fused=False)
    dec = model.decode(tgt, enc.memory if hasattr(enc, "memory") else enc[0], enc[1], need_weights=True,
                       use_fused=False)
    _same(cap.self_attention, enc[2], "encoder", "self_attention")
    _same(cap.self_attention, dec.self_weights, "decoder", "self_attention")
    _same(cap.cross_attention, dec.cross_weights, "decoder", "cross_attention")
    for name, w in cap.weights.items():
        if name.startswith("encoder") or "cross" in name:
            assert (w[1, :, :, 6:] == 0).all(), name                  # padding keys get exactly 0
    assert cap.kinds["decoder.layers.1.cross_attention"] == "cross"


def test_bert_with_padding():
    model = _model("bert-tiny")
    tokens = torch.randint(5, 100, (2, 11))
    tokens[0, 8:] = model.config.pad_id
    with capture_attention(model, layers=[1]) as cap:
        model.encode(tokens)
    explicit = model.encode(tokens, need_weights=True, use_fused=False)[2]
    assert list(cap.weights) == [n for n in cap.weights if ".layers.1." in n] and len(cap.weights) == 1
    (name, got), = cap.weights.items()
    torch.testing.assert_close(got, explicit[1], atol=ATOL, rtol=0)
    assert (got[0, :, :, 8:] == 0).all()
    torch.testing.assert_close(got.sum(-1), torch.ones(got.shape[:-1]), atol=ATOL, rtol=0)


def test_vit():
    model = _model("vit-tiny")
    images = torch.rand(3, 1, 8, 8)
    with capture_attention(model) as cap:
        model(images)
    explicit = model.features(images, need_weights=True).self_weights
    prefix = next(iter(cap.weights)).split(".layers.")[0]
    _same(cap.weights, explicit, prefix, "self_attention")


def test_caption_model_self_and_cross():
    model = _model("caption-tiny")
    c = model.config
    images = torch.rand(2, c.channels, c.image_size, c.image_width)
    tgt = torch.randint(4, c.vocab_size, (2, 5))
    with capture_attention(model) as cap:
        model(images, tgt)
    explicit = model.decode(tgt, model.encode(images).hidden, need_weights=True, use_fused=False)
    _same(cap.cross_attention, explicit.cross_weights, "decoder", "cross_attention")
    _same(cap.self_attention, explicit.self_weights, "decoder", "self_attention")
    assert any(n.startswith("encoder") for n in cap.self_attention)


def test_one_layer_and_head_of_a_1024_token_input():
    model = _model("gpt-tiny", max_len=1024)
    tokens = torch.randint(0, 64, (1, 1024))
    with capture_attention(model, layers=["decoder.layers.1"], heads=[2]) as cap:
        model.hidden_states(tokens)
    assert list(cap.weights) == ["decoder.layers.1.self_attention"]
    w = cap.weights["decoder.layers.1.self_attention"]
    assert w.shape == (1, 1, 1024, 1024)                              # 4 MiB: only that layer and head
    full = model.hidden_states(tokens, need_weights=True, use_fused=False).self_weights[1][:, 2:3]
    torch.testing.assert_close(w, full, atol=ATOL, rtol=0)
    assert (w[0, 0].triu(1) == 0).all()


def test_hooks_are_removed_and_bad_choices_are_refused():
    model = _model("gpt-tiny")
    tokens = torch.randint(0, 64, (1, 4))
    with capture_attention(model) as cap:
        pass
    model.hidden_states(tokens)
    assert cap.weights == {}
    with pytest.raises(InputError, match="no attention module"):
        with capture_attention(model, layers=["nope"]):
            pass
    with pytest.raises(InputError, match=r"layer 7 does not exist; this model's layer indices are 0\.\.1"):
        with capture_attention(model, layers=[7]):
            pass
    with pytest.raises(InputError, match="head 9"):
        with capture_attention(model, heads=[9]):
            pass


def test_kv_cache_steps_are_refused():
    model = _model("gpt-tiny")
    with pytest.raises(InputError, match="KV cache"):
        with capture_attention(model):
            cache, first = model.start_decoding(torch.randint(0, 64, (1, 4)), 3)
            model.decode_step(first, cache)


def _torch_attention(ours) -> torch.nn.MultiheadAttention:
    """PyTorch's multi-head attention with our module's weights (in_proj = [W^Q; W^K; W^V])."""
    theirs = torch.nn.MultiheadAttention(ours.d_model, ours.n_heads, batch_first=True)
    with torch.no_grad():
        if ours.cross_attention:
            theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.kv_proj.weight]))
            theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.kv_proj.bias]))
        else:
            theirs.in_proj_weight.copy_(ours.qkv_proj.weight)
            theirs.in_proj_bias.copy_(ours.qkv_proj.bias)
    return theirs


def test_captured_weights_equal_torch_multihead_attention():
    # An independent reference: torch.nn.MultiheadAttention (average_attn_weights=False) fed the inputs
    # each module received, under the same padding and causal masks.
    model = _model("vaswani-tiny")
    src = torch.randint(4, 50, (2, 9))
    src[1, 6:] = model.config.pad_id
    tgt = torch.randint(4, 50, (2, 7))
    inputs = {}

    def keep_inputs(name):
        return lambda module, args, kwargs: inputs.__setitem__(name, args)
    handles = [m.register_forward_pre_hook(keep_inputs(n), with_kwargs=True)
               for n, m in model.named_modules() if n.endswith("attention")]
    with torch.no_grad(), capture_attention(model) as cap:
        model(src, tgt)
    for h in handles:
        h.remove()
    padding = src == model.config.pad_id                                # torch: True = ignore
    future = torch.ones(7, 7, dtype=torch.bool).triu(1)
    assert len(cap.weights) == 6
    for name, got in cap.weights.items():
        module = model.get_submodule(name)
        x = inputs[name][0]
        with torch.no_grad():
            if name.startswith("encoder"):
                _, want = _torch_attention(module)(x, x, x, key_padding_mask=padding, average_attn_weights=False)
            elif module.cross_attention:
                memory = inputs[name][1]
                _, want = _torch_attention(module)(x, memory, memory, key_padding_mask=padding,
                                                   average_attn_weights=False)
            else:
                _, want = _torch_attention(module)(x, x, x, attn_mask=future, average_attn_weights=False)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=name)


def test_only_the_chosen_modules_leave_the_fused_path(monkeypatch):
    import glassformer.nn.attention as attention

    fused = []
    sdpa = attention.F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", lambda *a, **k: fused.append(1) or sdpa(*a, **k))
    model = _model("gpt-tiny")
    tokens = torch.randint(0, 64, (1, 6))
    with capture_attention(model, layers=[1]) as cap:
        model.hidden_states(tokens)
    assert len(fused) == 1 and list(cap.weights) == ["decoder.layers.1.self_attention"]   # layer 0 only
    fused.clear()
    model.hidden_states(tokens)
    assert len(fused) == 2                                                  # both fused again after the capture
    assert all(not m.keep_weights and m.kept_weights is None for m in model.modules()
               if isinstance(m, attention.MultiHeadAttention))
