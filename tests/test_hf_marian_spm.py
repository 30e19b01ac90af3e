"""A Marian directory's SentencePiece tokenizer (source.spm, target.spm, vocab.json) read as transformers'
MarianTokenizer reads it: the same ids, the same decoded text, and ``glassformer translate`` on the
directory prints what ``MarianMTModel.generate`` + ``batch_decode`` give.  Bad tokenizer files and
special tokens that contradict config.json are one line from the CLI."""

from __future__ import annotations

import io
import json

import pytest
import torch

from helpers import one_line_error, run_cli

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

SOURCE = [f"the {a} {b} is {c} today" for a in ("small", "big", "old", "red") for b in ("house", "dog", "tree")
          for c in ("here", "there", "green")] + ["where is the station?", "I like tea and bread."]
TARGET = [f"das {a} {b} ist heute {c}" for a in ("kleine", "große", "alte", "rote") for b in ("Haus", "Hund", "Auto")
          for c in ("hier", "dort", "grün")] + ["wo ist der Bahnhof?", "Ich mag Tee und Brot."]
SENTENCES = ["the small house is here today", "I like tea.", "Zoë's ☃ café is ünknown!", "", "  where   is the dog ",
             "ⓧⓨ"]


def _spm(sentences, path, vocab_size):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
                                   model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
                                   minloglevel=2)
    path.write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_file=str(path))


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    """A Marian directory as OPUS-MT's: two SentencePiece models, one vocab.json with ``</s>`` = 0,
    ``<unk>`` = 1, the pieces of both models, ``<pad>`` last (pad and decoder start), and a seeded tiny
    MarianMTModel.  Its output bias ends hypotheses early and never picks <unk> or <pad> (which
    glassformer's decoders never generate; transformers' greedy search may)."""
    tmp = tmp_path_factory.mktemp("spm")
    source, target = _spm(SOURCE, tmp / "source.spm", 60), _spm(TARGET, tmp / "target.spm", 60)
    vocab = {"</s>": 0, "<unk>": 1}
    for model in (source, target):
        for i in range(model.get_piece_size()):
            if not (model.is_unknown(i) or model.is_control(i)):
                vocab.setdefault(model.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    (tmp / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = transformers.MarianTokenizer(source_spm=str(tmp / "source.spm"), target_spm=str(tmp / "target.spm"),
                                       vocab=str(tmp / "vocab.json"))
    pad = vocab["<pad>"]
    torch.manual_seed(0)
    config = transformers.MarianConfig(
        vocab_size=len(vocab), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, activation_function="swish",
        scale_embedding=True, pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=0,
        forced_eos_token_id=None, max_position_embeddings=256, dropout=0.0)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():                # larger weights than 0.02: outputs that depend on the source
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.4)
        model.final_logits_bias.normal_(0.0, 0.5)
        model.final_logits_bias[0, [1, pad]] = -1e4
    out = tmp / "marian"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _hf(path):
    return transformers.MarianTokenizer.from_pretrained(path), transformers.MarianMTModel.from_pretrained(path).eval()


def test_encode_and_decode_equal_marian_tokenizer(marian_dir):
    from glassformer.model_dir import load_model_dir

    theirs, _ = _hf(marian_dir)
    loaded = load_model_dir(marian_dir)
    src, tgt = loaded.src_tokenizer, loaded.tokenizer
    assert src.unk_id in src.encode(SENTENCES[2])                     # the unknown characters are exercised
    for text in SENTENCES:
        assert src.encode(text, eos=True) == theirs(text).input_ids, text
    text = SENTENCES[2]
    assert src.unknown_characters(text) == [c for c in dict.fromkeys(text) if 1 in theirs(c).input_ids and c != " "]
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        ids = torch.randint(0, src.vocab_size, (12,), generator=g).tolist()
        assert tgt.decode(ids) == theirs.decode(ids, skip_special_tokens=True), ids
    assert (tgt.eos_id, tgt.unk_id, tgt.pad_id) == (0, 1, tgt.vocab_size - 1) == \
        (theirs.eos_token_id, theirs.unk_token_id, theirs.pad_token_id)


def test_translate_cli_equals_generate(marian_dir, capsys):
    """Greedy search for at most 12 tokens on both sides (our limit a·|source| + b with a = 0)."""
    theirs, model = _hf(marian_dir)
    texts = ("the small house is here today", "where is the station?", "Zoë's ☃ café", "I like tea and bread.")
    expected = []
    for text in texts:
        with torch.no_grad():
            out = model.generate(**theirs(text, return_tensors="pt"), do_sample=False, num_beams=1,
                                 max_new_tokens=12)
        expected.append(theirs.batch_decode(out, skip_special_tokens=True)[0])
    assert len(set(expected)) == len(texts) and all(expected), expected    # the source matters, text comes out
    code, stdout, err = run_cli(capsys, "translate", marian_dir, *texts, "--max-len-a", "0", "--max-len-b", "12")
    assert code == 0, err
    assert stdout.splitlines() == expected


def test_convert_from_hf_refuses_sentencepiece(marian_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "convert", "--from", "hf", marian_dir, tmp_path / "ours")
    one_line_error(code, err, "source.spm", "SentencePiece", "tokenizer.json")
    assert not (tmp_path / "ours").exists()


def _copy(marian_dir, tmp_path):
    import shutil

    return shutil.copytree(marian_dir, tmp_path / "m")


def test_sentencepiece_file_that_is_not_one(marian_dir, tmp_path, capsys):
    bad = _copy(marian_dir, tmp_path)
    (bad / "target.spm").write_text("not a model", encoding="utf-8")
    one_line_error(*run_cli(capsys, "translate", bad, "x")[::2], "target.spm", "not a SentencePiece model")


def test_vocab_that_is_not_json(marian_dir, tmp_path, capsys):
    bad = _copy(marian_dir, tmp_path)
    (bad / "vocab.json").write_text("{not json", encoding="utf-8")
    one_line_error(*run_cli(capsys, "translate", bad, "x")[::2], "vocab.json", "not valid JSON")


@pytest.mark.parametrize("field, value, words", [
    ("eos_token_id", 10_000, ("config.json", "eos_token_id=10000", "outside the vocabulary")),
    ("eos_token_id", 3, ("eos_token_id is 3", "'</s>'", "vocab.json")),
    ("pad_token_id", 5, ("pad_token_id is 5", "'<pad>'", "vocab.json")),
    ("pad_token_id", 10_000, ("config.json", "pad_token_id=10000", "outside the vocabulary")),
])
def test_special_tokens_that_contradict_the_config(marian_dir, tmp_path, capsys, field, value, words):
    bad = _copy(marian_dir, tmp_path)
    config = json.loads((bad / "config.json").read_text(encoding="utf-8"))
    config[field] = value
    (bad / "config.json").write_text(json.dumps(config), encoding="utf-8")
    one_line_error(*run_cli(capsys, "translate", bad, "x")[::2], *words)


def test_tokenizer_json_that_does_not_load(tmp_path, capsys):
    config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "tokenizer.json").write_text('{"version": "1.0", "model": 7}', encoding="utf-8")
    capsys.readouterr()
    one_line_error(*run_cli(capsys, "generate", tmp_path / "gpt2", "x")[::2], "tokenizer.json", "corrupt")


def test_separate_vocabularies_equal_marian_tokenizer(tmp_path):
    """``separate_vocabs``: the source side's ids from vocab.json, the target side's from target_vocab.json."""
    from glassformer.interop.hf_marian import config_from_hf_marian, load_hf_marian_tokenizers

    vocabs = []
    for name, sentences in (("source", SOURCE), ("target", TARGET)):
        model = _spm(sentences, tmp_path / f"{name}.spm", 60)
        vocab = {"</s>": 0, "<unk>": 1, "<pad>": 2}
        for i in range(model.get_piece_size()):
            if not (model.is_unknown(i) or model.is_control(i)):
                vocab.setdefault(model.id_to_piece(i), len(vocab))
        vocabs.append(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocabs[0]), encoding="utf-8")
    (tmp_path / "target_vocab.json").write_text(json.dumps(vocabs[1]), encoding="utf-8")
    theirs = transformers.MarianTokenizer(source_spm=str(tmp_path / "source.spm"),
                                          target_spm=str(tmp_path / "target.spm"), vocab=str(tmp_path / "vocab.json"),
                                          target_vocab_file=str(tmp_path / "target_vocab.json"), separate_vocabs=True)
    theirs.save_pretrained(tmp_path / "m")
    theirs = transformers.MarianTokenizer.from_pretrained(tmp_path / "m")
    config = config_from_hf_marian({
        "vocab_size": len(vocabs[0]), "decoder_vocab_size": len(vocabs[1]), "share_encoder_decoder_embeddings": False,
        "d_model": 8, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 8,
        "pad_token_id": 2, "eos_token_id": 0, "decoder_start_token_id": 2})
    src, tgt = load_hf_marian_tokenizers(tmp_path / "m", config)
    assert vocabs[0] != vocabs[1] and (src.vocab, tgt.vocab) == tuple(vocabs)
    for text in SENTENCES:
        assert src.encode(text, eos=True) == theirs(text).input_ids, text
    assert tgt.encode("das kleine Haus", eos=True) == theirs(text_target="das kleine Haus").input_ids
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        ids = torch.randint(0, tgt.vocab_size, (12,), generator=g).tolist()
        assert tgt.decode(ids) == theirs.decode(ids, skip_special_tokens=True), ids
