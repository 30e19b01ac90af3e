"""The README's Python examples run and do what they say."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


def test_readme_python_examples(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert len(blocks) >= 2
    scope: dict = {}
    exec(compile(blocks[0], "README-example-1", "exec"), scope)
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith("[") and len(eval(printed)) == 1          # one translation string
    from glassformer.models import num_parameters
    assert abs(num_parameters(scope["model"]) - 63_082_496) == 0
    assert (tmp_path / "runs" / "readme-example" / "best" / "model.safetensors").is_file()
    scope = {}
    exec(compile(blocks[1], "README-example-2", "exec"), scope)
    assert tuple(scope["weights"].shape) == (2, 8, 10, 10)
    assert scope["out"].shape == scope["x"].shape
    scope = {}
    exec(compile(blocks[2], "README-example-3", "exec"), scope)
    assert tuple(scope["tokens"].shape) == (1, 8)
    assert capsys.readouterr().out.split() == ["rmsnorm", "rotary", "2", "True"]
