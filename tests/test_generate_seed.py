"""Same seed, same text: a sampled row depends on the seed, its input and its place in the input —
never on the batch it is decoded in (``generate --batch-size``, ``translate --batch-size``, MBR) — and the
sampler draws each token with its probability."""

import json

import pytest
import torch
from helpers import run_cli, untrained_translator

from glassformer.data.numbers import number_corpus
from glassformer.errors import ConfigError
from glassformer.generation import SamplingOptions, generate
from glassformer.generation.sampling import choose, stream_uniforms
from glassformer.generation.text import complete_batch, prompt_ids
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import build_model, preset
from glassformer.tokenizers import Tokenizer

TEXT = "ROMEO: the quick brown fox.\nJULIET: the lazy dog?\n" * 20
PROMPTS = ["ROMEO:", "ROMEO:", "JULIET:", "the", "", "fox.", "dog", "ROMEO: the"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = Tokenizer.train_char([TEXT])
    model = build_model(preset("gpt-tiny", vocab_size=tok.vocab_size))
    with torch.no_grad():                      # a random model with varied, far from uniform continuations
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("seed") / "model"
    save_model_dir(path, model, tok)
    return path


def completions(capsys, model_dir, tmp_path, prompts, *args) -> list[str]:
    """``generate --prompts-file`` of ``prompts``: each prompt's completion, in order."""
    file = tmp_path / "prompts.txt"
    file.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "generate", model_dir, "--prompts-file", file, "--max-new-tokens", 20,
                             "--temperature", 1.0, *args)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in rows] == prompts
    return [r["completion"] for r in rows]


def test_batch_size_does_not_change_the_completions(model_dir, capsys, tmp_path):
    runs = {b: completions(capsys, model_dir, tmp_path, PROMPTS, "--seed", 3, "--batch-size", b) for b in (1, 2, 32)}
    assert runs[1] == runs[2] == runs[32]
    texts = runs[1]
    assert texts[0] != texts[1], "the same prompt at positions 0 and 1 shares its random numbers"
    assert len(set(texts)) == len(texts), "two prompts drew the same text: they share a random stream?"
    other_seed = completions(capsys, model_dir, tmp_path, PROMPTS, "--seed", 4, "--batch-size", 2)
    assert all(a != b for a, b in zip(texts, other_seed))


def test_a_completion_depends_on_its_position_not_on_its_neighbours(model_dir, capsys, tmp_path):
    first = completions(capsys, model_dir, tmp_path, ["ROMEO:", "JULIET:"], "--seed", 5, "--batch-size", 2)
    other_after = completions(capsys, model_dir, tmp_path, ["ROMEO:", "dog", "the"], "--seed", 5, "--batch-size", 3)
    assert other_after[0] == first[0]                           # what follows it does not matter
    moved = completions(capsys, model_dir, tmp_path, ["dog", "ROMEO:", "JULIET:"], "--seed", 5, "--batch-size", 2)
    assert moved[1] != first[0] and moved[2] != first[1]          # its position does: another random stream


def test_streaming_one_prompt_is_the_first_row_of_a_batch(model_dir, capsys, tmp_path):
    batch = completions(capsys, model_dir, tmp_path, ["JULIET:", "ROMEO:"], "--seed", 9, "--top-k", 8)
    code, out, err = run_cli(capsys, "generate", model_dir, "JULIET:", "--max-new-tokens", 20, "--temperature", 1.0,
                             "--seed", 9, "--top-k", 8)
    assert code == 0, err
    assert out == "JULIET:" + batch[0] + "\n"


def test_streams_name_a_row_wherever_it_is_decoded(model_dir):
    """Library level: ``complete_batch(streams=...)`` gives a prompt what it gets at that place of a
    bigger batch, and ``generate`` refuses a stream list of the wrong length."""
    loaded = load_model_dir(model_dir)
    tok, model = loaded.tokenizer, loaded.model
    options = SamplingOptions(max_new_tokens=12, temperature=0.9, seed=11)
    ids = [prompt_ids(tok, p, model.config.max_len, 12) for p in PROMPTS]
    together = complete_batch(model, tok, ids, options)
    assert [complete_batch(model, tok, [ids[i]], options, streams=[i])[0] for i in (0, 5, 7)] == \
        [together[i] for i in (0, 5, 7)]
    cache, first = model.start_decoding(ids[:2], 12, tok.pad_id)
    with pytest.raises(ConfigError, match="streams has 3 numbers for 2 rows"):
        generate(model, cache, first, options, streams=[0, 1, 2])


@pytest.fixture(scope="module")
def translator_dir(tmp_path_factory):
    corpus = number_corpus("de", "en", max_number=999, n_train=200, n_valid=10, n_test=10, seed=3)
    return untrained_translator(tmp_path_factory.mktemp("seed") / "translator", corpus, 120, max_len=24)


@pytest.mark.parametrize("mode", [["--temperature", "1.0"], ["--mbr", "--mbr-candidates", "3", "--temperature", "1.0"]])
def test_translate_samples_do_not_depend_on_the_batch_size(translator_dir, capsys, mode):
    """Sampling (and MBR's sampled candidates) with a seed: sentence i draws from stream i, so neither
    --batch-size nor the sort by length changes its translation."""
    sentences = ["dreiundzwanzig", "eins", "dreihundertvier", "eins", "neunzig"]
    outs = []
    for batch_size in (1, 2, 64):
        code, out, err = run_cli(capsys, "translate", translator_dir, *sentences, *mode, "--seed", 2,
                                 "--batch-size", batch_size, "--max-len-b", 6)
        assert code == 0, err
        outs.append(out.splitlines())
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) == len(sentences)
    if "--mbr" not in mode:
        assert outs[0][1] != outs[0][3], "the same sentence at two places shares its random numbers"


# -- the sampler ------------------------------------------------------------------------------------
def test_each_token_is_drawn_with_its_probability():
    """One uniform number per row: over many rows the frequencies are the probabilities (within 5
    standard errors), and a token of probability 0 — banned, first or last — is never drawn."""
    probs = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.25, 0.05, 0.0])
    n = 40_000
    scores = probs.log().expand(n, -1)
    options = SamplingOptions(temperature=1.0)
    tokens = choose(scores, options, torch.rand(n, generator=torch.Generator().manual_seed(0)))
    freq = torch.bincount(tokens, minlength=len(probs)).double() / n
    stderr = (probs.double() * (1 - probs.double()) / n).sqrt()
    assert ((freq - probs.double()).abs() <= 5 * stderr + 1e-12).all(), freq
    edges = torch.tensor([0.0, 0.5, 1 - 2 ** -24])                  # the smallest and largest numbers drawn
    assert choose(probs.log().expand(3, -1), options, edges).tolist() == [1, 1, 5]


def test_the_cpus_binary_search_takes_the_token_of_the_four_passes():
    """On the CPU ``choose`` finds the first token reaching the target by binary search over the in-order prefix
    sums; it takes the token the device-independent formulation takes (probability-0 tokens' sums set to -1, the
    target u × their largest, the first sum reaching it), for rows with banned tokens, underflowing probabilities
    and the extreme uniform numbers."""
    g = torch.Generator().manual_seed(0)
    options = SamplingOptions(temperature=1.0)
    for trial in range(30):
        scores = torch.randn(16, 3000, generator=g) * (1 + trial % 9) * 4        # up to ±100s: many exp() underflow
        scores[torch.rand(scores.shape, generator=g) < 0.3] = float("-inf")      # banned
        scores[:, 0] = float("-inf") if trial % 2 else scores[:, 0]              # a first token never drawn
        uniform = torch.rand(16, generator=g)
        uniform[:3] = torch.tensor([0.0, 1 - 2 ** -24, 0.5])
        probs = scores.softmax(dim=-1)
        sums = probs.cumsum(dim=-1).masked_fill(probs == 0, -1.0)
        expected = (sums >= uniform[:, None] * sums.amax(dim=-1, keepdim=True)).to(torch.uint8).argmax(dim=-1)
        got = choose(scores, options, uniform)
        assert torch.equal(got, expected), trial
        assert (probs.gather(1, got[:, None]) > 0).all()


def test_a_stream_is_its_own_whatever_the_others():
    """``stream_uniforms``: stream s of a seed is the same in any company; streams and seeds differ."""
    alone = stream_uniforms(7, [4], 50, torch.device("cpu"))
    among = stream_uniforms(7, [0, 9, 4], 50, torch.device("cpu"))
    assert torch.equal(alone[0], among[2])
    assert not torch.equal(among[0], among[2]) and not torch.equal(among[0], among[1])
    assert not torch.equal(alone, stream_uniforms(8, [4], 50, torch.device("cpu")))
    assert ((among >= 0) & (among < 1)).all()
