"""The translation task from the outside: corpus, files, model directories and the CLI's answers to bad input."""

import json

import pytest
import torch
from helpers import one_line_error, run_cli, untrained_translator

from glassformer.cli.main import main
from glassformer.data.numbers import number_corpus
from glassformer.data.parallel import read_parallel
from glassformer.errors import CheckpointError, InputError
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.generation.translation import translate
from glassformer.training.translation import TranslationSettings, train_translation


@pytest.fixture(scope="module")
def corpus():
    return number_corpus("de", "en", max_number=2999, n_train=2000, n_valid=200, n_test=300, seed=5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, corpus):
    return untrained_translator(tmp_path_factory.mktemp("m") / "model", corpus, 200, max_len=24)


# -- the built-in corpus -------------------------------------------------------------
def test_number_corpus_splits_are_disjoint_and_deterministic(corpus):
    nums = corpus.numbers
    assert not set(nums["train"]) & set(nums["test"])
    assert not set(nums["train"]) & set(nums["valid"])
    assert not set(nums["valid"]) & set(nums["test"])
    again = number_corpus("de", "en", max_number=2999, n_train=2000, n_valid=200, n_test=300, seed=5)
    assert again.test == corpus.test and again.train == corpus.train
    other = number_corpus("de", "en", max_number=2999, n_train=2000, n_valid=200, n_test=300, seed=6)
    assert other.test != corpus.test
    n, (de, en) = nums["test"][0], corpus.test[0]
    from num2words import num2words
    assert de == num2words(n, lang="de") and en == num2words(n, lang="en")


def test_number_corpus_other_languages_and_bad_ones():
    c = number_corpus("fr", "es", max_number=99, n_train=50, n_valid=10, n_test=10)
    assert len(c.train) == 50
    with pytest.raises(Exception, match="not supported"):
        number_corpus("xx", "en", max_number=99, n_train=10, n_valid=5, n_test=5)


# -- user corpora --------------------------------------------------------------------
def test_read_parallel_formats(tmp_path):
    (tmp_path / "a.tsv").write_text("eins\tone\nzwei\ttwo\n", encoding="utf-8")
    assert read_parallel(tmp_path / "a.tsv") == [("eins", "one"), ("zwei", "two")]
    (tmp_path / "a.jsonl").write_text('{"src": "eins", "tgt": "one"}\n["zwei", "two"]\n', encoding="utf-8")
    assert read_parallel(tmp_path / "a.jsonl") == [("eins", "one"), ("zwei", "two")]
    (tmp_path / "s.txt").write_text("eins\nzwei\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("one\ntwo\n", encoding="utf-8")
    assert read_parallel(tmp_path / "s.txt", tmp_path / "t.txt") == [("eins", "one"), ("zwei", "two")]
    (tmp_path / "b.tsv").write_text("eins\tone\nzwei\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        read_parallel(tmp_path / "b.tsv")


# -- model directories -----------------------------------------------------------------
def test_model_directory_round_trip(tmp_path, corpus):
    """The model loaded from a run's directory is the model training held in memory: same weights,
    same tokenizer, same logits, same translations (not merely two loads that agree with each other)."""
    settings = TranslationSettings(preset="vaswani-tiny", model={"max_len": 64}, vocab_size=200, max_tokens=1024,
                                   steps=3, progress=False)
    run = train_translation(corpus.train[:400], corpus.valid[:20], settings, tmp_path / "run")
    loaded = load_model_dir(tmp_path / "run" / "last")
    trained, saved = run.model.eval(), loaded.model.eval()
    ours, theirs = trained.state_dict(), saved.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k].cpu(), theirs[k].cpu()) for k in ours)
    assert saved.generator.proj.weight is saved.src_embed.token.weight     # tying survives
    src_text, tgt_text = corpus.test[0]
    assert loaded.src_tokenizer.encode(src_text) == run.source_tokenizer.encode(src_text)
    src = torch.tensor([run.source_tokenizer.encode(src_text, eos=True)])
    tgt_in = torch.tensor([run.tokenizer.encode(tgt_text, bos=True)])
    with torch.no_grad():
        torch.testing.assert_close(saved(src, tgt_in), trained(src, tgt_in), rtol=0, atol=0)
    srcs = [s for s, _ in corpus.test[:5]]
    assert translate(saved, loaded.src_tokenizer, loaded.tokenizer, srcs) == \
        translate(trained, run.source_tokenizer, run.tokenizer, srcs)


def test_corrupt_model_directories(model_dir, tmp_path):
    import shutil
    truncated = tmp_path / "truncated"
    shutil.copytree(model_dir, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model_dir(truncated)
    no_config = tmp_path / "no_config"
    shutil.copytree(model_dir, no_config)
    (no_config / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_model_dir(no_config)
    bad_json = tmp_path / "bad_json"
    shutil.copytree(model_dir, bad_json)
    (bad_json / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model_dir(bad_json)


def test_save_is_atomic(tmp_path, model_dir):
    loaded = load_model_dir(model_dir)

    class Boom(Exception):
        pass

    class BadTokenizer:
        def save(self, path):
            raise Boom()

    with pytest.raises(Boom):
        save_model_dir(tmp_path / "out", loaded.model, BadTokenizer())
    assert list(tmp_path.iterdir()) == []          # nothing half-written, no temp dir left


# -- the CLI -------------------------------------------------------------------------------
def test_cli_translate_and_evaluate(capsys, model_dir, corpus, tmp_path):
    code, out, _ = run_cli(capsys, "translate", model_dir, corpus.test[0][0], corpus.test[1][0])
    assert code == 0 and len(out.splitlines()) == 2          # one line per sentence (a random model may say "")
    (tmp_path / "src.txt").write_text("".join(s + "\n" for s, _ in corpus.test[:20]), encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(t + "\n" for _, t in corpus.test[:20]), encoding="utf-8")
    code, out, _ = run_cli(capsys, "evaluate", model_dir, "--src", tmp_path / "src.txt", "--ref", tmp_path / "ref.txt")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["sentences"] == 20 and 0 <= result["exact_match"] <= 100


def test_cli_evaluate_writes_the_hypotheses_it_scored(capsys, model_dir, corpus, tmp_path):
    sources = [s for s, _ in corpus.test[:5]]
    (tmp_path / "src.txt").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(t + "\n" for _, t in corpus.test[:5]), encoding="utf-8")
    code, _, err = run_cli(capsys, "evaluate", model_dir, "--src", tmp_path / "src.txt", "--ref", tmp_path / "ref.txt",
                           "--hyp-out", tmp_path / "hyp.txt")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "translate", model_dir, *sources)
    assert (tmp_path / "hyp.txt").read_text(encoding="utf-8") == out      # what translate says, a line each


def test_cli_bad_inputs(capsys, model_dir, tmp_path):
    code, _, err = run_cli(capsys, "translate", model_dir, "")
    one_line_error(code, err, "empty")
    code, _, err = run_cli(capsys, "translate", model_dir, " ".join(["neunundneunzig"] * 40))
    one_line_error(code, err, "at most 24")
    code, _, err = run_cli(capsys, "translate", tmp_path / "nowhere", "eins")
    one_line_error(code, err, "does not exist")
    (tmp_path / "latin1.txt").write_bytes("drei\xdfig\n".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("thirty\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "evaluate", model_dir, "--src", tmp_path / "latin1.txt", "--ref", tmp_path / "ok.txt")
    one_line_error(code, err, "not UTF-8")


def test_cli_train_refuses_bad_input_and_writes_nothing(capsys, tmp_path):
    (tmp_path / "s.txt").write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("one\ntwo\n", encoding="utf-8")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "translation", "--src", tmp_path / "s.txt", "--tgt", tmp_path / "t.txt",
                           "--out", out)
    one_line_error(code, err, "3 lines", "2")
    (tmp_path / "t.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "train", "translation", "--src", tmp_path / "s.txt", "--tgt", tmp_path / "t.txt",
                           "--preset", "vaswani-huge", "--out", out)
    one_line_error(code, err, "vaswani-huge", "vaswani-base")
    (tmp_path / "c.json").write_text('{"model": {"d_model": 100, "n_heads": 8}}', encoding="utf-8")
    code, _, err = run_cli(capsys, "train", "translation", "--src", tmp_path / "s.txt", "--tgt", tmp_path / "t.txt",
                           "--config", tmp_path / "c.json", "--out", out)
    one_line_error(code, err, "d_model=100", "n_heads=8")
    (tmp_path / "t.txt").write_text("one\n\nthree\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "train", "translation", "--src", tmp_path / "s.txt", "--tgt", tmp_path / "t.txt",
                           "--out", out)
    one_line_error(code, err, "line 2 is empty")
    assert not out.exists()


def test_cli_debug_shows_traceback(tmp_path):
    with pytest.raises(CheckpointError):
        main(["--debug", "translate", str(tmp_path / "nowhere"), "eins"])


def test_cli_min_length_and_no_repeat(capsys, model_dir, corpus):
    loaded = load_model_dir(model_dir)
    src = corpus.test[0][0]
    code, out, _ = run_cli(capsys, "translate", model_dir, src, "--beam", "3", "--min-length", "6",
                           "--no-repeat-ngram-size", "2", "--max-len-b", "12")
    assert code == 0
    ids = loaded.tokenizer.encode(out.strip())
    assert len(ids) >= 6
    bigrams = list(zip(ids, ids[1:]))
    assert len(bigrams) == len(set(bigrams))


def test_cli_quickstart_small_run(capsys, tmp_path):
    """The demo's command end to end at toy scale: scores on exactly the held-out numbers, a loadable model."""
    out = tmp_path / "qs"
    code, stdout, _ = run_cli(capsys, "quickstart", "--out", out, "--steps", "3", "--n-test", "100")
    assert code == 0, stdout
    result = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert result["sentences"] == 100 and result["train_steps"] == 3
    assert f"exact match {result['exact_match']:.2f}%" in stdout
    loaded = load_model_dir(out / "best")
    assert loaded.config.d_model == 128 and loaded.config.encoder_layers == 3
    code, _, err = run_cli(capsys, "quickstart", "--out", tmp_path / "bad", "--src-lang", "xx")
    one_line_error(code, err, "xx")
    assert not (tmp_path / "bad").exists()
