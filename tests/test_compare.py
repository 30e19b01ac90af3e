"""`glassformer compare` (training/compare.py, compare_report.py, cli/compare.py) and the long-range
probe (data/probes.py): the probe's answers are right by construction, the report holds every figure
and table, its Markdown says what its JSON says, the exact match is a recount of the saved
translations, the length buckets cover every example once, and bad input is refused in one line with
nothing written."""

import json
import re

import pytest
import sacrebleu
import torch
from helpers import one_line_error, run_cli
from hypothesis import given, settings, strategies as st

from glassformer.data.numbers import number_corpus
from glassformer.data.probes import MARKER, recall_probe
from glassformer.errors import ConfigError
from glassformer.explain.attention import capture_attention
from glassformer.models import build_model, preset
from glassformer.models.config import PRESETS
from glassformer.tokenizers import Tokenizer
from glassformer.training.compare import (PROBE_TASK, CompareSettings, ComparedRun, alignment, evaluations_every,
                                          length_buckets, run_comparison, scores_by_length, validation_curve)

# The recurrent family once it is registered (its own tests live in test_recurrent.py), else a second Transformer.
RECURRENT = "lstm-tiny" if "lstm-tiny" in PRESETS else "t5-tiny"
MODELS = ["vaswani-tiny", RECURRENT]


# -- the probe's data ------------------------------------------------------------------------------
def _parts(source):
    """(before the marker, answer, after it), read from the words independently of the generator."""
    words = source.split(" ")
    at = words.index(MARKER)
    return words[:at], words[at + 1], words[at + 2:]


@settings(max_examples=25, deadline=None)
@given(distances=st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True), seed=st.integers(0, 10_000),
       n_symbols=st.integers(4, 26))
def test_probe_answers_are_right_by_construction(distances, seed, n_symbols):
    probe = recall_probe(distances, n_train=30, n_valid=3, n_test=5, n_symbols=n_symbols, seed=seed)
    assert probe.distances == sorted(distances) and sorted(probe.test) == sorted(distances)
    symbols = set(probe.symbols)
    assert len(symbols) == n_symbols and MARKER not in symbols
    lengths = {2 * d + 2 for d in distances}
    for source, target in probe.train + probe.valid:
        before, answer, after = _parts(source)
        assert target == answer and answer in symbols
        assert len(before) == len(after) and len(source.split()) in lengths
        assert source.count(MARKER) == 1 and set(before + after) <= symbols
    for d, pairs in probe.test.items():
        assert len(pairs) == 5
        for source, target in pairs:
            before, answer, after = _parts(source)
            assert (target, len(before), len(after)) == (answer, d, d)      # the distance as stated
    held = [s for pairs in probe.test.values() for s, _ in pairs] + [s for s, _ in probe.valid]
    assert len(set(held)) == len(held)                                       # held-out examples distinct
    assert not set(held) & {s for s, _ in probe.train}                       # and never trained on
    assert probe == recall_probe(distances, n_train=30, n_valid=3, n_test=5, n_symbols=n_symbols, seed=seed)
    assert len(probe.train) == 30 * len(distances) and len(probe.valid) == 3 * len(distances)


def test_each_probe_symbol_is_one_token():
    """Distance counts tokens too: the BPE trained as the comparison trains it gives one token per symbol."""
    probe = recall_probe([3, 9], n_train=200, seed=1)
    tok = Tokenizer.train_bpe([t for pair in probe.train for t in pair], PROBE_TASK["vocab_size"])
    for source, target in probe.test[9][:20]:
        assert len(tok.encode(source)) == 2 * 9 + 2 and len(tok.encode(target)) == 1


def test_probe_refusals():
    with pytest.raises(ConfigError, match="distances"):
        recall_probe([0, 2])
    with pytest.raises(ConfigError, match="too few"):
        recall_probe([1], n_symbols=2, n_valid=10, n_test=10)


# -- measuring -------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.lists(st.text("ab ", min_size=1, max_size=12), min_size=0, max_size=40))
def test_length_buckets_cover_every_example_once(sources):
    buckets = length_buckets(sources)
    assert list(buckets) == ["short", "medium", "long"]
    indices = [i for b in buckets.values() for i in b]
    assert sorted(indices) == list(range(len(sources)))
    sizes = [len(b) for b in buckets.values()]
    assert max(sizes) - min(sizes) <= 1
    for shorter, longer in zip(buckets.values(), list(buckets.values())[1:]):
        if shorter and longer:
            assert max(len(sources[i]) for i in shorter) <= min(len(sources[i]) for i in longer)


def test_bleu_by_length_is_sacrebleu_of_each_bucket():
    sources = ["a", "bb b", "ccc cc", "d d d d", "eeeee e", "f", "gg g g g g", "hh"]
    references = ["one", "two words", "three of them", "four words in all", "a b c d e", "x", "y z y z y", "w"]
    hypotheses = ["one", "two", "three of those", "four words in all", "e d c b a", "x", "y z", "v"]
    scores = scores_by_length(sources, hypotheses, references)
    buckets = length_buckets(sources)
    assert sum(s["sentences"] for s in scores.values()) == len(sources)
    for name, indices in buckets.items():
        expected = sacrebleu.corpus_bleu([hypotheses[i] for i in indices], [[references[i] for i in indices]]).score
        assert scores[name]["bleu"] == round(expected, 2)
        right = sum(hypotheses[i] == references[i] for i in indices)
        assert scores[name]["exact_match"] == round(100 * right / len(indices), 2)


def test_evaluations_every_gives_ten_points_in_the_budget():
    records = [{"kind": "train", "step": 3, "elapsed": 1.5}, {"kind": "eval", "step": 3, "loss": 2.0}]
    assert evaluations_every(records, budget=100.0) == 20            # 0.5 s a step: 200 steps, 10 validations
    assert evaluations_every(records, budget=1.0) == 1
    assert evaluations_every([{"kind": "eval", "step": 3, "loss": 2.0}], budget=100.0) is None


def test_validation_curve_times_each_evaluation():
    records = [{"kind": "train", "step": 5, "elapsed": 2.0}, {"kind": "eval", "step": 5, "loss": 3.0},
               {"kind": "train", "step": 10, "elapsed": 6.0}, {"kind": "eval", "step": 8, "loss": 2.5},
               {"kind": "eval", "step": 12, "loss": 2.0}, {"kind": "eval", "step": 3, "loss": 4.0}]
    curve = validation_curve(records, total_seconds=9.0)
    assert curve == [{"step": 5, "seconds": 2.0, "loss": 3.0},
                     {"step": 8, "seconds": 4.4, "loss": 2.5},        # 2 + (6 - 2) * 3/5
                     {"step": 12, "seconds": 9.0, "loss": 2.0},       # after the last record: the run's end
                     {"step": 3, "seconds": 1.2, "loss": 4.0}]        # before the first: from (0, 0)


def _fresh(name, tok):
    torch.manual_seed(0)
    config = preset(name, src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size)
    return ComparedRun(name, None, build_model(config).eval(), tok, tok, {})


def test_alignment_is_the_last_cross_attention_averaged_over_heads():
    corpus = number_corpus(max_number=199, n_valid=5, n_test=5, seed=0)
    tok = Tokenizer.train_bpe([t for pair in corpus.train for t in pair], 60)
    source, target = corpus.test[0]
    run = _fresh("vaswani-tiny", tok)
    found = alignment(run, source, target)
    src = torch.tensor([tok.encode(source) + [run.model.config.eos_id]])
    tgt = torch.tensor([[run.model.config.start_id] + tok.encode(target)])
    with torch.no_grad(), capture_attention(run.model, ["decoder.layers.1.cross_attention"]) as cap:
        run.model(src, tgt)
    heads = cap.weights["decoder.layers.1.cross_attention"][0]                # (4, tgt, src)
    assert found["module"] == "decoder.layers.1.cross_attention" and found["heads"] == 4
    torch.testing.assert_close(found["weights"], heads.mean(0))
    assert (len(found["q_tokens"]), len(found["k_tokens"])) == tuple(heads.shape[1:])
    if "lstm-tiny" in PRESETS:                        # the recurrent family: one attention, or none
        recurrent = alignment(_fresh("lstm-tiny", tok), source, target)
        assert recurrent["module"] == "decoder.attention" and recurrent["heads"] == 1
        torch.testing.assert_close(recurrent["weights"].sum(-1), torch.ones(len(recurrent["q_tokens"])))
        none = ComparedRun("lstm", None, build_model(preset("lstm-tiny", attention="none", input_feeding=False,
                                                            src_vocab_size=tok.vocab_size,
                                                            tgt_vocab_size=tok.vocab_size)).eval(), tok, tok, {})
        assert alignment(none, source, target) == {"missing": "no attention over the source"}


# -- a whole report --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report(tmp_path_factory):
    corpus = number_corpus(max_number=299, n_valid=20, n_test=30, seed=0)
    probe = recall_probe([2, 5], n_train=100, n_valid=8, n_test=12, seed=0)
    out = tmp_path_factory.mktemp("compare") / "report"
    compare = CompareSettings(models=MODELS, budget=30.0, eval_every=2, warmup_steps=0, progress=False,
                              training={"steps": 4, "max_tokens": 512, "warmup": 10})
    results = run_comparison(out, compare, translation={"name": "numbers", "train": corpus.train,
                                                        "valid": corpus.valid, "eval": corpus.test},
                             probe=probe, translation_task={"vocab_size": 60}, probe_task={"vocab_size": 40})
    return out, results


FIGURES = ["valid_loss_time", "valid_loss_steps", "speed_params", "by_length", "probe_accuracy"]


def _table(markdown: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose header starts with ``first_header``, as dicts by column."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, [c.strip() for c in line.strip("|").split("|")])))
    return rows


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_the_report_holds_every_figure_and_table(report):
    out, results = report
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for name in FIGURES:
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"](figures/{name}.png)" in markdown
    for m in results["translation"]["models"]:
        found = m["alignment"]
        if "missing" in found:                       # a model explain cannot capture says why
            assert f"**{m['name']}**: {found['missing']}" in markdown
        else:
            assert (out / found["figure"]).read_bytes()[:4] == b"\x89PNG" and f"]({found['figure']})" in markdown
    assert "figures/alignment-vaswani-tiny.png" in markdown     # the Transformer's cross-attention, mean of heads
    assert results["translation"]["models"][0]["alignment"]["module"] == "decoder.layers.1.cross_attention"
    if RECURRENT == "lstm-tiny":
        assert f"figures/alignment-{RECURRENT}.png" in markdown   # the recurrent decoder's attention
    for heading in ("## Translation", "### By source length", "### Attention alignment", "## Long-range probe"):
        assert heading in markdown
    assert json.loads((out / "results.json").read_text()) == results
    assert not list(out.parent.glob(".report.tmp-*"))           # the directory appeared whole


def test_the_markdown_says_what_the_json_says(report):
    out, results = report
    markdown = (out / "report.md").read_text(encoding="utf-8")
    models = results["translation"]["models"]
    rows = _table(markdown, "model | family")
    assert [r["model"] for r in rows] == MODELS
    for row, m in zip(rows, models):
        assert _number(row["parameters"]) == m["parameters"] and _number(row["steps"]) == m["steps"]
        assert _number(row["training s"]) == m["train_seconds"]
        assert _number(row["best validation loss"]) == m["best_valid_loss"]
        assert _number(row["exact match %"]) == m["eval"]["exact_match"]
        assert _number(row["BLEU"]) == m["eval"]["bleu"] and _number(row["chrF"]) == m["eval"]["chrf"]
        speed = m["target_tokens_per_s"]
        assert row["target tokens/s"] == "–" if speed is None else _number(row["target tokens/s"]) == speed
        assert m["steps"] == 4 and [p["step"] for p in m["curve"]] == [2, 4]
    by_length = _table(markdown, "model | length")
    assert len(by_length) == 3 * len(models)
    for row in by_length:
        bucket = next(m for m in models if m["name"] == row["model"])["by_length"][row["length"]]
        assert _number(row["sentences"]) == bucket["sentences"]
        assert _number(row["exact match %"]) == bucket["exact_match"] and _number(row["BLEU"]) == bucket["bleu"]
        assert row["characters"] == f"{bucket['min_chars']}–{bucket['max_chars']}"
    probe_rows = _table(markdown, "model | parameters")
    for row, m in zip(probe_rows, results["probe"]["models"]):
        assert row["model"] == m["name"] and _number(row["parameters"]) == m["parameters"]
        for d in results["probe"]["distances"]:
            assert _number(row[f"distance {d}"]) == m["accuracy"][str(d)]


def test_exact_match_is_a_recount_of_the_saved_translations(report):
    out, results = report
    references = (out / "eval.ref").read_text(encoding="utf-8").splitlines()
    sources = (out / "eval.src").read_text(encoding="utf-8").splitlines()
    assert len(references) == len(sources) == results["translation"]["eval_pairs"] == 30
    for m in results["translation"]["models"]:
        hypotheses = (out / m["translations"]).read_text(encoding="utf-8").split("\n")[:-1]
        assert len(hypotheses) == len(references)
        right = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
        assert m["eval"]["exact_match"] == round(100 * right / len(references), 2)
        assert m["eval"]["bleu"] == round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2)
        assert sum(b["sentences"] for b in m["by_length"].values()) == len(references)   # every example once
        assert (out / m["run"] / "best" / "config.json").is_file()


# -- the command -----------------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--probe", "--models", "vaswani-tiny,no-such-model"], ["no-such-model"]),
    (["--probe", "--models", "vaswani-tiny,vaswani-tiny"], ["named twice"]),
    (["--probe", "--models", "vaswani-tiny", "--override", "vaswani-small:d_model=64"], ["vaswani-small"]),
    (["--probe", "--models", "vaswani-tiny", "--override", "vaswani-tiny:no_field=1"], ["no_field"]),
    (["--probe", "--override", "oops"], ["PRESET:FIELD=VALUE"]),
    (["--probe", "--probe-distances", "2,x"], ["--probe-distances"]),
    (["--probe", "--budget", "0"], ["--budget"]),
    (["--probe", "--budget", "-5"], ["--budget"]),
    (["--models", "vaswani-tiny"], ["nothing to compare"]),
    (["--task", "numbers", "--src", "a.txt"], ["not both"]),
    (["--src", "a.txt", "--tgt", "b.txt", "--valid-src", "c.txt"], ["--valid-tgt"]),
])
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, args, words):
    out = tmp_path / "report"
    code, _, err = run_cli(capsys, "compare", *args, "--out", out)
    one_line_error(code, err, *words)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif("lstm-tiny" not in PRESETS, reason="the recurrent family is not registered yet")
def test_a_transformer_only_option_on_a_recurrent_model_is_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "compare", "--probe", "--models", "vaswani-tiny,lstm-tiny",
                           "--override", "lstm-tiny:n_heads=4", "--out", tmp_path / "report")
    one_line_error(code, err, "n_heads")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_report_directory_is_refused_unless_forced(capsys, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "compare", "--probe", "--models", "vaswani-tiny", "--out", out)
    one_line_error(code, err, "--force")
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    assert list(tmp_path.iterdir()) == [out]


def test_the_command_on_a_corpus_replaces_a_report_with_force(capsys, tmp_path):
    corpus = number_corpus(max_number=199, n_valid=10, n_test=8, seed=1)
    files = {}
    for name, pairs in (("train", corpus.train[:120]), ("test", corpus.test)):
        for side, i in (("de", 0), ("en", 1)):
            files[name, side] = tmp_path / f"{name}.{side}"
            files[name, side].write_text("".join(p[i] + "\n" for p in pairs), encoding="utf-8")
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("replaced")
    code, stdout, err = run_cli(capsys, "compare", "--src", files["train", "de"], "--tgt", files["train", "en"],
                                "--test-src", files["test", "de"], "--test-tgt", files["test", "en"],
                                "--models", "vaswani-tiny", "--budget", "2",
                                "--out", out, "--force")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    part = results["translation"]
    assert (part["eval_split"], part["eval_pairs"], part["train_pairs"], part["valid_pairs"]) == ("test", 8, 118, 2)
    assert (out / "eval.src").read_text(encoding="utf-8") == files["test", "de"].read_text(encoding="utf-8")
    assert not (out / "old.txt").exists() and "probe" not in results
    said = [line for line in stdout.splitlines() if line.startswith("translation ")]
    m = part["models"][0]
    # validations every eval_every steps (set from the warm-up's time per step), the last where time ran out
    assert m["eval_every"] >= 1 and m["curve"] and all(p["step"] % m["eval_every"] == 0 for p in m["curve"][:-1])
    assert said == [f"translation vaswani-tiny: {m['parameters']:,} parameters, {m['steps']:,} steps; exact match "
                    f"{m['eval']['exact_match']:.2f}%, BLEU {m['eval']['bleu']:.2f}"]


def test_help_documents_the_probe(capsys):
    code, out, _ = run_cli(capsys, "compare", "--help")
    assert code == 0
    text = re.sub(r"\s+", " ", out)
    for words in ("--probe", "--task", "--budget", "--models", "--override", "lstm-attention"):
        assert words in text
