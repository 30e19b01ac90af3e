"""Decoding options that change how, not what: ``--dtype`` (weights in bf16 / fp16) and ``--compile``.

The compiled step's numerics are checked in ``test_static_decoding.py`` (inductor, as
``compile_decoding()`` runs it); here the commands' ``--compile`` runs a recording
backend that executes the captured graphs eagerly — it proves the flag reaches the
decoding step and the text is unchanged, in seconds instead of a C++ compile.
"""

import json

import pytest
import torch
import torch._dynamo
from helpers import one_line_error, run_cli

from glassformer.data.numbers import number_corpus
from glassformer.devices import pick_dtype
from glassformer.errors import ConfigError
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import build_model, decoding, preset
from glassformer.tokenizers import Tokenizer

TEXT = "the quick brown fox jumps over the lazy dog.\nTHE END?\n" * 40


def sharp_gpt_dir(path, text: str, generation: dict):
    """A random GPT with a sharp output layer (decisive, varied continuations) and a character tokenizer of
    ``text``, saved at ``path`` with ``generation`` as its generation settings."""
    torch.manual_seed(0)
    tok = Tokenizer.train_char([text])
    model = build_model(preset("gpt-tiny", vocab_size=tok.vocab_size, tie_embeddings=False))
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 1.0)
    save_model_dir(path, model, tok, generation=generation)
    return path


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    return sharp_gpt_dir(tmp_path_factory.mktemp("gpt") / "model", TEXT, {"task": "lm", "temperature": 0.0})


@pytest.fixture(scope="module")
def corpus():
    return number_corpus("de", "en", max_number=999, n_train=300, n_valid=20, n_test=40, seed=2)


@pytest.fixture(scope="module")
def translator_dir(tmp_path_factory, corpus):
    """A random translator with untied embeddings (tied ones make a random model repeat one token)."""
    torch.manual_seed(0)
    tok = Tokenizer.train_bpe([t for pair in corpus.train for t in pair], 120)
    config = preset("vaswani-tiny", src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, max_len=32,
                    tie_embeddings="none")
    path = tmp_path_factory.mktemp("translator") / "model"
    save_model_dir(path, build_model(config), tok)
    return path


@pytest.fixture
def recorded_compile(monkeypatch):
    """``--compile`` through a backend that records each graph it is given and runs it as it is."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    monkeypatch.setattr(decoding, "compile_options", lambda device: {"backend": backend})
    yield graphs
    torch._dynamo.reset()


# -- --dtype: one parser, weights cast on load, float32 logits ---------------------------------------
def test_pick_dtype_names_auto_and_refusals(monkeypatch):
    assert pick_dtype("fp32", "cpu") is torch.float32 and pick_dtype("bf16", "cpu") is torch.bfloat16
    assert pick_dtype(torch.bfloat16, "cpu") is torch.bfloat16
    assert pick_dtype("auto", "cpu") is torch.float32 and pick_dtype(None, "cpu") is torch.float32
    with pytest.raises(ConfigError, match="fp16 is not supported on the CPU"):
        pick_dtype("fp16", "cpu")
    with pytest.raises(ConfigError, match="unknown"):
        pick_dtype("half", "cpu")
    with pytest.raises(ConfigError, match="not an inference dtype"):
        pick_dtype(torch.int8, "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
        assert pick_dtype("auto", torch.device("cuda")) is expected
    assert pick_dtype("fp16", torch.device("cuda")) is torch.float16


@pytest.mark.parametrize("family", ["gpt", "translator"])
def test_bf16_weights_give_float32_logits_close_to_fp32(gpt_dir, translator_dir, family):
    path = gpt_dir if family == "gpt" else translator_dir
    fp32 = load_model_dir(path).model
    bf16 = load_model_dir(path, dtype=torch.bfloat16).model
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}
    prompt = [[5, 9, 12, 3, 7]] if family == "gpt" else torch.tensor([[5, 9, 12, 3, 7, 2], [8, 30, 2, 0, 0, 0]])
    (c32, first), (c16, _) = fp32.start_decoding(prompt, 8), bf16.start_decoding(prompt, 8)
    assert c16.keys.dtype == torch.bfloat16
    with torch.inference_mode():
        l32, l16 = fp32.decode_step(first, c32), bf16.decode_step(first, c16)
    assert l16.dtype == torch.float32                            # the search always sees float32 logits
    error = (l16 - l32).abs().max()
    assert 0 < error < 0.03 * l32.abs().max()                   # bf16 really ran, within its ~3 digits


def test_bf16_greedy_picks_the_fp32_token_wherever_the_choice_is_clear(gpt_dir):
    """Teacher-forced along fp32's greedy path: at every step where fp32's best token leads the
    second by a margin bf16 rounding cannot bridge, bf16 picks the same token."""
    fp32 = load_model_dir(gpt_dir).model
    bf16 = load_model_dir(gpt_dir, dtype=torch.bfloat16).model
    (c32, feed), (c16, _) = fp32.start_decoding([[5, 9, 12]], 24), bf16.start_decoding([[5, 9, 12]], 24)
    compared = 0
    with torch.inference_mode():
        for _ in range(24):
            l32, l16 = fp32.decode_step(feed, c32)[0], bf16.decode_step(feed, c16)[0]
            top = l32.topk(2).values
            if top[0] - top[1] > 0.05 * l32.abs().max():
                assert l16.argmax() == l32.argmax()
                compared += 1
            feed = l32.argmax().view(1, 1)
    assert compared >= 12


def test_load_model_dir_refuses_a_dtype_that_is_not_for_inference(gpt_dir):
    with pytest.raises(ConfigError, match="dtype"):
        load_model_dir(gpt_dir, dtype=torch.int32)


def test_translate_and_generate_run_in_bf16(capsys, translator_dir, gpt_dir, corpus):
    sources = [s for s, _ in corpus.test[:6]]
    code, out, err = run_cli(capsys, "translate", translator_dir, *sources, "--dtype", "bf16")
    assert code == 0 and len(out.splitlines()) == 6, err
    fp32 = run_cli(capsys, "translate", translator_dir, *sources, "--dtype", "fp32")[1]
    assert sum(a == b for a, b in zip(out.splitlines(), fp32.splitlines())) >= 3    # long random outputs, alike
    code, out, err = run_cli(capsys, "generate", gpt_dir, "the qu", "--max-new-tokens", 12, "--dtype", "bf16")
    assert code == 0 and out.startswith("the qu") and len(out) > len("the qu\n"), err


@pytest.mark.parametrize("command", ["generate", "translate", "evaluate"])
def test_fp16_on_the_cpu_is_one_line(capsys, command, gpt_dir, translator_dir, tmp_path):
    args = {"generate": [gpt_dir, "the"], "translate": [translator_dir, "eins"],
            "evaluate": [translator_dir, "--src", tmp_path / "nowhere", "--ref", tmp_path / "nowhere"]}[command]
    code, out, err = run_cli(capsys, command, *args, "--dtype", "fp16", "--device", "cpu")
    one_line_error(code, err, "fp16", "CPU")
    assert out == ""


# -- --compile: the same text, through the compiled step -------------------------------------------------
@pytest.mark.parametrize("args", [["the qu"], ["--prompts-file", "PROMPTS"], ["the qu", "--beam", "2"]],
                         ids=["stream", "batch", "beam"])
def test_generate_compile_gives_the_same_text(capsys, gpt_dir, recorded_compile, tmp_path, args):
    (tmp_path / "prompts.txt").write_text("the lazy dog\nfox\nTHE END? the\n", encoding="utf-8")
    args = [str(tmp_path / "prompts.txt") if a == "PROMPTS" else a for a in args]
    common = ["generate", gpt_dir, *args, "--max-new-tokens", 16, "--temperature", 0]
    code, plain, err = run_cli(capsys, *common)
    assert code == 0 and not recorded_compile, err
    code, compiled, err = run_cli(capsys, *common, "--compile")
    assert code == 0, err
    assert compiled == plain and len(set(plain)) > 5
    assert recorded_compile                                      # the step ran as a captured graph


@pytest.mark.parametrize("beam", [1, 2])
def test_translate_and_evaluate_compile_give_the_same_output(capsys, translator_dir, corpus, recorded_compile,
                                                              tmp_path, beam):
    sources = [s for s, _ in corpus.test[:8]]
    code, plain, err = run_cli(capsys, "translate", translator_dir, *sources, "--beam", beam)
    assert code == 0, err
    code, compiled, err = run_cli(capsys, "translate", translator_dir, *sources, "--beam", beam, "--compile")
    assert code == 0, err
    assert compiled == plain and len(set(plain.split())) > 3
    assert len(recorded_compile) == beam                        # greedy: one graph; beam: + the batch × beam one
    (tmp_path / "src.txt").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(t + "\n" for _, t in corpus.test[:8]), encoding="utf-8")
    scores = []
    for flags in ([], ["--compile"]):
        code, out, err = run_cli(capsys, "evaluate", translator_dir, "--src", tmp_path / "src.txt",
                                 "--ref", tmp_path / "ref.txt", "--beam", beam, *flags)
        assert code == 0, err
        scores.append({k: v for k, v in json.loads(out.splitlines()[-1]).items() if k != "seconds"})
    assert scores[0] == scores[1]


@pytest.mark.parametrize("command", ["generate", "translate"])
def test_a_compiler_that_fails_is_one_line(capsys, monkeypatch, gpt_dir, translator_dir, command):
    def broken(gm, example_inputs):
        raise RuntimeError("g++: command not found")

    torch._dynamo.reset()
    monkeypatch.setattr(decoding, "compile_options", lambda device: {"backend": broken})
    args = [gpt_dir, "the"] if command == "generate" else [translator_dir, "eins"]
    code, out, err = run_cli(capsys, command, *args, "--compile")
    one_line_error(code, err, "torch.compile could not compile", "g++: command not found", "without compiling")
    assert out == ""
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    code, out, err = run_cli(capsys, command, *args, "--compile")
    one_line_error(code, err, "torch.compile is not available")
