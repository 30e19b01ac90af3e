"""Helpers shared by several test files (imported as ``helpers``; pytest puts tests/ on the path)."""

import os
from pathlib import Path

import torch
from torch import nn

from glassformer.cli.main import main
from glassformer.nn import MultiHeadAttention


def run_cli(capsys, *args):
    """Run the ``glassformer`` command in-process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:                    # argparse's own errors (one line, exit 2)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *words):
    """The CLI's answer to bad input: exit 2, one line on stderr naming ``words``."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glassformer: error:"), err
    for w in words:
        assert w in lines[0], lines[0]


def port_mha(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    """Copy torch's weights into ours: in_proj = [W^Q; W^K; W^V] stacked on the output dimension."""
    d = ours.d_model
    with torch.no_grad():
        if ours.cross_attention:
            ours.q_proj.weight.copy_(theirs.in_proj_weight[:d])
            ours.q_proj.bias.copy_(theirs.in_proj_bias[:d])
            ours.kv_proj.weight.copy_(theirs.in_proj_weight[d:])
            ours.kv_proj.bias.copy_(theirs.in_proj_bias[d:])
        else:
            ours.qkv_proj.weight.copy_(theirs.in_proj_weight)
            ours.qkv_proj.bias.copy_(theirs.in_proj_bias)
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)


def grads(model, value) -> dict:
    """Every parameter's gradient of the scalar ``value`` (the model's earlier gradients cleared first)."""
    model.zero_grad(set_to_none=True)
    value.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(ours: dict, reference: dict) -> None:
    """The same parameters have gradients, each equal within float32 rounding of a different summation order."""
    assert ours.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], atol=1e-5, rtol=1e-4, msg=name)


def untrained_translator(path, corpus, vocab_size: int, max_len: int):
    """A model directory of a freshly initialised vaswani-tiny with a BPE trained on ``corpus.train``
    (for CLI behaviour, not translation quality)."""
    from glassformer.model_dir import save_model_dir
    from glassformer.models import build_model, preset
    from glassformer.tokenizers import Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer.train_bpe([t for pair in corpus.train for t in pair], vocab_size)
    config = preset("vaswani-tiny", src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, max_len=max_len)
    save_model_dir(path, build_model(config), tok)
    return path


def untrained_gpt(path, text: str, **generation):
    """A model directory of a freshly initialised gpt-tiny with a character tokenizer of ``text``
    (``generation``: its generation settings, if any)."""
    from glassformer.model_dir import save_model_dir
    from glassformer.models import build_model, preset
    from glassformer.tokenizers import Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer.train_char([text])
    save_model_dir(path, build_model(preset("gpt-tiny", vocab_size=tok.vocab_size)), tok, generation=generation or None)
    return path


# -- the headless browser (the ``browser`` fixture of conftest.py) ---------------------------------
SCREENSHOTS = Path(os.environ.get("GLASSFORMER_TEST_OUTPUT", Path(__file__).resolve().parents[1] / "test-output"))


def screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / name
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    print(f"screenshot: {shot}")
    return shot


def wait_for(driver, what: str, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))
    except Exception as exc:                      # name what never appeared, with what the page shows
        page = driver.execute_script("return document.body.innerText")[:600]
        raise AssertionError(f"the page never showed {what}; it shows:\n{page}") from exc
