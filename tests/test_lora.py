"""LoRA (glassformer.nn.lora): the adapted model equals its base at initialisation, only the adapters
train, merging changes nothing, and `glassformer merge-lora` writes a plain model directory."""

import math

import pytest
import torch
from helpers import one_line_error, run_cli
from torch import nn

from glassformer.cli.lora import add_lora_flags, lora_setting
from glassformer.cli.main import _Parser
from glassformer.errors import CheckpointError, ConfigError
from glassformer.interop.peft import save_adapter
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import build_model, preset
from glassformer.nn.lora import (LoRAConfig, LoRALinear, adapters_disabled, add_lora, has_lora, load_lora_state_dict,
                                 lora_layers, lora_state_dict, merge_lora, trainable_parameters)

PRESETS = ["gpt-tiny", "llama-tiny"]        # GPT-2-style; Llama-style (grouped K/V, rotary, SwiGLU, untied)


def tiny(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(preset(name))
    with torch.no_grad():                    # weights larger than at initialisation: logits worth comparing
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def tokens(seed: int = 0):
    return torch.randint(0, 64, (3, 20), generator=torch.Generator().manual_seed(seed))


def randomise_adapters(model, seed: int = 1, std: float = 0.05) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in lora_state_dict(model).values():
            p.normal_(std=std)


@pytest.mark.parametrize("name", PRESETS)
def test_at_initialisation_the_adapted_model_is_the_base(name):
    model = tiny(name)
    x = tokens()
    with torch.no_grad():
        base = model(x)
        add_lora(model, LoRAConfig(targets=("all-linear",)))
        assert torch.equal(model(x), base)
    for _, layer in lora_layers(model):
        assert all(torch.count_nonzero(b) == 0 for b in layer.lora_B.values())
        assert all(torch.count_nonzero(a) == a.numel() for a in layer.lora_A.values())


def test_a_is_initialised_as_peft_initialises_it():
    """peft's lora_A is nn.Linear(d_in, r, bias=False) with its default init, kaiming-uniform(a=√5):
    the same random numbers from the same seed."""
    base = nn.Linear(32, 96)
    torch.manual_seed(7)
    layer = LoRALinear(base, {"q": (0, 32)}, r=4, scale=1.0, dropout=0.0)
    torch.manual_seed(7)
    assert torch.equal(layer.lora_A["q"], nn.Linear(32, 4, bias=False).weight)
    assert layer.weight is base.weight and layer.bias is base.bias


@pytest.mark.parametrize("name", PRESETS)
def test_only_the_adapters_train_and_their_count_is_right(name):
    model = tiny(name)
    c = model.config
    before = {k: v.clone() for k, v in model.state_dict().items()}
    total_before = trainable_parameters(model)[1]
    r = 4
    add_lora(model, LoRAConfig(r=r, targets=("q", "v")))
    d_kv = (c.n_kv_heads or c.n_heads) * (c.d_model // c.n_heads)
    expected = c.n_layers * (r * c.d_model + c.d_model * r      # A_q, B_q
                             + r * c.d_model + d_kv * r)        # A_v, B_v (grouped: d_kv rows)
    assert trainable_parameters(model) == (expected, total_before + expected)
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".lora_" not in n)

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = tokens()
    for _ in range(2):                       # step 1 moves B off zero; step 2 then moves A too
        optimizer.zero_grad()
        model(x[:, :-1], x[:, 1:]).backward()
        optimizer.step()
    after = model.state_dict()
    for name_, tensor in before.items():
        assert torch.equal(after[name_], tensor), f"{name_} changed"
    for name_, tensor in lora_state_dict(model).items():
        assert torch.count_nonzero(tensor) > 0 and name_ in after


@pytest.mark.parametrize("name", PRESETS)
def test_merging_and_disabling(name):
    model = tiny(name)
    x = tokens()
    with torch.no_grad():
        base = model(x)
        add_lora(model, LoRAConfig(targets=("all-linear",), alpha=8.0))
        randomise_adapters(model)
        adapted = model(x)
        assert (adapted - base).abs().max() > 1e-2
        with adapters_disabled(model):
            assert torch.equal(model(x), base)
        assert torch.equal(model(x), adapted)                  # enabled again on leaving
        merged = merge_lora(model)
        assert not has_lora(merged) and type(merged.decoder.layers[0].self_attention.qkv_proj) is nn.Linear
        torch.testing.assert_close(merged(x), adapted, atol=1e-5, rtol=0)
    assert all(p.requires_grad for p in merged.parameters())



def test_dropout_falls_on_the_adapters_input_only():
    """peft's lora_dropout: dropout(x) enters A, the base path sees x itself; off in eval mode."""
    model = tiny("gpt-tiny")                 # the model's own dropout is 0
    x = tokens()
    with torch.no_grad():
        base = model(x)
        add_lora(model, LoRAConfig(dropout=0.5))
        model.train()
        assert torch.equal(model(x), base)                       # B = 0: dropout changes nothing yet
        randomise_adapters(model)
        assert not torch.equal(model(x), model(x))               # now it does, call by call
        model.eval()
        assert torch.equal(model(x), model(x))

def test_the_update_is_scale_times_b_a_on_its_rows_only():
    """The closed form: y = x Wᵀ + b + scale · x Aᵀ Bᵀ, on the rows of V only; rsLoRA's scale is α/√r."""
    config = LoRAConfig(r=16, alpha=8.0, targets=("v",), rslora=True)
    assert config.scale == 8.0 / 4 and LoRAConfig().scale == 16.0 / 8
    model = tiny("llama-tiny")
    add_lora(model, config)
    randomise_adapters(model)
    attention = model.decoder.layers[0].self_attention
    layer = attention.qkv_proj
    d, d_kv = attention.d_model, attention.n_kv_heads * attention.d_head
    x = torch.randn(5, d)
    with torch.no_grad():
        delta = layer(x) - x @ layer.weight.t()
        a, b = layer.lora_A["v"], layer.lora_B["v"]
        torch.testing.assert_close(delta[:, d + d_kv:], 2.0 * x @ a.t() @ b.t(), atol=1e-6, rtol=1e-5)
        assert torch.count_nonzero(delta[:, :d + d_kv]) == 0


@pytest.mark.parametrize("name", PRESETS)
def test_all_linear_covers_every_linear_of_the_blocks_but_not_the_output(name):
    model = tiny(name)
    names = add_lora(model, LoRAConfig(targets=("all-linear",)))
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert [n for n, m in linears if not isinstance(m, LoRALinear)] == ["lm_head"]
    per_layer = {n.removeprefix("decoder.layers.0.") for n in names if n.startswith("decoder.layers.0.")}
    ffn = {"feed_forward.linear1.gate", "feed_forward.linear1.up"} if model.config.gated else {"feed_forward.linear1"}
    assert per_layer == {"self_attention.qkv_proj.q", "self_attention.qkv_proj.k", "self_attention.qkv_proj.v",
                         "self_attention.out_proj", "feed_forward.linear2"} | ffn


def test_targets_by_name_and_glob():
    model = tiny("gpt-tiny")
    assert add_lora(model, LoRAConfig(targets=("decoder.layers.1.*", "out_proj"))) == [
        "decoder.layers.0.self_attention.out_proj",
        "decoder.layers.1.self_attention.qkv_proj.q", "decoder.layers.1.self_attention.qkv_proj.k",
        "decoder.layers.1.self_attention.qkv_proj.v", "decoder.layers.1.self_attention.out_proj",
        "decoder.layers.1.feed_forward.linear1", "decoder.layers.1.feed_forward.linear2"]
    with pytest.raises(ConfigError, match="already has LoRA"):
        add_lora(model, LoRAConfig())


@pytest.mark.parametrize("targets, word", [(("xyz",), "'xyz'"), (("q", "gate"), "'gate'")])   # gpt-tiny is not gated
def test_a_target_that_matches_nothing_is_refused_by_name(targets, word):
    model = tiny("gpt-tiny")
    with pytest.raises(ConfigError, match=f"LoRA target {word} .*matches no linear layer.*choose among: q, k, v") as e:
        add_lora(model, LoRAConfig(targets=targets))
    assert "\n" not in str(e.value)
    assert not has_lora(model) and all(p.requires_grad for p in model.parameters())     # nothing changed


@pytest.mark.parametrize("fields, word", [
    ({"r": 0}, "r=0"), ({"r": 2.5}, "r=2.5"), ({"alpha": -1.0}, "alpha=-1.0"), ({"alpha": math.nan}, "alpha=nan"),
    ({"dropout": 1.0}, "dropout=1.0"), ({"targets": ()}, "targets"), ({"targets": "q,,v"}, "targets"),
    ({"rank": 8}, "unknown LoRA setting"),
])
def test_bad_settings(fields, word):
    with pytest.raises(ConfigError, match=word):
        LoRAConfig.from_dict(fields)


def test_settings_round_trip():
    config = LoRAConfig(r=4, alpha=8.0, dropout=0.1, targets="q, v ,out_proj", rslora=True)
    assert config.targets == ("q", "v", "out_proj")
    assert LoRAConfig.from_dict(config.to_dict()) == config


def test_lora_state_dict_round_trip_and_a_mismatch():
    model = tiny("llama-tiny")
    add_lora(model, LoRAConfig(r=4))
    randomise_adapters(model)
    state = {k: v.clone() for k, v in lora_state_dict(model).items()}
    x = tokens()
    with torch.no_grad():
        expected = model(x)
    other = tiny("llama-tiny")
    add_lora(other, LoRAConfig(r=4))
    load_lora_state_dict(other, state)
    with torch.no_grad():
        assert torch.equal(other(x), expected)
    wrong = tiny("llama-tiny")
    add_lora(wrong, LoRAConfig(r=2))
    with pytest.raises(CheckpointError, match="has shape \\[4, 32\\] but this model's adapter has \\[2, 32\\]"):
        load_lora_state_dict(wrong, state)


# -- the command line ------------------------------------------------------------------------------
def lora_parser():
    parser = _Parser(prog="glassformer finetune sft")
    add_lora_flags(parser)
    return parser


def test_lora_flags():
    assert lora_setting(lora_parser().parse_args([])) is None
    assert lora_setting(lora_parser().parse_args(["--lora"])) == LoRAConfig().to_dict()
    args = lora_parser().parse_args(["--lora", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1",
                                     "--lora-targets", "all-linear", "--rslora"])
    assert lora_setting(args) == LoRAConfig(r=4, alpha=8.0, dropout=0.1, targets=("all-linear",), rslora=True).to_dict()


@pytest.mark.parametrize("argv, word", [
    (["--lora", "--lora-r", "0"], "--lora-r"), (["--lora", "--lora-r", "x"], "--lora-r"),
    (["--lora", "--lora-alpha", "nan"], "--lora-alpha"), (["--lora", "--lora-dropout", "1"], "--lora-dropout"),
])
def test_bad_lora_flags_are_one_line(capsys, argv, word):
    with pytest.raises(SystemExit) as e:
        lora_parser().parse_args(argv)
    one_line_error(e.value.code, capsys.readouterr().err, word, "is invalid" if "x" not in argv else "not an integer")


@pytest.mark.parametrize("argv, word", [
    (["--lora-r", "4"], "--lora-r sets up LoRA, which is off; add --lora"),
    (["--rslora"], "--rslora sets up LoRA"),
    (["--lora", "--lora-targets", ","], "LoRA targets"),
])
def test_lora_flags_that_do_not_fit(argv, word):
    with pytest.raises(ConfigError, match=word):
        lora_setting(lora_parser().parse_args(argv))


@pytest.fixture()
def adapter(tmp_path):
    """An adapter directory (q, v, random B) over a saved gpt-tiny, and the adapted model."""
    base = tmp_path / "base"
    save_model_dir(base, tiny("gpt-tiny"))
    model = load_model_dir(base).model
    config = LoRAConfig(r=4)
    add_lora(model, config)
    randomise_adapters(model, std=0.1)
    save_adapter(tmp_path / "adapter", model, config, base)
    return tmp_path / "adapter", model.eval()


def test_merge_lora_writes_a_plain_model_directory(tmp_path, capsys, adapter):
    adapter_dir, model = adapter
    code, out, err = run_cli(capsys, "merge-lora", adapter_dir, "--out", tmp_path / "merged")
    assert code == 0, err
    assert "wrote" in out and "merged" in out
    merged = load_model_dir(tmp_path / "merged")
    assert not has_lora(merged.model) and sorted(p.name for p in (tmp_path / "merged").iterdir()) == \
        ["config.json", "model.safetensors"]
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(merged.model(x), model(x), atol=1e-5, rtol=0)


def test_merge_lora_refuses_what_it_must_not_write(tmp_path, capsys, adapter):
    adapter_dir, _ = adapter
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "merge-lora", adapter_dir, "--out", out)
    one_line_error(code, err, "already exists", "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    code, _, err = run_cli(capsys, "merge-lora", adapter_dir, "--out", tmp_path / "base", "--force")
    one_line_error(code, err, "which this command reads")

    code, _, err = run_cli(capsys, "merge-lora", tmp_path / "base", "--out", tmp_path / "new")
    one_line_error(code, err, "is not an adapter directory")

    code, _, err = run_cli(capsys, "merge-lora", adapter_dir, "--out", out, "--force")
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_merge_lora_with_a_missing_base_writes_nothing(tmp_path, capsys, adapter):
    adapter_dir, _ = adapter
    (tmp_path / "base").rename(tmp_path / "moved")
    code, _, err = run_cli(capsys, "merge-lora", adapter_dir, "--out", tmp_path / "merged")
    one_line_error(code, err, "was trained on the base model", "does not exist")
    assert not (tmp_path / "merged").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "moved"]

