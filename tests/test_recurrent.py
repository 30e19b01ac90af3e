"""The recurrent encoder–decoder (issue 21): its parts against their formulas and torch's own LSTM, its
decoding against its teacher-forced scores, and the family through the translation task, the generation
loop, the model directory and explain."""

import json
import math

import pytest
import torch
from helpers import one_line_error, run_cli

from glassformer.data.batching import pad
from glassformer.data.numbers import number_corpus
from glassformer.errors import ConfigError
from glassformer.generation import SamplingOptions, decode
from glassformer.generation.beam import BeamOptions, beam_search, length_penalty
from glassformer.generation.sampling import generate
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import build_model, preset
from glassformer.nn import padding_mask
from glassformer.nn.recurrent import AdditiveAttention, MultiplicativeAttention

VARIANTS = [("lstm", "additive", True), ("lstm", "multiplicative", True), ("gru", "additive", True),
            ("lstm", "additive", False), ("gru", "multiplicative", False), ("lstm", "none", False)]


def tiny(cell="lstm", attention="additive", input_feeding=True, layers=2, **fields):
    torch.manual_seed(0)
    config = preset("lstm-tiny", cell=cell, attention=attention, input_feeding=input_feeding, encoder_layers=layers,
                    decoder_layers=layers, **fields)
    return build_model(config).eval()


SRC = [[5, 6, 7, 8, 9, 2], [10, 11, 2], [12, 13, 14, 2]]
TGT = [[1, 20, 21, 22, 23], [1, 24], [1, 25, 26]]


# -- attention over the encoder states ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_attention_weights_sum_to_one_and_are_zero_at_padding(kind):
    torch.manual_seed(0)
    attention = AdditiveAttention(8, 6, 5) if kind == "additive" else MultiplicativeAttention(8, 6)
    memory, query = torch.randn(3, 4, 6), torch.randn(3, 2, 8)
    lengths = torch.tensor([4, 2, 0])                                        # the last row: nothing to attend to
    mask = (torch.arange(4)[None] < lengths[:, None])[:, None, None, :]      # (batch, 1, 1, src_len)
    context, weights = attention(query, memory, mask, need_weights=True)
    assert weights.shape == (3, 2, 4) and context.shape == (3, 2, 6)
    assert torch.allclose(weights[:2].sum(-1), torch.ones(2, 2))
    assert (weights[1, :, 2:] == 0).all()                                    # padding gets exactly 0
    assert (weights[2] == 0).all() and (context[2] == 0).all() and not context.isnan().any()
    assert torch.allclose(context, weights @ memory, atol=1e-6)
    fused, none = attention(query, memory, mask)                             # fused path (multiplicative)
    assert none is None and torch.allclose(fused, context, atol=1e-6)


@torch.no_grad()
def test_additive_and_multiplicative_scores_equal_their_formulas():
    """a_t(s) = softmax_s(vᵀ tanh(W_q q + W_k k_s)) and softmax_s(qᵀ W k_s), written out one pair at a time."""
    torch.manual_seed(1)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    additive, general = AdditiveAttention(8, 6, 4), MultiplicativeAttention(8, 6)
    w_q, w_k, v, w = additive.query_proj.weight, additive.key_proj.weight, additive.v.weight[0], general.key_proj.weight
    by_hand_add = torch.tensor([[[float(v @ torch.tanh(w_q @ q[b, t] + w_k @ k[b, s])) for s in range(5)]
                                 for t in range(3)] for b in range(2)]).softmax(-1)
    by_hand_mul = torch.tensor([[[float(q[b, t] @ (w @ k[b, s])) for s in range(5)]
                                 for t in range(3)] for b in range(2)]).softmax(-1)
    assert torch.allclose(additive(q, k, need_weights=True).weights, by_hand_add, atol=1e-6)
    assert torch.allclose(general(q, k, need_weights=True).weights, by_hand_mul, atol=1e-5)


def test_beams_share_their_sentence_annotations():
    """A decoder batch of batch_m × group rows attends over its sentence's annotations, not copied."""
    torch.manual_seed(2)
    attention = AdditiveAttention(8, 6, 5)
    memory, query = torch.randn(2, 4, 6), torch.randn(6, 1, 8)               # 2 sentences × 3 beams
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)[:, None, None]
    shared = attention(query, memory, mask, need_weights=True)
    copied = attention(query, memory.repeat_interleave(3, 0), mask.repeat_interleave(3, 0), need_weights=True)
    assert torch.allclose(shared.output, copied.output) and torch.allclose(shared.weights, copied.weights)


# -- the encoder: packed sequences ------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_changes_nothing_and_the_encoder_is_torchs_rnn(cell):
    """A source alone and padded in a batch with a longer one: the same annotations, final states and
    logits; and both equal torch's own bidirectional RNN run on the sentence without padding."""
    model = tiny(cell)
    src, tgt = pad(SRC, 0), pad(TGT, 0)
    batched = model.encode(src)
    batched_logits = model(src, tgt)
    for i, (s, t) in enumerate(zip(SRC, TGT)):
        alone = model.encode(torch.tensor([s]))
        n = len(s)
        assert torch.allclose(batched.memory[i, :n], alone.memory[0], atol=1e-6)
        assert (batched.memory[i, n:] == 0).all()
        for b_state, a_state in zip(batched.final, alone.final):
            assert torch.allclose(b_state[:, i], a_state[:, 0], atol=1e-6)
        logits = model(torch.tensor([s]), torch.tensor([t]))
        assert torch.allclose(batched_logits[i, :len(t)], logits[0], atol=1e-5)
        out, final = model.encoder.rnn(model.src_embed(torch.tensor([s])))   # torch's RNN, no packing
        assert torch.allclose(alone.memory, out, atol=1e-6)
        h = final[0] if cell == "lstm" else final
        assert torch.allclose(alone.final[0], torch.cat([h[0::2], h[1::2]], -1), atol=1e-6)


# -- decoding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell,attention,input_feeding", VARIANTS)
def test_cached_steps_equal_teacher_forced_scoring(cell, attention, input_feeding):
    model = tiny(cell, attention, input_feeding)
    src, tgt = pad(SRC, 0), pad(TGT, 0)
    with torch.no_grad():
        forced = model(src, tgt)
        cache, first = model.start_decoding(src, tgt.shape[1] - 1)     # room for tgt_len positions
        assert (first[:, 0] == model.config.start_id).all()
        steps = torch.stack([model.decode_step(tgt[:, i:i + 1], cache) for i in range(tgt.shape[1])], 1)
    assert steps.dtype == torch.float32 and cache.length == tgt.shape[1]
    assert (steps - forced).abs().max() < 1e-5
    with pytest.raises(Exception, match="holds"):
        model.decode_step(tgt[:, :1], cache)


@pytest.mark.parametrize("cell,attention,input_feeding", VARIANTS[:2] + VARIANTS[-1:])
def test_generation_loop_cached_equals_uncached_and_beam_scores_are_the_models(cell, attention, input_feeding):
    """Greedy through the state equals greedy re-running the whole prefix (``cleared``); beam 1 is
    greedy; a beam of 3 returns the hypotheses with the scores teacher forcing gives them: the state
    followed its beams through every reorder, and the sentences share their annotations."""
    model = tiny(cell, attention, input_feeding)
    src = pad(SRC, 0)
    options = SamplingOptions(max_new_tokens=7, eos_id=2, pad_id=0, banned_ids=(0, 1))
    cached = generate(model, *model.start_decoding(src, 7), options)
    uncached = generate(model, *model.start_decoding(src, 7), options, use_cache=False)
    assert torch.equal(cached, uncached)
    greedy = decode(model, *model.start_decoding(src, 7), options).tokens
    assert decode(model, *model.start_decoding(src, 7), options, beam=1).tokens == greedy
    opts = BeamOptions(beam=3, n_best=3, alpha=0.6, max_new_tokens=7, eos_id=2, pad_id=0, banned_ids=(0, 1))
    out = beam_search(model, *model.start_decoding(src, 7), opts)
    for i in range(len(SRC)):
        for b in range(3):
            n = int(out.lengths[i, b])
            hyp = out.tokens[i, b, :n]
            with torch.no_grad():
                logits = model(torch.tensor([SRC[i]]), torch.cat([torch.tensor([1]), hyp[:-1]])[None])
            logp = logits.float().log_softmax(-1)[0].gather(-1, hyp[:, None]).sum()
            assert abs(float(out.log_probs[i, b]) - float(logp)) < 1e-4
            expected = logp / length_penalty(torch.tensor(n), 0.6)
            assert abs(float(out.scores[i, b]) - float(expected)) < 1e-4


def test_sampling_and_mbr_run_through_the_same_loop():
    model = tiny()
    src = pad(SRC, 0)
    options = SamplingOptions(max_new_tokens=6, eos_id=2, pad_id=0, banned_ids=(0, 1), temperature=1.0, seed=3)
    sampled = decode(model, *model.start_decoding(src, 6), options)
    again = decode(model, *model.start_decoding(src[1:2], 6), options, streams=[1])
    assert sampled.strategy == "sample" and again.tokens[0] == sampled.tokens[1]   # its own stream, any batch
    mbr = decode(model, *model.start_decoding(src, 6), options, mbr=True, mbr_candidates=4,
                 detokenize=lambda ids: " ".join(map(str, ids)))
    assert mbr.strategy == "mbr" and len(mbr.tokens) == 3


# -- the config ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields,words", [
    ({"attention": "bahdanau"}, ["attention='bahdanau'", "additive"]),
    ({"cell": "rnn"}, ["cell='rnn'", "gru"]),
    ({"hidden_size": 33, "embedding_size": 33}, ["hidden_size=33", "even"]),
    ({"decoder_layers": 3}, ["decoder_layers=3", "encoder_layers=1"]),
    ({"attention": "none"}, ["input_feeding=True", "attention='none'"]),
    ({"embedding_size": 16}, ["embedding_size == hidden_size"]),
])
def test_bad_config_values_are_named(fields, words):
    with pytest.raises(ConfigError) as e:
        preset("lstm-tiny", **fields)
    for w in words:
        assert w in str(e.value)


def test_presets_are_sized_like_vaswani_small_on_the_numbers_task():
    from glassformer.models import num_parameters

    def size(name):
        return num_parameters(build_model(preset(name, src_vocab_size=1395, tgt_vocab_size=1395)))
    reference = size("vaswani-small")
    for name in ("lstm-attention", "lstm-luong", "gru-attention", "lstm"):
        assert 0.95 < size(name) / reference < 1.05, name


# -- the model directory, the command line and explain ---------------------------------------------
def test_save_load_round_trip_gives_the_same_logits(tmp_path):
    from glassformer.tokenizers import Tokenizer

    tok = Tokenizer.train_bpe(["eins zwei drei", "one two three"], 60)
    model = tiny()
    save_model_dir(tmp_path / "m", model, tok)
    loaded = load_model_dir(tmp_path / "m")
    assert loaded.config == model.config
    assert loaded.model.generator.proj.weight is loaded.model.src_embed.weight          # tying survives
    src, tgt = pad(SRC, 0), pad(TGT, 0)
    with torch.no_grad():
        assert torch.equal(loaded.model(src, tgt), model(src, tgt))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LSTM with additive attention trained by `glassformer train translation --preset lstm-tiny`."""
    import contextlib
    import io

    from glassformer.cli.main import main

    root = tmp_path_factory.mktemp("rnn")
    corpus = number_corpus("de", "en", max_number=999, n_train=400, n_valid=20, n_test=10, seed=3)
    (root / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in corpus.train), encoding="utf-8")
    (root / "c.json").write_text(json.dumps({"warmup": 10, "lr_factor": 0.2}), encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["train", "translation", "--preset", "lstm-tiny", "--src", str(root / "train.tsv"), "--out",
                     str(root / "run"), "--steps", "60", "--vocab-size", "120", "--max-tokens", "600",
                     "--eval-every", "20", "--config", str(root / "c.json"), "--device", "cpu"])
    assert code == 0, out.getvalue()
    return root / "run", out.getvalue(), corpus


def test_train_translation_with_a_recurrent_preset_learns_and_translates(trained, capsys, tmp_path):
    run, printed, corpus = trained
    assert "training recurrent" in printed and "model saved to" in printed
    evals = [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    config = load_model_dir(run / "best").config
    assert config.family == "recurrent"
    chance = math.log(config.tgt_vocab_size)                     # the loss of a uniform guess
    assert len(evals) == 3 and evals[0] > evals[1] > evals[2] and evals[-1] < chance - 1.0, (evals, chance)
    code, out, err = run_cli(capsys, "translate", run / "best", "dreihundertzwölf", "neun", "--beam", "3")
    assert code == 0, err
    assert len(out.splitlines()) == 2 and all(line.strip() for line in out.splitlines())
    (tmp_path / "s.txt").write_text("".join(s + "\n" for s, _ in corpus.test), encoding="utf-8")
    (tmp_path / "r.txt").write_text("".join(t + "\n" for _, t in corpus.test), encoding="utf-8")
    code, out, err = run_cli(capsys, "evaluate", run / "best", "--src", tmp_path / "s.txt", "--ref",
                             tmp_path / "r.txt", "--mbr", "--mbr-candidates", "3", "--seed", "1")
    assert code == 0 and out.startswith("BLEU "), err


def test_explain_draws_the_alignment_as_cross_attention(trained):
    """explain captures the recurrent attention as one cross-attention map (one layer, one head) from the
    target tokens to the source tokens: each row sums to 1, and it is the decoder's own alignment."""
    from glassformer.explain.report import explain

    run, _, _ = trained
    loaded = load_model_dir(run / "best")
    report = explain(loaded, "dreihundertzwölf", "three hundred twelve")
    (module,) = report.attention
    assert module.kind == "cross" and module.name == "decoder.attention" and module.heads == [0]
    weights = module.weights                                                 # (heads, target, source)
    assert weights.shape == (1, len(module.q_tokens), len(module.k_tokens))
    assert torch.allclose(weights.sum(-1), torch.ones(1, len(module.q_tokens)), atol=1e-5)
    tok, config = loaded.tokenizer, loaded.config
    src = torch.tensor([tok.encode("dreihundertzwölf") + [config.eos_id]])
    tgt = torch.tensor([[config.start_id] + tok.encode("three hundred twelve")])
    with torch.no_grad():
        own = loaded.model.decode(tgt, loaded.model.encode(src), need_weights=True).weights
    assert torch.allclose(weights[0], own[0], atol=1e-6)


@pytest.mark.parametrize("model,words", [
    ({"n_heads": 4}, ["['n_heads']", "lstm-attention", "n_heads is an option of", "transformer", "not of recurrent"]),
    ({"positional": "rotary"}, ["['positional']", "positional is an option of", "transformer"]),
    ({"n_kv_heads": 2}, ["['n_kv_heads']", "n_kv_heads is an option of"]),
    ({"attention": "dot"}, ["attention='dot'"]),
])
def test_transformer_only_options_are_refused_in_one_line(capsys, tmp_path, model, words):
    (tmp_path / "p.tsv").write_text("eins\tone\nzwei\ttwo\ndrei\tthree\n", encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps({"model": model}), encoding="utf-8")
    code, out, err = run_cli(capsys, "train", "translation", "--preset", "lstm-attention", "--src", tmp_path / "p.tsv",
                             "--config", tmp_path / "c.json", "--out", tmp_path / "run")
    one_line_error(code, err, *words)
    assert not (tmp_path / "run").exists()


def test_a_preset_of_another_family_is_refused(capsys, tmp_path):
    (tmp_path / "p.tsv").write_text("eins\tone\nzwei\ttwo\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "train", "translation", "--preset", "gpt-tiny", "--src", tmp_path / "p.tsv",
                             "--out", tmp_path / "run")
    one_line_error(code, err, "gpt-tiny", "lstm-attention", "vaswani-small")


def test_compiled_decoding_step_gives_the_same_tokens():
    """``compile_decoding`` (torch.compile of ``step``; the state's tensors marked static): the same beam
    search outputs as the step run eagerly (the state reordered between compiled steps).  (The eager backend: dynamo's tracing without a compiler.)"""
    model = tiny()
    src = pad(SRC, 0)
    options = SamplingOptions(max_new_tokens=4, eos_id=2, pad_id=0, banned_ids=(0, 1))
    eager = decode(model, *model.start_decoding(src, 4), options, beam=3).tokens
    model.compile_decoding(backend="eager")
    assert model.decoding_compiled
    assert decode(model, *model.start_decoding(src, 4), options, beam=3).tokens == eager


def test_serve_translates_and_shows_the_alignment(trained):
    """``glassformer serve`` on a recurrent directory: /v1/translate is the library's translation, its one
    attention module is 'cross' (the page opens on it), and kind 'self' is refused in one line."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from glassformer.generation.translation import translate
    from glassformer.serve.app import create_app

    run, _, _ = trained
    client = TestClient(create_app(run / "best"))
    loaded = load_model_dir(run / "best")
    expected = translate(loaded.model, loaded.src_tokenizer, loaded.tokenizer, ["dreiundzwanzig"])[0]
    assert client.post("/v1/translate", json={"text": "dreiundzwanzig"}).json()["translation"] == expected
    info = client.get("/v1/info").json()
    assert (info["family"], info["layers"], info["cross_layers"], info["heads"]) == ("recurrent", 0, 1, 1)
    r = client.post("/v1/attention", json={"text": "dreiundzwanzig", "kind": "cross", "target": "twenty-three"})
    assert r.status_code == 200, r.text
    torch.testing.assert_close(torch.tensor(r.json()["weights"]).sum(-1), torch.ones(len(r.json()["tokens"])))
    refused = client.post("/v1/attention", json={"text": "dreiundzwanzig", "kind": "self"})
    assert refused.status_code == 400 and "kind 'cross'" in refused.json()["error"]
    assert 'LAYERS = {self: 0, cross: 1}' in client.get("/").text


def test_a_run_starts_from_the_weights_the_seed_gives_on_the_cpu():
    """Training builds the model on the meta device and writes its initial weights again (the trainer's
    materialise): they are those of the model built on the CPU from the same seed, LSTM weights included,
    tied matrices still one."""
    from glassformer.training.distributed import materialise
    from glassformer.training.recipe import seeded_model

    config = preset("lstm-tiny", encoder_layers=2, decoder_layers=2)
    model = seeded_model(config, 7)
    materialise(model, torch.device("cpu"))
    torch.manual_seed(7)
    reference = build_model(config)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert model.generator.proj.weight is model.src_embed.weight
    src, tgt = pad(SRC, 0), pad(TGT, 0)
    with torch.no_grad():
        assert torch.equal(model.eval()(src, tgt), reference.eval()(src, tgt))     # the RNNs' flat weights follow
