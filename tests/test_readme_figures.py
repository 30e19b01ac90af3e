"""The README's figures are the results files' figures: every table and sentence with a
measured number in "Results" is rendered from benchmarks/results/*.json by
benchmarks/readme_tables.py, and nothing in that section is typed by hand."""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_results_equal_what_the_results_files_render(tables):
    problems = tables.check(ROOT / "README.md", ROOT / "benchmarks" / "results")
    assert not problems, ("README is out of date with benchmarks/results; run "
                          "`python benchmarks/readme_tables.py --write`:\n" + "\n".join(problems))


def test_every_block_has_its_script(tables):
    for name, scripts in tables.SCRIPTS.items():
        for script in re.findall(r"benchmarks/\w+\.py", scripts):
            if script.endswith("bench_quickstart.py"):
                continue                     # written by the demo's owner; may not exist yet
            assert (ROOT / script).is_file(), f"block {name!r}: {script} is missing"


def _readme_copy(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    return readme


def test_a_changed_figure_is_caught(tables, tmp_path):
    readme = _readme_copy(tmp_path)
    text = readme.read_text(encoding="utf-8")
    body = tables.blocks_in(text)["params"]
    digit = re.search(r"\d", body)
    assert digit, "the params block renders figures"
    changed = body[:digit.start()] + str((int(digit.group()) + 1) % 10) + body[digit.end():]
    readme.write_text(text.replace(body, changed), encoding="utf-8")
    problems = tables.check(readme, ROOT / "benchmarks" / "results")
    assert any("'params' differs" in p for p in problems)


def test_a_hand_typed_figure_outside_the_blocks_is_caught(tables, tmp_path):
    readme = _readme_copy(tmp_path)
    text = readme.read_text(encoding="utf-8")
    text = text.replace("## Results\n", "## Results\n\nTraining runs at 12,345 tokens/s.\n", 1)
    readme.write_text(text, encoding="utf-8")
    problems = tables.check(readme, ROOT / "benchmarks" / "results")
    assert any("12,345" in p and "outside" in p for p in problems)
    # Code spans and link targets are not figures.
    assert tables.figures_outside_blocks("## Results\n`make -j2` [x](results/gpt_cpu.md)\n## Command line\n") == []


def test_missing_markers_are_reported(tables, tmp_path):
    readme = _readme_copy(tmp_path)
    text = readme.read_text(encoding="utf-8")
    readme.write_text(re.sub(r"<!-- /?results:lm-quality -->\n?", "", text), encoding="utf-8")
    assert any("'lm-quality'" in p and "missing" in p for p in tables.check(readme, ROOT / "benchmarks" / "results"))


def test_missing_or_old_results_say_not_measured(tables, tmp_path):
    for name in tables.BLOCKS:
        assert tables.render_block(name, tmp_path).startswith("*Not measured yet:")
    (tmp_path / "lm_quality.json").write_text(json.dumps({"val_loss": 1.9}))       # an older format
    assert "older format" in tables.render_block("lm-quality", tmp_path)


def test_demo_block_reads_what_quickstart_json_holds(tables, tmp_path):
    # The layout benchmarks/bench_quickstart.py writes: the quickstart's results.json under "quickstart".
    (tmp_path / "quickstart.json").write_text(json.dumps({
        "machine": {"date": "2030-01-02", "cpu": "Test CPU", "cpu_count": 4, "threads": 4, "torch": "9.9"},
        "fresh_clone": True, "wall_seconds": 251.4,
        "quickstart": {"exact_match": 98.5, "bleu": 99.1, "chrf": 99.8, "sentences": 2000, "train_steps": 800,
                       "max_steps": 800, "time_limited": False, "train_seconds": 190.0, "threads": 4,
                       "by_range": {"0-99": {"seen": {"n": 100, "exact_match": 80.0},
                                             "held_out": {"n": 0, "exact_match": None}}},
                       "spoken_forms": {"seen": {"n": 351, "exact_match": 99.43},
                                        "held_out": {"n": 217, "exact_match": 98.62}}},
    }))
    block = tables.render_block("demo", tmp_path)
    for expected in ("2030-01-02", "**98.50%**", "99.10 / 99.80", "2,000", "seen in training 80.0% of 100",
                     "held out: none", "spoken forms (\"hundert\" for \"einhundert\", all ranges) | seen in training "
                     "99.4% of 351 · held out 98.6% of 217", "800 of 800 steps", "190 s on 4 threads", "**251 s**",
                     "`make demo`"):
        assert expected in block, expected
    assert tables.MISSING not in block


def test_demo_block_marks_what_is_missing(tables, tmp_path):
    (tmp_path / "quickstart.json").write_text(json.dumps({"quickstart": {"exact_match": 97.0}}))
    block = tables.render_block("demo", tmp_path)
    assert "**97.00%**" in block and tables.MISSING in block


def test_every_block_names_its_date_and_the_decoding_block_the_demo_model(tables):
    """Each figure says when it was measured, and the decoding table measured the model the demo table did."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, body in tables.blocks_in(readme).items():
        assert "date not recorded" not in body, f"README block {name!r} does not say when it was measured"
    results = ROOT / "benchmarks" / "results"
    demo = json.loads((results / "quickstart.json").read_text(encoding="utf-8"))
    decoding = json.loads((results / "numbers_decoding.json").read_text(encoding="utf-8"))
    assert decoding.get("model_sha256") and decoding["model_sha256"] == demo.get("model_sha256"), (
        "benchmarks/results/numbers_decoding.json measured another model than quickstart.json's demo; run "
        "benchmarks/bench_quickstart.py then benchmarks/bench_numbers_decoding.py (make bench does both)")
    assert "the demo's model" in tables.render_block("decoding", results)
