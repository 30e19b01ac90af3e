"""The comparison's report: ``results.json``, ``report.md`` and its figures, from the results of
:mod:`glassformer.training.compare` (every figure in the Markdown is formatted from the JSON's value).

    report.md                     what was measured, the tables, the figures
    results.json                  every figure of the report
    figures/valid_loss_time.png   validation loss against wall time, one line per model
    figures/valid_loss_steps.png  validation loss against steps
    figures/speed_params.png      training target tokens per second and parameters
    figures/by_length.png         exact match and BLEU by source length (short, medium, long)
    figures/alignment-NAME.png    the model's attention over the same example (models that have it)
    figures/probe_accuracy.png    accuracy against distance on the long-range probe
    eval.src, eval.ref            the evaluation split, one sentence per line
    translations/NAME.txt         each model's translations of eval.src, line by line

Figures are drawn with matplotlib's object API, like :mod:`glassformer.explain.figures`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..explain.figures import attention_grid_figure, figure_class, save_figure
from ..files import write_text_atomically

FIGSIZE = (7.0, 4.0)
DPI = 100
FIGURES = {"valid_loss_time": "validation loss against wall time", "valid_loss_steps": "validation loss against steps",
           "speed_params": "training speed and parameters", "by_length": "exact match and BLEU by source length",
           "probe_accuracy": "probe accuracy against distance"}
BUCKETS = ("short", "medium", "long")


# -- how each figure is written in the Markdown (the test reads them back) -------------------------
def count(x: int) -> str:
    return f"{x:,}"


def fixed(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def speed(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# -- figures -------------------------------------------------------------------------------------------
def _axes(title: str, xlabel: str, ylabel: str):
    fig = figure_class()(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def loss_figure(models: list[dict[str, Any]], x: str, budget: float | None = None):
    """Validation loss against ``x`` ("seconds" or "step"), one line per model (and the ``budget``, a
    dashed line, on the time axis)."""
    fig, ax = _axes(f"validation loss against {'wall time' if x == 'seconds' else 'steps'}",
                    "wall time of training (s)" if x == "seconds" else "step", "validation loss (per target token)")
    for m in models:
        ax.plot([p[x] for p in m["curve"]], [p["loss"] for p in m["curve"]], "o-", markersize=3, label=m["name"])
    if budget is not None:
        ax.axvline(budget, color="gray", linestyle="--", linewidth=1, label="budget")
    ax.legend()
    return fig


def speed_params_figure(models: list[dict[str, Any]]):
    """Two bar charts: training target tokens per second and parameters, one bar per model."""
    fig = figure_class()(figsize=(FIGSIZE[0], 3.4), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    names = [m["name"] for m in models]
    left.bar(names, [m["target_tokens_per_s"] or 0 for m in models], color="tab:blue")
    left.set(title="training speed", ylabel="target tokens / s")
    right.bar(names, [m["parameters"] / 1e6 for m in models], color="tab:gray")
    right.set(title="parameters", ylabel="millions")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    return fig


def by_length_figure(models: list[dict[str, Any]]):
    """Grouped bars: exact match and BLEU of each model in each length bucket."""
    fig = figure_class()(figsize=(FIGSIZE[0], 3.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2)
    width = 0.8 / len(models)
    for ax, key, label in zip(axes, ("exact_match", "bleu"), ("exact match (%)", "sacreBLEU")):
        for i, m in enumerate(models):
            values = [m["by_length"][b][key] or 0 for b in BUCKETS]
            ax.bar([j + i * width - 0.4 + width / 2 for j in range(len(BUCKETS))], values, width, label=m["name"])
        ax.set_xticks(range(len(BUCKETS)))
        ax.set_xticklabels(BUCKETS)
        ax.set(ylabel=label, title=f"{label} by source length")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    return fig


def probe_figure(models: list[dict[str, Any]], distances: list[int]):
    """Accuracy against distance (log scale), one line per model."""
    fig, ax = _axes("long-range recall: accuracy against distance", "distance (symbols between the answer and the end)",
                    "held-out accuracy (%)")
    for m in models:
        ax.plot(distances, [m["accuracy"][str(d)] for d in distances], "o-", label=m["name"])
    ax.set_xscale("log", base=2)
    ax.set_xticks(distances)
    ax.set_xticklabels([str(d) for d in distances])
    ax.set_ylim(-2, 102)
    ax.legend()
    return fig


def alignment_figure(name: str, found: dict[str, Any]):
    """One model's alignment (target × source); the module is named in the Markdown beside it."""
    panel = f"mean of {found['heads']} heads" if found["heads"] > 1 else "its attention"
    return attention_grid_figure(found["weights"][None], found["q_tokens"], found["k_tokens"], name,
                                 head_names=[panel])


# -- the report ------------------------------------------------------------------------------------------
def write_report(results: dict[str, Any], out_dir: Path, eval_pairs: Sequence[tuple[str, str]] | None) -> None:
    """Write the report of ``results`` (modified in place: translations and attention weights leave
    it for their files) into ``out_dir``."""
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    parts = [_heading(results)]
    if "translation" in results:
        part = results["translation"]
        models = part["models"]
        (out_dir / "translations").mkdir(exist_ok=True)
        write_text_atomically(out_dir / "eval.src", "".join(s + "\n" for s, _ in eval_pairs))
        write_text_atomically(out_dir / "eval.ref", "".join(t + "\n" for _, t in eval_pairs))
        for m in models:
            hypotheses = m.pop("hypotheses")
            m["translations"] = f"translations/{m['name']}.txt"
            write_text_atomically(out_dir / m["translations"], "".join(h + "\n" for h in hypotheses))
            found = m.pop("alignment")
            m["alignment"] = found
            if "missing" not in found:
                path = f"figures/alignment-{m['name']}.png"
                save_figure(alignment_figure(m["name"], found), out_dir / path)
                m["alignment"] = {"module": found["module"], "heads": found["heads"], "figure": path}
        save_figure(loss_figure(models, "seconds", results["budget_seconds"]), figures / "valid_loss_time.png")
        save_figure(loss_figure(models, "step"), figures / "valid_loss_steps.png")
        save_figure(speed_params_figure(models), figures / "speed_params.png")
        save_figure(by_length_figure(models), figures / "by_length.png")
        parts.append(_translation_markdown(part))
    if "probe" in results:
        part = results["probe"]
        save_figure(probe_figure(part["models"], part["distances"]), figures / "probe_accuracy.png")
        parts.append(_probe_markdown(part))
    parts.append(_how_measured(results))
    write_text_atomically(out_dir / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_text_atomically(out_dir / "report.md", "\n\n".join(parts) + "\n")


def _heading(results: dict[str, Any]) -> str:
    m = results["machine"]
    where = m["gpu"] or f"{m['cpu']} ({m['cpu_count']} cores, {m['threads']} threads)"
    return (f"# Why Transformers: the same work for the same wall time\n\n"
            f"Measured {m['date']} on {where}, torch {m['torch']}. Each model trained for "
            f"{fixed(results['budget_seconds'], 1)} s of wall time, one after the other, on the same data, "
            f"with the same trainer; seed {results['seed']}.")


def _translation_markdown(part: dict[str, Any]) -> str:
    models = part["models"]
    rows = [[m["name"], m["family"], count(m["parameters"]), count(m["steps"]), fixed(m["train_seconds"], 1),
             speed(m["target_tokens_per_s"]), fixed(m["best_valid_loss"], 4), fixed(m["eval"]["exact_match"]),
             fixed(m["eval"]["bleu"]), fixed(m["eval"]["chrf"])] for m in models]
    header = ["model", "family", "parameters", "steps", "training s", "target tokens/s", "best validation loss",
              "exact match %", "BLEU", "chrF"]
    spread = part["parameter_spread"]
    overrides = [f"`{m['name']}`: " + ", ".join(f"{k}={v}" for k, v in m["overrides"].items())
                 for m in models if m["overrides"]]
    length_rows = [[m["name"], b, f"{m['by_length'][b]['min_chars']}–{m['by_length'][b]['max_chars']}",
                    count(m["by_length"][b]["sentences"]), fixed(m["by_length"][b]["exact_match"]),
                    fixed(m["by_length"][b]["bleu"])] for m in models for b in BUCKETS]
    ex = part["example"]
    lines = [
        f"## Translation: {part['task']}",
        f"{count(part['train_pairs'])} training and {count(part['valid_pairs'])} validation pairs; evaluated on "
        f"{count(part['eval_pairs'])} {part['eval_split']} pairs with greedy decoding from each model's best "
        "checkpoint (lowest validation loss).",
        table(header, rows),
        ("Parameter counts " + (f"differ by a factor of {fixed(spread)} (largest over smallest)." if spread else
                                "of the one model compared.")
         + (" Preset fields changed: " + "; ".join(overrides) + "." if overrides else "")),
        f"![{FIGURES['valid_loss_time']}](figures/valid_loss_time.png)",
        f"![{FIGURES['valid_loss_steps']}](figures/valid_loss_steps.png)",
        f"![{FIGURES['speed_params']}](figures/speed_params.png)",
        "### By source length",
        "The evaluation pairs in three near-equal thirds by the length of the source in characters.",
        table(["model", "length", "characters", "sentences", "exact match %", "BLEU"], length_rows),
        f"![{FIGURES['by_length']}](figures/by_length.png)",
        "### Attention alignment",
        f"Each model's attention from the target tokens (rows) over the source tokens (columns), teacher-forced on "
        f"the reference, on the same example (evaluation line {ex['index'] + 1}): `{ex['source']}` → "
        f"`{ex['reference']}`.",
    ]
    for m in models:
        found = m["alignment"]
        if "missing" in found:
            lines.append(f"- **{m['name']}**: {found['missing']}; nothing to draw.")
        else:
            lines.append(f"- **{m['name']}** (`{found['module']}`"
                         + (f", mean of {found['heads']} heads" if found["heads"] > 1 else "") + f"):\n\n"
                         f"  ![{m['name']} alignment]({found['figure']})")
    return "\n\n".join(lines)


def _probe_markdown(part: dict[str, Any]) -> str:
    d = part["distances"]
    rows = [[m["name"], count(m["parameters"]), count(m["steps"]), fixed(m["best_valid_loss"], 4)]
            + [fixed(m["accuracy"][str(k)]) for k in d] for m in part["models"]]
    return "\n\n".join([
        "## Long-range probe: recall the marked symbol",
        f"The source is a row of random symbols (from {part['symbols']}) with one marked; the target is the "
        f"marked symbol, which has `distance` symbols after it and as many before the marker "
        f"(`data/probes.py`). {count(part['train_pairs'])} training examples over all distances; accuracy "
        f"(exact match, %) on {count(part['test_per_distance'])} held-out examples per distance.",
        table(["model", "parameters", "steps", "best validation loss"] + [f"distance {k}" for k in d], rows),
        f"![{FIGURES['probe_accuracy']}](figures/probe_accuracy.png)",
    ])


def _how_measured(results: dict[str, Any]) -> str:
    return "\n".join([
        "## How this was measured",
        "",
        "- Every model is trained by the same translation recipe (`train translation`), one run after the other, "
        "each stopped by the same time limit; wall time includes its periodic validations and checkpoint saves. "
        "A run stops after the first step that ends past the budget and validates once more, so its training "
        "time exceeds the budget by up to a step and a validation.",
        "- The time of a validation point is the training time logged at its step; the speed is the median of the "
        "logged intervals' target tokens per second (the first interval left out).",
        "- Exact match compares whole translations after stripping spaces; BLEU and chrF are sacreBLEU's corpus "
        "scores (default settings) against one reference.",
    ])


__all__ = ["FIGURES", "write_report", "loss_figure", "speed_params_figure", "by_length_figure", "probe_figure",
           "alignment_figure", "table", "count", "fixed", "speed"]
