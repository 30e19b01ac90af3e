"""Output layers of Hugging Face directories as transformers loads them: an untied Marian head, a file
whose lm_head differs from the embedding its config ties it to, and architectures with heads glassformer
does not implement (refused by name)."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

from glassformer.errors import ConfigError  # noqa: E402
from glassformer.generation import SamplingOptions, generate  # noqa: E402
from glassformer.model_dir import load_model_dir  # noqa: E402
from helpers import one_line_error, run_cli  # noqa: E402

VOCAB, PAD, EOS = 64, 63, 0


def _marian(tie: bool, seed: int = 0):
    """A tiny MarianMTModel with shared source/target embeddings and a random output bias (PAD never wins)."""
    torch.manual_seed(seed)
    config = transformers.MarianConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, activation_function="swish",
        scale_embedding=True, pad_token_id=PAD, decoder_start_token_id=PAD, eos_token_id=EOS,
        forced_eos_token_id=None, max_position_embeddings=64, dropout=0.0, tie_word_embeddings=tie)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():              # larger weights than the initialisation's: varied continuations
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "embed_positions" not in name:      # (the sinusoid, computed, never saved)
                p.add_(torch.randn_like(p) * 0.3)
        model.final_logits_bias.normal_(0.0, 0.5)
        model.final_logits_bias[0, PAD] = -1e4
    return model


def _gpt2(tie: bool = True):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie)
    return transformers.GPT2LMHeadModel(config).eval()


def _llama(tie: bool = True, cls=None):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=tie, pad_token_id=0)
    return (cls or transformers.LlamaForCausalLM)(config).eval()


def _sources() -> torch.Tensor:
    src = torch.randint(2, PAD, (3, 10), generator=torch.Generator().manual_seed(3))
    src[:, -1] = EOS
    src[1, 6:] = PAD
    src[1, 5] = EOS
    return src


def _marian_logits(model, src, tgt) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=src, attention_mask=(src != PAD).long(), decoder_input_ids=tgt).logits


def _targets() -> torch.Tensor:
    tgt = torch.randint(1, PAD, (3, 8), generator=torch.Generator().manual_seed(4))
    tgt[:, 0] = PAD                               # decoding starts from the pad token
    return tgt


def _assert_same_as_marian(ours, hf) -> None:
    """Teacher-forced logits within 1e-4, and the same greedy tokens as ``MarianMTModel.generate``."""
    src, tgt = _sources(), _targets()
    with torch.no_grad():
        torch.testing.assert_close(ours(src, tgt), _marian_logits(hf, src, tgt), atol=1e-4, rtol=0)
        theirs = hf.generate(input_ids=src, attention_mask=(src != PAD).long(), num_beams=1, do_sample=False,
                             max_new_tokens=12, min_new_tokens=12)[:, 1:]
    cache, first = ours.start_decoding(src, 12)
    mine = generate(ours, cache, first, SamplingOptions(max_new_tokens=12, min_new_tokens=12, eos_id=EOS, pad_id=PAD))
    assert len(set(theirs.flatten().tolist())) > 2                 # a continuation worth comparing
    assert torch.equal(mine, theirs)


def test_marian_untied_head_with_shared_embeddings_and_its_round_trip(tmp_path, capsys):
    hf = _marian(tie=False)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model_dir(tmp_path / "hf").model
    assert ours.config.tie_embeddings != "all"
    _assert_same_as_marian(ours, hf)
    # glassformer's layout and back: the untied head is written, and transformers reads it again
    assert run_cli(capsys, "convert", "--from", "hf", tmp_path / "hf", tmp_path / "ours")[0] == 0
    assert run_cli(capsys, "convert", "--to", "hf", tmp_path / "ours", tmp_path / "back")[0] == 0
    again = transformers.MarianMTModel.from_pretrained(tmp_path / "back").eval()
    src, tgt = _sources(), _targets()
    torch.testing.assert_close(_marian_logits(again, src, tgt), _marian_logits(hf, src, tgt), atol=1e-5, rtol=0)
    _assert_same_as_marian(load_model_dir(tmp_path / "back").model, hf)


def _rewrite_head(path, shape) -> torch.Tensor:
    """Put a random ``lm_head.weight`` in ``path``/model.safetensors (its config still says tied)."""
    file = path / "model.safetensors"
    weights = load_file(str(file))
    weights["lm_head.weight"] = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    save_file(weights, str(file), metadata={"format": "pt"})
    return weights["lm_head.weight"]


@pytest.mark.parametrize("family", ["gpt2", "llama", "marian"])
def test_a_head_in_the_file_that_differs_from_the_tied_embedding_is_used(family, tmp_path, rng):
    """transformers warns ("both are present in the checkpoints with different values, so we will NOT tie
    them") and uses the file's lm_head; so do we."""
    model = {"gpt2": _gpt2, "llama": _llama, "marian": _marian}[family](tie=True)
    model.save_pretrained(tmp_path)
    head = _rewrite_head(tmp_path, (VOCAB, 32))
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    if family == "marian":
        hf = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
        assert torch.equal(hf.lm_head.weight, head)
        _assert_same_as_marian(load_model_dir(tmp_path).model, hf)
        return
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(hf.lm_head.weight, head)
    ours = load_model_dir(tmp_path).model
    x = torch.randint(0, VOCAB, (2, 16), generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=1e-4, rtol=0)


def _gpt2_classifier():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                     num_labels=3, pad_token_id=0)
    return transformers.GPT2ForSequenceClassification(config)


def _t5_encoder():
    config = transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    return transformers.T5EncoderModel(config)


def _vit_model():
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64)
    return transformers.ViTModel(config)


@pytest.mark.parametrize("build,architecture", [
    (_gpt2_classifier, "GPT2ForSequenceClassification"),
    (lambda: _llama(tie=True, cls=transformers.LlamaForSequenceClassification), "LlamaForSequenceClassification"),
    (lambda: _llama(tie=False, cls=transformers.LlamaForSequenceClassification), "LlamaForSequenceClassification"),
    (lambda: _llama(tie=False, cls=transformers.LlamaModel), "LlamaModel"),
    (_t5_encoder, "T5EncoderModel"),
    (_vit_model, "ViTModel"),
])
def test_architectures_without_a_loader_are_refused_by_name(build, architecture, tmp_path, capsys):
    build().save_pretrained(tmp_path / "hf")
    with pytest.raises(ConfigError, match=rf"holds a {architecture} .*glassformer reads only .*GPT2LMHeadModel"):
        load_model_dir(tmp_path / "hf")
    capsys.readouterr()                           # (transformers' progress bars)
    code, _, err = run_cli(capsys, "convert", "--from", "hf", tmp_path / "hf", tmp_path / "ours")
    one_line_error(code, err, architecture)
    assert not (tmp_path / "ours").exists()
