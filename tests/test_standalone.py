"""A clone stands on its own: nothing in the project reads a folder beside the checkout, and the
built-in corpora ship inside the package."""

from __future__ import annotations

import re
import subprocess
from importlib import resources
from pathlib import Path

from glassformer.data.lm import BUILTIN_CORPORA, SHIPPED_CORPORA, TINY_SHAKESPEARE, read_corpus

ROOT = Path(__file__).resolve().parents[1]
# A path that leaves the checkout for the folder it was developed beside (written as a pattern, so
# this file does not name it itself).
OUTSIDE = re.compile(r"\.\./shared\b|parents\[2\]\s*/\s*['\"]shared|\bshared[/]data/")


def project_files() -> list[Path]:
    """Every file of the project: git's list where there is one, else every file under the root."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [ROOT / name for name in listed.splitlines() if (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "runs", "__pycache__"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_no_file_of_the_project_names_a_folder_outside_the_checkout():
    offenders = []
    for path in project_files():
        if path.suffix in {".npy", ".png", ".safetensors", ".pt"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
                      for m in OUTSIDE.finditer(text)]
    assert not offenders, f"these lines read a folder beside the checkout, which a clone lacks: {offenders}"


def test_the_pattern_catches_what_it_must():
    assert OUTSIDE.search('DATA = "' + ".." + '/shared/' + 'data/tinyshakespeare.txt"')
    assert OUTSIDE.search('Path("shared/' + 'data/tinyshakespeare.txt")')
    assert OUTSIDE.search('Path(__file__).resolve().parents[2] / "' + 'shared" / "data"')
    assert not OUTSIDE.search("shared vocabulary, shared_vocab, a shared BPE")


def test_tiny_shakespeare_ships_with_the_package():
    assert TINY_SHAKESPEARE in BUILTIN_CORPORA
    shipped = resources.files("glassformer.data").joinpath("corpora", "tinyshakespeare.txt")
    assert shipped.is_file()
    (text,) = read_corpus("tiny-shakespeare")
    assert text == SHIPPED_CORPORA[TINY_SHAKESPEARE].read_text(encoding="utf-8")
    # Karpathy's char-rnn file: 1,115,394 characters (ASCII), 65 distinct, 40,000 lines
    assert len(text) == 1_115_394 and len(set(text)) == 65 and text.count("\n") == 40_000
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")


def test_the_package_data_rule_names_the_corpus():
    """A wheel (not only an editable install) carries the corpus: pyproject's package-data lists it."""
    import tomllib

    rules = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    corpus = Path("glassformer/data/corpora/tinyshakespeare.txt")
    assert any(corpus.match(f"glassformer/data/{pattern}") for pattern in rules["glassformer.data"])
