"""The package's layers, written once, and imports that point downward only.

Every ``import`` of a ``glassformer`` module is read from the source (ast, nothing is imported),
at module level and inside functions alike: a lazy import is still a dependency.  A failure names
the file, the line and the import.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "glassformer"

# Lowest first.  A module may import its own layer and the layers below it, never one above.
# The first name of a module inside the package ("models" for glassformer.models.gpt, "model_dir"
# for glassformer/model_dir.py) says its layer; "" is the package's own __init__ (its version).
LAYERS = [
    ("", "errors", "files", "devices"),     # what every layer uses: exceptions, atomic files, devices
    ("nn",),                                # the paper's building blocks
    ("models",),                            # one composition of nn/ per family
    ("tokenizers", "data", "generation"),   # text in and out, datasets, decoding
    ("model_format",),                      # glassformer's own model directory, written and read
    ("interop",),                           # Hugging Face directories, one mapping per model_type
    ("model_dir",),                         # load either kind of directory onto a device
    ("tasks",),                             # inference over a loaded model directory
    ("training", "explain"),                # training recipes; attention capture and reports
    ("serve",),                             # the JSON API and page
    ("cli", "__main__"),                    # the command: parses arguments and prints
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}

# Layers that only the named layers may import, whatever their height.
ONLY_IMPORTED_BY = {"training": {"training", "cli"}}


def module_name(path: Path) -> str:
    parts = ["glassformer", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every glassformer import in ``path``, wherever it stands.
    ``from .x import y`` names the module ``x.y`` when ``y`` is one, else ``x``."""
    return sorted(set(_imports(path)))


def _imports(path: Path):
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "glassformer":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "glassformer":
                continue
            for alias in node.names:
                yield node.lineno, (f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)


def layer_name(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{line}"


def test_every_module_has_a_layer():
    missing = sorted({layer_name(m) for m in MODULES} - set(LAYER))
    assert not missing, f"glassformer/{missing[0]} has no layer: add it to LAYERS in {Path(__file__).name}"


def test_imports_point_downward():
    wrong = []
    for module, path in MODULES.items():
        here = layer_name(module)
        for line, target in imports(path):
            there = layer_name(target)
            if LAYER.get(there, -1) > LAYER.get(here, -1):
                wrong.append(f"{where(path, line)} imports {target}: {here or 'glassformer'} may not import "
                             f"{there}, a layer above it")
            elif there in ONLY_IMPORTED_BY and here not in ONLY_IMPORTED_BY[there]:
                wrong.append(f"{where(path, line)} imports {target}: only "
                             f"{' and '.join(sorted(ONLY_IMPORTED_BY[there]))} may import {there}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    edges = {m: {} for m in MODULES}                # module -> {imported module: where}
    for module, path in MODULES.items():
        for line, target in imports(path):
            if target in MODULES and target != module:
                edges[module].setdefault(target, where(path, line))
    cycles, state = [], {}                          # state: 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in edges[module]:
            if state.get(target) == 1:
                loop = path[path.index(target):] + [target]
                cycles.append(", ".join(f"{edges[a][b]} imports {b}" for a, b in zip(loop, loop[1:])))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_see_lazy_and_relative_imports():
    """The reader finds an import inside a function, resolves a relative one, and names its line."""
    found = dict((target, line) for line, target in imports(MODULES["glassformer.cli.mlm"]))
    source = MODULES["glassformer.cli.mlm"].read_text(encoding="utf-8").splitlines()
    assert "glassformer.training.mlm" in found                      # lazy: inside train_mlm_cmd
    assert "from ..training.mlm import" in source[found["glassformer.training.mlm"] - 1]
    assert "glassformer.cli.common" in found                        # relative: from .common import ...
