"""Writing files: atomic, with ordinary modes; the one JSON reader."""

import os
import stat

import pytest

from glassformer.errors import CheckpointError, ConfigError
from glassformer.files import read_json, write_atomically, write_text_atomically
from glassformer.model_dir import load_model_dir, save_model_dir
from glassformer.models import build_model, preset


def modes(path):
    return {p.relative_to(path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [path, *path.rglob("*")]}


def test_model_directories_get_the_modes_of_any_other_file(tmp_path):
    old = os.umask(0o022)
    try:
        save_model_dir(tmp_path / "model", build_model(preset("gpt-tiny")))
        write_text_atomically(tmp_path / "results.json", "{}\n")
    finally:
        os.umask(old)
    found = modes(tmp_path / "model")
    assert found.pop(".") == 0o755 and set(found.values()) == {0o644}      # not mkdtemp's 0700 / mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_directory_and_no_temporary(tmp_path):
    target = tmp_path / "out"
    write_atomically(target, lambda d: (d / "a.txt").write_text("old"))

    def half_then_fail(d):
        (d / "a.txt").write_text("new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, half_then_fail)
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_read_json_names_the_file_and_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"config file .*bad\.json is not valid JSON"):
        read_json(bad, what="config file", error=ConfigError)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_json(tmp_path / "missing.json", error=CheckpointError)
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}', encoding="utf-8")
    assert read_json(tmp_path / "ok.json") == {"a": [1, 2]}


def test_a_model_directory_with_a_broken_generation_file_is_one_clear_error(tmp_path):
    path = save_model_dir(tmp_path / "model", build_model(preset("gpt-tiny")), generation={"temperature": 0.8})
    assert load_model_dir(path).generation == {"temperature": 0.8}
    (path / "generation.json").write_text("[1,")
    with pytest.raises(CheckpointError, match="generation settings .* is not valid JSON"):
        load_model_dir(path)
