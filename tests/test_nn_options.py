"""The options later families need, each against an independent reference: RMSNorm and bias-free
LayerNorm, rotary positions, gated feed-forwards, grouped-query attention, an attention bias and
scale, config validation, and the parameter counts of Meta's Llama 2 7B and Llama 3 8B."""

import json
import math

import pytest
import torch
from helpers import one_line_error, run_cli
from torch import nn

from glassformer.errors import ConfigError
from glassformer.models import GPTConfig, TransformerConfig, preset
from glassformer.nn import (
    FeedForward,
    KVCache,
    MultiHeadAttention,
    RotaryEmbedding,
    apply_rotary,
    make_norm,
    scaled_dot_product_attention,
)

llama = pytest.importorskip("transformers.models.llama.modeling_llama")
from transformers import LlamaConfig  # noqa: E402

ATOL = 1e-5


def randomise(module: nn.Module, rng: torch.Generator, std: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=rng) * std)


# --- norms ------------------------------------------------------------------------------------


def test_rmsnorm_is_the_formula_and_hf_llamas(rng):
    d, eps = 24, 1e-6
    ours = make_norm("rmsnorm", d, eps=eps)
    gain = torch.randn(d, generator=rng)
    with torch.no_grad():
        ours.weight.copy_(gain)
    x = torch.randn(3, 5, d, generator=rng) * 4 + 1          # not centred: RMSNorm must not centre it
    formula = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain
    theirs = llama.LlamaRMSNorm(d, eps=eps)
    with torch.no_grad():
        theirs.weight.copy_(gain)
        torch.testing.assert_close(ours(x), formula, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=0)
    assert [name for name, _ in ours.named_parameters()] == ["weight"]           # no bias


def test_layernorm_without_bias_is_the_formula(rng):
    d, eps = 24, 1e-5
    ours = make_norm("layernorm", d, eps=eps, bias=False)
    assert [name for name, _ in ours.named_parameters()] == ["weight"]
    gain = torch.randn(d, generator=rng)
    with torch.no_grad():
        ours.weight.copy_(gain)
    x = torch.randn(3, 5, d, generator=rng) * 4 + 1
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), (x - mean) / torch.sqrt(var + eps) * gain, atol=ATOL, rtol=0)


# --- rotary positions ---------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_rotary_matches_hf_llama(rng, theta):
    heads, kv_heads, d_head, max_len = 4, 2, 16, 64
    config = LlamaConfig(hidden_size=heads * d_head, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=max_len, rope_parameters={"rope_type": "default", "rope_theta": theta})
    theirs = llama.LlamaRotaryEmbedding(config)
    ours = RotaryEmbedding(d_head, max_len, theta)
    q = torch.randn(2, heads, 7, d_head, generator=rng)
    k = torch.randn(2, kv_heads, 7, d_head, generator=rng)
    positions = torch.stack([torch.arange(7), torch.randint(0, max_len, (7,), generator=rng)])   # (batch, seq)
    cos, sin = theirs(q, positions)
    q_hf, k_hf = llama.apply_rotary_pos_emb(q, k, cos, sin)
    our_cos, our_sin = ours(positions)
    torch.testing.assert_close(apply_rotary(q, our_cos, our_sin), q_hf, atol=ATOL, rtol=0)
    torch.testing.assert_close(apply_rotary(k, our_cos, our_sin), k_hf, atol=ATOL, rtol=0)
    # the same tables for shared (seq,) positions, broadcast over the batch
    cos1, sin1 = ours(positions[0])
    torch.testing.assert_close(apply_rotary(q, cos1, sin1)[0], q_hf[0], atol=ATOL, rtol=0)


def test_rotary_dot_product_depends_only_on_the_distance(rng):
    d_head = 32
    rope = RotaryEmbedding(d_head, 256)
    q, k = torch.randn(d_head, generator=rng), torch.randn(d_head, generator=rng)

    def score(m: int, n: int) -> torch.Tensor:
        cos, sin = rope(torch.tensor([m, n]))
        rotated_q = apply_rotary(q[None, None, None], cos[..., :1, :], sin[..., :1, :])
        rotated_k = apply_rotary(k[None, None, None], cos[..., 1:, :], sin[..., 1:, :])
        return (rotated_q * rotated_k).sum()

    for m, n in [(0, 0), (3, 0), (0, 5), (17, 9), (40, 41)]:
        base = score(m, n)
        for shift in (1, 7, 100, 200):
            torch.testing.assert_close(score(m + shift, n + shift), base, atol=1e-4, rtol=0)
    # ... and it does depend on the distance: a different gap, a different score
    assert abs(float(score(3, 0)) - float(score(5, 0))) > 1e-3
    assert abs(float(score(0, 0)) - float(q @ k)) < 1e-5                    # position 0 is no rotation


def test_rotary_preserves_norms(rng):
    rope = RotaryEmbedding(16, 128, theta=500000.0)
    x = torch.randn(2, 3, 10, 16, generator=rng)
    cos, sin = rope(torch.randint(0, 128, (2, 10), generator=rng))
    rotated = apply_rotary(x, cos, sin)
    assert not torch.allclose(rotated, x)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)


# --- gated feed-forward ------------------------------------------------------------------------


def test_swiglu_matches_hf_llama_mlp(rng):
    d, d_ff = 32, 88
    theirs = llama.LlamaMLP(LlamaConfig(hidden_size=d, intermediate_size=d_ff, hidden_act="silu", mlp_bias=False))
    randomise(theirs, rng)
    ours = FeedForward(d, d_ff, activation="silu", gated=True, bias=False)
    with torch.no_grad():
        ours.linear1.weight.copy_(torch.cat([theirs.gate_proj.weight, theirs.up_proj.weight]))
        ours.linear2.weight.copy_(theirs.down_proj.weight)
        x = torch.randn(2, 5, d, generator=rng)
        torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=0)


def test_geglu_is_the_formula(rng):
    d, d_ff = 16, 40
    ours = FeedForward(d, d_ff, activation="gelu", gated=True, bias=True)
    randomise(ours, rng)
    x = torch.randn(2, 5, d, generator=rng)
    w1, b1 = ours.linear1.weight, ours.linear1.bias
    gate = x @ w1[:d_ff].T + b1[:d_ff]
    up = x @ w1[d_ff:].T + b1[d_ff:]
    gelu = 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))                # exact GELU, by hand
    expected = (gelu * up) @ ours.linear2.weight.T + ours.linear2.bias
    with torch.no_grad():
        torch.testing.assert_close(ours(x), expected, atol=ATOL, rtol=0)


# --- grouped-query attention -------------------------------------------------------------------


def repeated_kv_reference(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    """torch's ordinary multi-head attention whose h key/value heads repeat our kv heads, each
    serving h / kv consecutive query heads."""
    d, h, kv, dh = ours.d_model, ours.n_heads, ours.n_kv_heads, ours.d_head
    group = h // kv
    w, b = ours.qkv_proj.weight, ours.qkv_proj.bias
    wq, wk, wv = w.split([d, kv * dh, kv * dh])
    bq, bk, bv = b.split([d, kv * dh, kv * dh])

    def repeat(t):   # (kv·dh, ...) -> (h·dh, ...)
        return t.reshape(kv, dh, *t.shape[1:]).repeat_interleave(group, dim=0).reshape(h * dh, *t.shape[1:])

    ref = nn.MultiheadAttention(d, h, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([wq, repeat(wk), repeat(wv)]))
        ref.in_proj_bias.copy_(torch.cat([bq, repeat(bk), repeat(bv)]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref.eval()


@pytest.fixture
def gqa(rng):
    ours = MultiHeadAttention(32, 8, n_kv_heads=2)
    assert ours.qkv_proj.weight.shape == (32 + 2 * 2 * 4, 32)             # [Q; K; V], K and V of kv·d_head
    randomise(ours, rng)
    return ours, repeated_kv_reference(ours)


KEEP = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])                 # (batch, k_len): row 1 has 2 pads


@pytest.mark.parametrize("use_fused", [True, False])
@pytest.mark.parametrize("masks", ["none", "causal", "padding", "both"])
def test_gqa_equals_mha_with_repeated_kv_heads(gqa, rng, use_fused, masks):
    ours, ref = gqa
    x = torch.randn(2, 6, 32, generator=rng)
    causal, padding = masks in ("causal", "both"), masks in ("padding", "both")
    mask = KEEP[:, None, None, :] if padding else None
    out = ours(x, mask=mask, is_causal=causal, use_fused=use_fused).output
    with torch.no_grad():
        expected, _ = ref(x, x, x, need_weights=False, key_padding_mask=~KEEP if padding else None,
                          attn_mask=nn.Transformer.generate_square_subsequent_mask(6).bool() if causal else None)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("use_fused", [True, False])
def test_gqa_cached_equals_uncached_reference(gqa, rng, use_fused):
    ours, ref = gqa
    x = torch.randn(2, 6, 32, generator=rng)
    with torch.no_grad():
        expected, _ = ref(x, x, x, need_weights=False,
                          attn_mask=nn.Transformer.generate_square_subsequent_mask(6).bool())
    cache = KVCache(1, batch=2, kv_heads=2, d_head=4, max_len=6)
    assert cache.keys.shape == (1, 2, 2, 6, 4)                                # kv heads cached, not h
    steps = []
    for chunk in (x[:, :3], x[:, 3:4], x[:, 4:5], x[:, 5:]):                 # a prompt of 3, then one at a time
        steps.append(ours(chunk, mask=cache.step_mask(chunk.shape[1]), cache=cache, use_fused=use_fused).output)
        cache.advance(chunk.shape[1])
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=ATOL, rtol=0)


def test_gqa_weights_are_the_references(gqa, rng):
    ours, ref = gqa
    x = torch.randn(2, 6, 32, generator=rng)
    weights = ours(x, mask=KEEP[:, None, None, :], need_weights=True).weights
    with torch.no_grad():
        _, expected = ref(x, x, x, key_padding_mask=~KEEP, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(weights, expected, atol=ATOL, rtol=0)


# --- attention bias and scale ------------------------------------------------------------------


def formula(q, k, v, *, scale, bias, allowed):
    """softmax(Q Kᵀ · scale + bias) V over the allowed keys; a row with none gives zeros."""
    scores = (q @ k.transpose(-2, -1)) * scale + bias
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)
    return weights @ v


@pytest.mark.parametrize("scale", [None, 1.0, 0.05])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_bias_and_scale_explicit_fused_and_formula_agree(rng, scale, kv_heads):
    b, h, q_len, k_len, dh = 2, 4, 5, 7, 8
    q = torch.randn(b, h, q_len, dh, generator=rng)
    k = torch.randn(b, kv_heads, k_len, dh, generator=rng)
    v = torch.randn(b, kv_heads, k_len, dh, generator=rng)
    bias = torch.randn(1, h, q_len, k_len, generator=rng) * 2              # T5-like: per head, shared by the batch
    mask = torch.rand(b, 1, q_len, k_len, generator=rng) > 0.3
    mask[:, :, :, 0] = True
    mask[1, :, 2] = False                                                   # a query that may attend to nothing
    group = h // kv_heads
    expected = formula(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1),
                       scale=1 / math.sqrt(dh) if scale is None else scale, bias=bias, allowed=mask)
    explicit = scaled_dot_product_attention(q, k, v, mask, bias=bias, scale=scale, need_weights=True)
    fused = scaled_dot_product_attention(q, k, v, mask, bias=bias, scale=scale)
    for out in (explicit.output, fused.output):
        assert not out.isnan().any()
        torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
        assert out[1, :, 2].abs().max() == 0                                 # the fully masked row: zeros
    assert explicit.weights[1, :, 2].abs().max() == 0
    torch.testing.assert_close(explicit.weights.sum(-1)[0], torch.ones(h, q_len), atol=ATOL, rtol=0)


@pytest.mark.parametrize("need_weights", [True, False])
def test_bias_with_the_causal_flag(rng, need_weights):
    q, k, v = (torch.randn(2, 4, 6, 8, generator=rng) for _ in range(3))
    bias = torch.randn(1, 4, 6, 6, generator=rng)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    out = scaled_dot_product_attention(q, k, v, bias=bias, scale=1.0, is_causal=True, need_weights=need_weights)
    torch.testing.assert_close(out.output, formula(q, k, v, scale=1.0, bias=bias, allowed=causal), atol=ATOL, rtol=0)


def test_everything_masked_with_a_bias_gives_zeros_on_both_paths(rng):
    q, k, v = (torch.randn(1, 2, 3, 4, generator=rng) for _ in range(3))
    bias = torch.randn(1, 2, 3, 3, generator=rng)
    nothing = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    for need_weights in (True, False):
        out = scaled_dot_product_attention(q, k, v, nothing, bias=bias, need_weights=need_weights).output
        assert torch.equal(out, torch.zeros_like(out))


# --- config validation ---------------------------------------------------------------------------


BAD_FIELDS = [
    ({"norm": "batchnorm"}, ["norm='batchnorm'", "layernorm", "rmsnorm"]),
    ({"positional": "alibi"}, ["positional='alibi'", "rotary", "learned"]),
    ({"activation": "tanh"}, ["activation='tanh'", "silu", "gelu"]),
    ({"n_heads": 4, "n_kv_heads": 3}, ["n_kv_heads=3", "n_heads=4", "divides"]),
    ({"n_heads": 4, "n_kv_heads": 0}, ["n_kv_heads=0", "positive"]),
]


@pytest.mark.parametrize("change, words", BAD_FIELDS)
@pytest.mark.parametrize("family", ["gpt", "transformer"])
def test_bad_options_are_config_errors_naming_the_field(family, change, words):
    for build in ((lambda: GPTConfig(**change)) if family == "gpt" else (lambda: TransformerConfig(**change)),
                  lambda: preset("llama-tiny" if family == "gpt" else "vaswani-tiny", **change)):
        with pytest.raises(ConfigError) as info:
            build()
        message = str(info.value)
        assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.parametrize("model, words", [
    ({"norm": "batchnorm"}, ["norm='batchnorm'", "rmsnorm"]),
    ({"n_heads": 4, "n_kv_heads": 3}, ["n_kv_heads=3", "n_heads=4"]),
])
def test_cli_refuses_bad_model_options_in_one_line(tmp_path, capsys, model, words):
    (tmp_path / "text.txt").write_text("to be or not to be, that is the question.\n" * 20, encoding="utf-8")
    (tmp_path / "cfg.json").write_text(json.dumps({"model": model}), encoding="utf-8")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "lm", "--data", tmp_path / "text.txt", "--config", tmp_path / "cfg.json",
                           "--out", out)
    one_line_error(code, err, *words)
    assert "Traceback" not in err and not out.exists()


# --- parameter counts of the Llama presets --------------------------------------------------------


def llama_count(vocab, d, n_layers, n_heads, n_kv_heads, d_ff):
    """Llama's parameters by hand: untied embedding and output, no biases, RMSNorm gains only."""
    d_kv = d // n_heads * n_kv_heads
    attention = d * d + 2 * d * d_kv + d * d              # W^Q, W^K, W^V (kv heads), W^O
    ffn = 3 * d * d_ff                                    # gate, up, down
    return 2 * vocab * d + n_layers * (attention + ffn + 2 * d) + d


@pytest.mark.parametrize("name, meta_count, shape", [
    ("llama2-7b", 6_738_415_616, (32000, 4096, 32, 32, 32, 11008)),
    ("llama3-8b", 8_030_261_248, (128256, 4096, 32, 32, 8, 14336)),
])
def test_llama_presets_count_metas_parameters(capsys, name, meta_count, shape):
    assert llama_count(*shape) == meta_count                                 # the formula is Meta's number ...
    code, out, _ = run_cli(capsys, "params", name)                           # ... and so is the model (meta device)
    assert code == 0
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert f"{meta_count:,}" in total
