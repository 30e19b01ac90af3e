"""`glassformer generate` and `glassformer train lm` from the outside: output, batching, bad input."""

import json

import pytest
import torch
from helpers import one_line_error, run_cli

from glassformer.generation import SamplingOptions, generate
from glassformer.models import build_model, preset
from glassformer.tokenizers import Tokenizer
from glassformer.model_dir import load_model_dir, save_model_dir

TEXT = "the quick brown fox jumps over the lazy dog.\nTHE END?\n" * 40


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = Tokenizer.train_char([TEXT])
    model = build_model(preset("gpt-tiny", vocab_size=tok.vocab_size))
    with torch.no_grad():                      # varied continuations from a random model
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("gen") / "model"
    save_model_dir(path, model, tok, generation={"task": "lm", "temperature": 0.8})
    return path


def library_greedy(model_dir, prompt, n):
    loaded = load_model_dir(model_dir)
    tok = loaded.tokenizer
    cache, first = loaded.model.start_decoding([tok.encode(prompt)], n, tok.pad_id)
    options = SamplingOptions(max_new_tokens=n, eos_id=tok.eos_id, pad_id=tok.pad_id,
                              banned_ids=(tok.pad_id, tok.bos_id, tok.unk_id))    # never generated
    out = generate(loaded.model, cache, first, options)[0].tolist()
    out = out[: out.index(tok.eos_id)] if tok.eos_id in out else out
    return tok.decode(out)


def test_generate_streams_the_greedy_continuation(model_dir, capsys):
    code, out, err = run_cli(capsys, "generate", model_dir, "the qu", "--max-new-tokens", 20, "--temperature", 0)
    assert code == 0, err
    assert out == "the qu" + library_greedy(model_dir, "the qu", 20) + "\n"


def test_batched_prompts_give_what_they_give_alone(model_dir, capsys, tmp_path):
    prompts = ["the lazy dog jumps", "fox", "THE END? the", "o"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "generate", model_dir, "--prompts-file", tmp_path / "prompts.txt",
                             "--max-new-tokens", 16, "--temperature", 0)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in rows] == prompts
    alone = []
    for p in prompts:
        code, out, _ = run_cli(capsys, "generate", model_dir, p, "--max-new-tokens", 16, "--temperature", 0)
        alone.append(out[len(p):-1])
    assert [r["completion"] for r in rows] == alone
    assert len(set(alone)) > 1


def test_sampling_is_reproducible_from_the_seed(model_dir, capsys):
    runs = [run_cli(capsys, "generate", model_dir, "the", "--max-new-tokens", 30, "--seed", s,
                    "--top-k", 10, "--top-p", 0.9)[1] for s in (7, 7, 8)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_stop_string_and_truncate_left(model_dir, capsys):
    full = library_greedy(model_dir, "the", 30)
    stop = full[5:7]
    code, out, _ = run_cli(capsys, "generate", model_dir, "the", "--max-new-tokens", 30, "--temperature", 0,
                           "--stop", stop)
    assert code == 0 and out == "the" + full[: full.index(stop)] + "\n"
    long_prompt = "the lazy dog " * 6                       # 78 characters: more than the context of 64
    code, out, err = run_cli(capsys, "generate", model_dir, long_prompt, "--max-new-tokens", 10,
                             "--temperature", 0, "--truncate-left")
    assert code == 0, err
    assert out.endswith(library_greedy(model_dir, long_prompt[-54:], 10) + "\n")


@pytest.mark.parametrize("args, words", [
    (["hello", "--top-p", "0"], ["--top-p", "(0, 1]"]),
    (["hello", "--top-p", "1.5"], ["--top-p", "(0, 1]"]),
    (["hello", "--temperature", "-0.5"], ["--temperature", ">= 0"]),
    (["жжж"], ["unknown"]),
    (["the lazy dog " * 6, "--max-new-tokens", "10"], ["--truncate-left"]),
    (["the", "--max-new-tokens", "64"], ["max-new-tokens"]),
])
def test_generate_bad_input_is_one_line(model_dir, capsys, args, words):
    code, out, err = run_cli(capsys, "generate", model_dir, *args)
    one_line_error(code, err, *words)
    assert out == ""


def test_generate_needs_a_model_directory(tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", tmp_path / "nothing", "hi")
    one_line_error(code, err, "does not exist")


# -- train lm ----------------------------------------------------------------------------------
def test_train_lm_writes_a_model_that_generates(tmp_path, capsys):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "lm", "--data", tmp_path / "text.txt", "--preset", "gpt-tiny",
                                "--block-size", 32, "--steps", 60, "--eval-every", 30, "--batch-size", 8,
                                "--lr", 3e-3, "--warmup", 5, "--out", out)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    log = [r for r in records if r["kind"] == "eval"]
    assert [h["step"] for h in log] == [30, 60]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(10, 61, 10))
    assert all(r["lr"] > 0 and r["grad_norm"] > 0 and r["tokens_per_s"] > 0 for r in train)
    assert train[-1]["loss"] < train[0]["loss"]
    assert log[-1]["loss"] < 2.0 < 4.3 and abs(log[-1]["ppl"] - 2.718281828 ** log[-1]["loss"]) < 1e-3 * log[-1]["ppl"]
    assert (out / "tokens.npy").exists() and (out / "best" / "tokenizer.json").exists()
    code, text, err = run_cli(capsys, "generate", out / "best", "the quick", "--max-new-tokens", 20,
                              "--temperature", 0)
    assert code == 0 and text.startswith("the quick"), err


@pytest.mark.parametrize("setup, args, words", [
    ("empty", [], ["empty"]),
    ("binary", [], ["UTF-8"]),
    ("folder", [], ["no files"]),
    ("text", ["--block-size", "65"], ["block size 65", "64 positions"]),
    ("text", ["--tokenizer", "words"], ["invalid choice"]),
])
def test_train_lm_bad_input_leaves_nothing(tmp_path, capsys, setup, args, words):
    data = tmp_path / "data"
    if setup == "folder":
        data.mkdir()
    elif setup == "binary":
        data.write_bytes(bytes(range(256)) * 8)
    else:
        data.write_text("" if setup == "empty" else TEXT, encoding="utf-8")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "lm", "--data", data, "--preset", "gpt-tiny", "--out", out, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert not out.exists()


def test_generate_beam_search(model_dir, capsys):
    """--n-best lists beam continuations best first, with scores that match a plain forward pass."""
    import json as _json

    from glassformer.generation import length_penalty
    from glassformer.model_dir import load_model_dir

    code, out, _ = run_cli(capsys, "generate", model_dir, "ab", "--beam", "3", "--n-best", "3",
                           "--max-new-tokens", "5", "--alpha", "0")
    assert code == 0
    row = _json.loads(out.strip())
    assert len(row["completions"]) == 3 and row["scores"] == sorted(row["scores"], reverse=True)
    loaded = load_model_dir(model_dir)
    tok, model = loaded.tokenizer, loaded.model
    prompt, best = tok.encode("ab"), tok.encode(row["completions"][0])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([prompt + best])), -1)[0]
    want = sum(float(log_probs[len(prompt) - 1 + i, t]) for i, t in enumerate(best))
    if len(best) < 5:           # it ended with EOS, which counts too
        want += float(log_probs[len(prompt) - 1 + len(best), tok.eos_id])
    assert abs(row["scores"][0] - want / float(length_penalty(torch.tensor(1), 0.0))) < 1e-3
