"""Where a model's parameters are: a per-component table, tied matrices counted once.

Works for any ``nn.Module`` built from ``glassformer.nn`` parts, by parameter
names alone:

* the **component** of a parameter is the top-level child it lives in
  (``src_embed``, ``encoder``, ``decoder``, ``generator``; ``token_embedding``,
  ``blocks``, ``lm_head`` …);
* a repeated **layer** is a numbered child (``encoder.layers.3.…``,
  ``blocks.3.…``); layers with the same make-up are shown once, "× N";
* the **kind** of a parameter comes from its name: a module named ``*norm*``
  → norms; ``embed`` → embeddings; ``attention`` → attention;
  ``feed_forward`` → feed-forward; the vocabulary projection (``generator``,
  ``lm_head``) → output projection; anything else → other.

A matrix shared by several names (weight tying, §3.4) is counted under the
first name :meth:`nn.Module.named_parameters` gives it; the other names are
listed as tied to it.

    >>> print(format_param_table(param_table(preset("vaswani-base"))))
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError

KINDS = ("embeddings", "attention", "feed-forward", "norms", "output projection", "other")
OUTPUT_NAMES = ("generator", "lm_head")
_LAYER = re.compile(r"^(?P<stack>.+?)\.(?P<index>\d+)\.(?P<rest>.+)$")


def parameter_kind(name: str) -> str:
    """The kind of one parameter, from its dotted name (see the module docstring)."""
    parts = name.split(".")
    owner = parts[-2] if len(parts) > 1 else parts[-1]      # the module that holds it
    if "norm" in owner:
        return "norms"
    if "embed" in name:
        return "embeddings"
    if "attention" in name:
        return "attention"
    if "feed_forward" in name:
        return "feed-forward"
    if parts[0] in OUTPUT_NAMES:
        return "output projection"
    return "other"


@dataclass
class ParamRow:
    """One line of the table: ``label`` at indentation ``depth``, ``count`` unique parameters."""

    label: str
    count: int
    depth: int = 0
    note: str = ""


@dataclass
class ParamTable:
    rows: list[ParamRow]                 # components, each followed by its layers and their kinds
    by_kind: dict[str, int]              # totals per kind, in KINDS order, zero kinds left out
    total: int                           # unique parameters (tied matrices once)
    tied: dict[str, str] = field(default_factory=dict)    # alias name -> name it is counted under

    def __str__(self) -> str:
        return format_param_table(self)


def _as_model(model_or_config) -> nn.Module:
    """A module to count.  A config is built on the 'meta' device: no memory, no initialisation cost."""
    if isinstance(model_or_config, nn.Module):
        return model_or_config
    from ..models import build_model

    with torch.device("meta"):
        return build_model(model_or_config)


def param_table(model_or_config) -> ParamTable:
    """Count a model's parameters per component, per layer and per kind.

    ``model_or_config``: an ``nn.Module``, or a model config (built on the meta device).
    """
    model = _as_model(model_or_config)
    counted: dict[int, str] = {}         # id(parameter) -> the name it is counted under
    tied: dict[str, str] = {}
    unique: list[tuple[str, int]] = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in counted:
            tied[name] = counted[id(p)]
            continue
        counted[id(p)] = name
        unique.append((name, p.numel()))

    # component -> {"direct": {module path: {kind: n}}, "stacks": {stack: {index: {kind: n}}}}
    components: dict[str, dict] = {}
    by_kind: dict[str, int] = defaultdict(int)
    for name, n in unique:
        kind = parameter_kind(name)
        by_kind[kind] += n
        top = name.split(".")[0]
        entry = components.setdefault(top, {"direct": {}, "stacks": {}})
        match = _LAYER.match(name)
        if match:
            layers = entry["stacks"].setdefault(match["stack"], {})
            layers.setdefault(int(match["index"]), defaultdict(int))[kind] += n
        else:
            owner = ".".join(name.split(".")[1:-1]) or top
            entry["direct"].setdefault(owner, defaultdict(int))[kind] += n

    rows: list[ParamRow] = []
    for top, entry in components.items():
        direct_total = sum(sum(kinds.values()) for kinds in entry["direct"].values())
        layered_total = sum(sum(kinds.values()) for layers in entry["stacks"].values() for kinds in layers.values())
        notes = [] if entry["stacks"] else [_kinds_note(kinds for kinds in entry["direct"].values())]
        aliases = sorted({a.split(".")[0] for a, target in tied.items() if target.split(".")[0] == top} - {top})
        if aliases:
            notes.append(f"shared with {', '.join(aliases)}")
        rows.append(ParamRow(top, direct_total + layered_total, 0, "; ".join(notes)))
        for stack, layers in entry["stacks"].items():
            rows.extend(_layer_rows(stack, layers))
        if entry["stacks"]:
            rows.extend(ParamRow(owner, sum(kinds.values()), 1, _kinds_note([kinds]))
                        for owner, kinds in entry["direct"].items())
    for top in _tied_only_components(counted, tied):
        names = [alias for alias in tied if alias.split(".")[0] == top]
        targets = sorted({tied[alias] for alias in names})
        kind = _kinds_note([{parameter_kind(alias): 1 for alias in names}])
        rows.append(ParamRow(top, 0, 0, f"{kind}; tied to {', '.join(targets)}"))

    return ParamTable(rows, dict(_ordered(by_kind)), sum(n for _, n in unique), tied)


def _layer_rows(stack: str, layers: dict[int, dict[str, int]]) -> list[ParamRow]:
    """Rows for one stack of numbered layers: identical layers once (× N), else each layer."""
    signatures = {tuple(_ordered(kinds)) for kinds in layers.values()}
    if len(signatures) == 1:
        kinds = dict(next(iter(signatures)))
        groups = [(f"{stack} (× {len(layers)}, each)", kinds)]
    else:
        groups = [(f"{stack}.{i}", layers[i]) for i in sorted(layers)]
    rows = []
    for label, kinds in groups:
        rows.append(ParamRow(label, sum(kinds.values()), 1))
        rows.extend(ParamRow(kind, n, 2) for kind, n in _ordered(kinds))
    return rows


def _tied_only_components(counted: dict[int, str], tied: dict[str, str]) -> list[str]:
    """Top-level children whose every parameter is tied to one counted elsewhere (e.g. a tied output layer)."""
    owners = {name.split(".")[0] for name in counted.values()}
    return list(dict.fromkeys(alias.split(".")[0] for alias in tied if alias.split(".")[0] not in owners))


def _kinds_note(groups) -> str:
    """'embeddings' or 'attention + norms': the kinds present in some {kind: n} dicts, in KINDS order."""
    present = set()
    for kinds in groups:
        present.update(kind for kind, n in kinds.items() if n)
    return " + ".join(kind for kind in KINDS if kind in present)


def _ordered(kinds: dict[str, int]) -> list[tuple[str, int]]:
    return [(kind, kinds[kind]) for kind in KINDS if kinds.get(kind)]


def human_count(n: int) -> str:
    """18940000 -> '18.94M'; 2048 -> '2.05K'; 512 -> '512'."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_param_table(table: ParamTable, *, title: str | None = None) -> str:
    """The table as aligned text: component, count, share of the total, notes."""
    lines = [(("  " * row.depth) + row.label, human_count(row.count),
              f"{100 * row.count / table.total:.1f}%" if table.total else "", row.note) for row in table.rows]
    lines.append(("", "", "", ""))
    lines.append(("by kind", "", "", ""))
    lines.extend(("  " + kind, human_count(n), f"{100 * n / table.total:.1f}%", "") for kind, n in table.by_kind.items())
    lines.append(("total", human_count(table.total), "100.0%" if table.total else "", f"{table.total:,} parameters"))
    header = ("component", "params", "share", "")
    width = [max(len(line[i]) for line in [header, *lines]) for i in range(3)]

    def render(label, count, share, note):
        text = f"{label:<{width[0]}}  {count:>{width[1]}}  {share:>{width[2]}}"
        return (f"{text}  {note}" if note else text).rstrip()

    out = [title] if title else []
    out.append(render(*header))
    out.append("-" * (width[0] + width[1] + width[2] + 4))
    out.extend(render(*line) for line in lines)
    return "\n".join(out)


def arithmetic(config) -> list[str]:
    """The sums behind the largest rows, written out: one layer's query/key/value projections and the
    token embedding (for the families whose configs name them)."""
    d, heads = getattr(config, "d_model", None), getattr(config, "n_heads", None)
    if not d or not heads:
        return []
    kv_heads = getattr(config, "n_kv_heads", None) or heads
    d_kv = kv_heads * (d // heads)
    lines = []
    if kv_heads == heads:
        lines.append(f"query/key/value projections of one attention: 3 × {d:,}² = {human_count(3 * d * d)}")
    else:
        lines.append(f"query/key/value projections of one attention: {d:,}² + 2 × {d:,} × {d_kv:,} = "
                     f"{human_count(d * d + 2 * d * d_kv)} ({kv_heads} key/value heads for {heads} query heads; "
                     f"one per query head would be 3 × {d:,}² = {human_count(3 * d * d)})")
    vocab = getattr(config, "vocab_size", None) or getattr(config, "src_vocab_size", None)
    if vocab:
        lines.append(f"token embedding: {vocab:,} × {d:,} = {human_count(vocab * d)}")
    return lines


# -- which config: a preset or a directory, with other vocabulary sizes --------------------------
def _looks_like_path(name: str) -> bool:
    return Path(name).is_dir() or "/" in name or name.startswith(".") or name.endswith(".json")


def load_config(name: str):
    """A preset by name, or the config of a model directory (or of its config.json)."""
    if _looks_like_path(name):
        from ..model_dir import read_config

        path = Path(name)
        return read_config(path.parent if path.name == "config.json" else path)
    from ..models import preset

    return preset(name)


def with_vocab(config, vocab: int | None, src_vocab: int | None, tgt_vocab: int | None):
    """Apply the vocabulary options to whichever vocabulary fields the config has."""
    fields = set(config.to_dict())
    changes: dict[str, int] = {}
    if vocab is not None:
        names = [f for f in ("vocab_size", "src_vocab_size", "tgt_vocab_size") if f in fields]
        if not names:
            raise ConfigError(f"--vocab does not apply: a {config.family} config has no vocabulary size field")
        changes.update(dict.fromkeys(names, vocab))
    for option, field_name, value in (("--src-vocab", "src_vocab_size", src_vocab),
                                      ("--tgt-vocab", "tgt_vocab_size", tgt_vocab)):
        if value is not None:
            if field_name not in fields:
                raise ConfigError(f"{option} does not apply: a {config.family} config has one vocabulary; use --vocab")
            changes[field_name] = value
    src, tgt = changes.get("src_vocab_size"), changes.get("tgt_vocab_size")
    if src is not None and tgt is not None and src != tgt and getattr(config, "tie_embeddings", None) == "all":
        # Separate vocabularies cannot share one embedding matrix; count the next-closest tying.
        changes["tie_embeddings"] = "decoder"
    return config.replace(**changes) if changes else config


__all__ = ["KINDS", "ParamRow", "ParamTable", "param_table", "parameter_kind", "format_param_table", "human_count",
           "arithmetic", "load_config", "with_vocab"]
