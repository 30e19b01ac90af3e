"""serve/ and explain/ state what differs per model family once, in one table each
(``glassformer.serve.adapters.ADAPTERS``, ``glassformer.explain.collectors.COLLECTORS``), and keep their
pages in files that a built wheel ships (issue 19)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "glassformer"
LAYERS = ("serve", "explain", "cli")   # interop states its families once, in its FAMILIES table


def _is_family(node: ast.AST) -> bool:
    """``family``, ``x.family`` or ``x["family"]``."""
    if isinstance(node, ast.Name):
        return node.id == "family"
    if isinstance(node, ast.Attribute):
        return node.attr == "family"
    return isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "family"


def _is_family_names(node: ast.AST) -> bool:
    """A family name written in the code: a string, a tuple / list / set of strings, or a ``*_FAMILIES`` constant."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts)
    return isinstance(node, ast.Name) and node.id.endswith("FAMILIES")


def family_switches(root: Path) -> list[str]:
    """Every comparison of a family with family names (``family == "gpt"``, ``family in ("vit", ...)``)
    in the Python files of ``root``'s serve/ and explain/, as "path:line: code"."""
    found = []
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            compares = [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Compare)]
            for node in sorted(compares, key=lambda n: (n.lineno, n.col_offset)):
                sides = [node.left, *node.comparators]
                if any(map(_is_family, sides)) and any(map(_is_family_names, sides)):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_finder_sees_a_family_switch(tmp_path):
    """The check below can fail: it finds each way a switch on the family is written."""
    for layer in LAYERS:
        (tmp_path / "glassformer" / layer).mkdir(parents=True)
    (tmp_path / "glassformer" / "serve" / "a.py").write_text(
        'if self.family == "vit": pass\nif family in ("transformer", "caption"): pass\n'
        'x = 1 if report["family"] != "bert" else 2\nif family not in NEURON_FAMILIES: pass\n'
        'if family in ADAPTERS: pass\nif self.task == "generate": pass\n')
    found = family_switches(tmp_path / "glassformer")
    assert [line.split(": ", 1)[0] for line in found] == [f"glassformer/serve/a.py:{i}" for i in (1, 2, 3, 4)]


def test_serve_and_explain_look_families_up_instead_of_switching_on_them():
    assert family_switches(PACKAGE) == []


def test_serve_and_explain_adapt_the_same_families():
    from glassformer.explain.collectors import COLLECTORS
    from glassformer.serve.adapters import ADAPTERS

    assert set(ADAPTERS) == set(COLLECTORS) == {"gpt", "transformer", "recurrent", "bert", "vit", "caption"}


def test_the_pages_are_files_that_the_wheel_ships():
    """No HTML page in a Python string; each page file matches the package data of pyproject.toml
    (the globs setuptools puts in a wheel), so an installed glassformer finds it."""
    for layer in LAYERS:
        for path in (PACKAGE / layer).rglob("*.py"):
            assert "<!doctype html" not in path.read_text(encoding="utf-8").lower(), path
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for layer, folder in (("serve", "static"), ("explain", "templates")):
        pages = sorted((PACKAGE / layer / folder).iterdir())
        assert pages, folder
        patterns = package_data.get(f"glassformer.{layer}", [])
        shipped = {p for pattern in patterns for p in (PACKAGE / layer).glob(pattern)}
        assert set(pages) <= shipped, f"pyproject.toml's package-data does not ship {set(pages) - shipped}"


@pytest.mark.parametrize("name", ["vit-tiny", "caption-tiny"])
def test_explain_checks_an_image_before_it_reads_the_weights(name, tmp_path, capsys):
    """explain on an image model refuses a file that is not an image in one line, from the family's
    collector (its check_input), before the weights are read: here the weights file is broken too."""
    from glassformer.model_dir import save_model_dir
    from glassformer.models import build_model, preset
    from helpers import one_line_error, run_cli

    model_dir = tmp_path / "model"
    save_model_dir(model_dir, build_model(preset(name)))
    (model_dir / "model.safetensors").write_bytes(b"not weights")
    (tmp_path / "picture.png").write_text("not a picture")
    code, _, err = run_cli(capsys, "explain", model_dir, tmp_path / "picture.png", "--out", tmp_path / "x.html")
    one_line_error(code, err, "picture.png")
    assert "safetensors" not in err and not (tmp_path / "x.html").exists()
