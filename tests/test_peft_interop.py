"""LoRA adapters written in peft's layout: they load back onto our model, and through ``peft`` onto the
Hugging Face model our base converts to, computing the same logits."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from glassformer.errors import CheckpointError  # noqa: E402
from glassformer.interop import save_hf_directory  # noqa: E402
from glassformer.interop.peft import ADAPTER_CONFIG, load_adapter, save_adapter  # noqa: E402
from glassformer.model_dir import load_model_dir, save_model_dir  # noqa: E402
from glassformer.models import build_model, preset  # noqa: E402
from glassformer.nn.lora import LoRAConfig, add_lora, lora_layers  # noqa: E402

SHAPES = {"gpt2": ("gpt-tiny", {}), "llama": ("llama-tiny", {})}


def base_dir(path, name: str, seed: int = 0, **overrides):
    """A model directory of a tiny GPT-2- or Llama-shaped GPT with weights large enough for varied logits."""
    torch.manual_seed(seed)
    model = build_model(preset(SHAPES[name][0], **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_model_dir(path, model)
    return path


def adapted(base, config: LoRAConfig, seed: int = 1):
    """The base directory's model with ``config``'s adapters, B no longer zero."""
    model = load_model_dir(base).model
    add_lora(model, config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            for b in layer.lora_B.values():
                b.normal_(std=0.1)
    return model.eval()


def peft_logits(base, adapter, tmp_path, tokens):
    """Logits of the Hugging Face model that ``glassformer convert --to hf`` writes for ``base``, with
    the adapter loaded by ``peft``."""
    hf_dir = tmp_path / "hf"
    save_hf_directory(load_model_dir(base).model, hf_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    model = peft.PeftModel.from_pretrained(hf, str(adapter)).eval()
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.parametrize("family,targets,rslora", [
    ("gpt2", ("q", "v"), False),             # q and v: one c_attn LoRA of rank 2r, B block-diagonal
    ("gpt2", ("all-linear",), True),         # c_attn of rank 3r beside c_proj/c_fc of rank r: rank/alpha patterns
    ("llama", ("q", "v"), False),            # q_proj / v_proj, grouped K/V, rotary
    ("llama", ("all-linear",), False),       # gate_proj / up_proj are the parts of our fused linear1
])
def test_adapter_through_peft_and_back(tmp_path, family, targets, rslora):
    base = base_dir(tmp_path / "base", family)
    config = LoRAConfig(r=4, alpha=12.0, targets=targets, rslora=rslora)
    ours = adapted(base, config)
    tokens = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ours(tokens)
        assert (expected - load_model_dir(base).model(tokens)).abs().max() > 1e-2     # the adapter matters
    save_adapter(tmp_path / "adapter", ours, config, base)

    settings = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert settings["base_model_name_or_path"] == str(base.resolve())
    assert settings["fan_in_fan_out"] is (family == "gpt2")
    if family == "gpt2" and targets == ("q", "v"):
        assert settings["target_modules"] == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
        assert settings["rank_pattern"] == {m: 8 for m in settings["target_modules"]}
        assert settings["alpha_pattern"] == {m: 24.0 for m in settings["target_modules"]}    # 24/8 = 12/4

    theirs = peft_logits(base, tmp_path / "adapter", tmp_path, tokens)
    torch.testing.assert_close(theirs, expected, atol=1e-5, rtol=0)

    back = load_adapter(tmp_path / "adapter").model           # onto our model again: the same numbers
    with torch.no_grad():
        assert torch.equal(back(tokens), expected)
        assert torch.equal(load_model_dir(tmp_path / "adapter").model(tokens), expected)   # generate/serve path


def test_an_adapter_on_a_converted_hugging_face_base(tmp_path):
    """A Hugging Face GPT-2 directory as the base: the adapter names it, and loads onto it."""
    ours_dir = base_dir(tmp_path / "base", "gpt2")
    hf_dir = tmp_path / "hf-base"
    save_hf_directory(load_model_dir(ours_dir).model, hf_dir)
    config = LoRAConfig(r=2)
    model = adapted(hf_dir, config)
    save_adapter(tmp_path / "adapter", model, config, hf_dir)
    tokens = torch.arange(20)[None]
    with torch.no_grad():
        assert torch.equal(load_adapter(tmp_path / "adapter").model(tokens), model(tokens))


def test_an_adapter_whose_base_does_not_match(tmp_path):
    base = base_dir(tmp_path / "base", "gpt2")
    config = LoRAConfig()
    save_adapter(tmp_path / "adapter", adapted(base, config), config, base)
    settings_file = tmp_path / "adapter" / ADAPTER_CONFIG
    settings = json.loads(settings_file.read_text())

    settings["base_model_name_or_path"] = str(tmp_path / "gone")              # the base directory is missing
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(CheckpointError, match="trained on the base model .*gone.*does not exist") as e:
        load_adapter(tmp_path / "adapter")
    assert "\n" not in str(e.value)

    wider = base_dir(tmp_path / "wider", "gpt2", d_model=64)                    # a base of another shape
    settings["base_model_name_or_path"] = str(wider)
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(CheckpointError, match="does not belong to the base model .*shape") as e:
        load_model_dir(tmp_path / "adapter")
    assert "\n" not in str(e.value)

    llama = base_dir(tmp_path / "llama", "llama")                               # another family
    settings["base_model_name_or_path"] = str(llama)
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(CheckpointError, match="for a gpt2 model, the base is llama"):
        load_adapter(tmp_path / "adapter")


def test_saving_needs_the_base_and_adapters(tmp_path):
    base = base_dir(tmp_path / "base", "gpt2")
    with pytest.raises(CheckpointError, match="base model directory .*missing"):
        save_adapter(tmp_path / "adapter", adapted(base, LoRAConfig()), LoRAConfig(), tmp_path / "missing")
    assert not (tmp_path / "adapter").exists()


@pytest.mark.parametrize("family,targets", [("gpt2", ["c_attn"]), ("llama", ["q_proj", "v_proj", "down_proj"])])
def test_an_adapter_that_peft_wrote_loads_onto_our_model(tmp_path, family, targets):
    """peft's own adapter over a Hugging Face directory (GPT-2's c_attn: one A shared by our q, k, v)."""
    hf_dir = tmp_path / "hf"
    save_hf_directory(load_model_dir(base_dir(tmp_path / "base", family)).model, hf_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    model = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=6, target_modules=targets, use_rslora=True,
                                                    fan_in_fan_out=family == "gpt2"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    model.save_pretrained(tmp_path / "adapter")
    tokens = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = model.eval()(tokens).logits
        with model.disable_adapter():
            assert (theirs - model(tokens).logits).abs().max() > 1e-2          # the adapter matters
        torch.testing.assert_close(load_adapter(tmp_path / "adapter").model(tokens), theirs, atol=1e-5, rtol=0)


def test_a_peft_adapter_we_cannot_read_is_one_line(tmp_path):
    hf_dir = tmp_path / "hf"
    save_hf_directory(load_model_dir(base_dir(tmp_path / "base", "llama")).model, hf_dir)
    model = peft.get_peft_model(transformers.AutoModelForCausalLM.from_pretrained(hf_dir),
                                peft.LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(CheckpointError, match="does not belong .*'use_dora': True.* not supported"):
        load_adapter(tmp_path / "adapter")
