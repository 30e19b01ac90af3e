"""Pictures of a training run from its ``log.jsonl``: ``glassformer plot RUN_DIR``.

    loss.png   training loss against step (a line) and validation loss (markers) on the same axes
    lr.png     the learning rate against step (only when the log has train records with ``lr``)

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``,
rendered by Agg): no display, no pyplot state.  Both are rendered in memory
first, then each is written to a temporary sibling and renamed into place, so
a failure leaves no half-written PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..explain.figures import figure_class
from ..files import write_bytes_atomically
from .metrics import LOG_NAME, MetricsLog

FIGSIZE = (7.0, 4.0)       # inches; a PNG is FIGSIZE * DPI pixels
DPI = 100


def series(records: list[dict[str, Any]], kind: str, name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric of one kind, in step order; null (NaN/inf) and missing values left out."""
    points = sorted((r["step"], r[name]) for r in records
                    if r.get("kind") == kind and isinstance(r.get(name), (int, float)) and not isinstance(r[name], bool))
    return [s for s, _ in points], [float(v) for _, v in points]


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``loss.png`` (and ``lr.png`` when the log has learning rates) into ``out_dir`` (default:
    ``run_dir``); returns the paths written.  Raises :class:`InputError` when there is nothing to plot."""
    run_dir = Path(run_dir)
    out_dir = run_dir if out_dir is None else Path(out_dir)
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise InputError(f"run directory {run_dir} {what}; expected the --out directory of a training run")
    log = run_dir / LOG_NAME
    if not log.is_file():
        raise InputError(f"{run_dir} has no {LOG_NAME}; expected the --out directory of a training run "
                         "(it writes log.jsonl as it trains)")
    records = MetricsLog.records(run_dir)
    if not records:
        raise InputError(f"{log} holds no records yet; plot again once the run has logged a step")
    train_loss, eval_loss, lr = (series(records, kind, name)
                                 for kind, name in (("train", "loss"), ("eval", "loss"), ("train", "lr")))
    if not train_loss[0] and not eval_loss[0]:
        raise InputError(f"{log} has no finite loss values to plot; expected records with a numeric \"loss\"")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output directory {out_dir} is a file; expected a directory")

    Figure = figure_class()
    figures = {"loss.png": _loss_figure(Figure, train_loss, eval_loss, title=run_dir.name or str(run_dir))}
    if lr[0]:
        figures["lr.png"] = _lr_figure(Figure, lr, title=run_dir.name or str(run_dir))
    pngs = {}
    for name, fig in figures.items():                  # render everything before writing anything
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        pngs[name] = buffer.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_bytes_atomically(out_dir / name, data) for name, data in pngs.items()]


def _loss_figure(Figure, train, evaluation, *, title: str):
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.subplots()
    if train[0]:
        ax.plot(*train, linewidth=1.2, label="training loss")
    if evaluation[0]:
        ax.plot(*evaluation, "o", markersize=5, label="validation loss")
    ax.set(xlabel="step", ylabel="loss (per token)", title=f"{title}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _lr_figure(Figure, lr, *, title: str):
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.subplots()
    ax.plot(*lr, linewidth=1.2)
    ax.set(xlabel="step", ylabel="learning rate", title=f"{title}: learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


