"""Pictures of attention and of positional encodings (matplotlib's object API, Agg; no pyplot state).

* :func:`attention_grid_figure` — one heatmap per head of (heads, q_len, k_len) weights;
  inputs longer than 64 tokens are averaged over blocks of consecutive positions so
  that at most 64×64 cells are drawn, and the axes name the position ranges.
* :func:`patch_attention_figure` — one small heatmap per caption token of its attention over
  an image's patch grid (rows, cols).
* :func:`neuron_activation_figure` — a (tokens × neurons) heatmap of feed-forward activations.
* :func:`saliency_figure` — per-token input attributions, one row per method.
* :func:`logit_lens_figure` — the top-1 probability of each layer's prediction at each position.
* :func:`positional_encoding_figure` — the sinusoidal table of §3.5 as a heatmap, and a
  few of its dimensions as curves.
* :func:`save_figure` — writes a figure atomically (a temporary file in the same folder,
  then ``os.replace``), so a reader never sees half a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError, InputError
from ..files import write_file_atomically
from ..nn.positions import sinusoidal_table

__all__ = ["MAX_CELLS", "MAX_PE_D_MODEL", "MAX_PE_LENGTH", "attention_grid_figure", "block_average",
           "figure_class", "figure_format", "logit_lens_figure", "neuron_activation_figure", "patch_attention_figure",
           "pca_figure", "positional_encoding_figure", "range_labels", "saliency_figure", "save_figure"]

MAX_CELLS = 64          # per axis: longer inputs are averaged over blocks of positions
# The positional-encoding figure draws its whole table; past these sizes the pixels are long used up,
# and the table (length × d_model) would only cost memory and time.
MAX_PE_LENGTH = 10_000
MAX_PE_D_MODEL = 4096


def figure_class():
    """matplotlib's ``Figure`` (object API, no pyplot state); a ConfigError naming the extra without it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'glassformer[plot]'") from None
    return Figure


def _figure(figsize: tuple[float, float], *grid: int, **options):
    """A figure of ``figsize`` inches at 100 dpi (constrained layout) and its axes (``fig.subplots(*grid)``)."""
    fig = figure_class()(figsize=figsize, dpi=100, layout="constrained")
    return fig, fig.subplots(*grid, **options)


def _colorbar_and_title(fig, ax, image, label: str, title: str):
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def _blocks(n: int, max_cells: int = MAX_CELLS) -> list[tuple[int, int]]:
    """At most ``max_cells`` [start, end) ranges of consecutive positions covering 0..n (the last may be shorter)."""
    size = max(1, math.ceil(n / max_cells))
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def block_average(weights: Tensor, max_cells: int = MAX_CELLS) -> tuple[Tensor, list[tuple[int, int]],
                                                                         list[tuple[int, int]]]:
    """(…, q, k) -> (…, ≤max_cells, ≤max_cells): each cell the mean over a block of consecutive
    positions (the last block may be shorter).  Also the [start, end) position ranges of the
    row blocks and of the column blocks.  Short axes are kept as they are."""
    rows, cols = _blocks(weights.shape[-2], max_cells), _blocks(weights.shape[-1], max_cells)
    out = torch.stack([weights[..., a:b, :].mean(dim=-2) for a, b in rows], dim=-2)
    out = torch.stack([out[..., a:b].mean(dim=-1) for a, b in cols], dim=-1)
    return out, rows, cols


def range_labels(blocks: list[tuple[int, int]], tokens: Sequence[str] | None) -> list[str]:
    """A label per [start, end) block of :func:`block_average`: its token where the block is one
    position (its index without ``tokens``), else its position range, e.g. ``"16–31"``."""
    labels = []
    for a, b in blocks:
        text = f"{a}" if b - a == 1 else f"{a}–{b - 1}"
        if tokens is not None and b - a == 1:
            text = str(tokens[a])
        labels.append(text)
    return labels


def attention_grid_figure(weights: Tensor, q_tokens: Sequence[str] | None = None,
                          k_tokens: Sequence[str] | None = None, title: str = "", *,
                          head_names: Sequence[str] | None = None, max_cells: int = MAX_CELLS):
    """One heatmap per head.  weights: (heads, q_len, k_len) (a (q_len, k_len) matrix is one head);
    ``q_tokens`` / ``k_tokens``: the query / key tokens, the tick labels (default: positions).

    Inputs of more than ``max_cells`` (64) positions on an axis are averaged over blocks of
    positions, so at most 64×64 cells are drawn, and that axis is labelled with position ranges
    ("0–3", "4–7", …).  Returns a ``matplotlib.figure.Figure``."""
    weights = torch.as_tensor(weights).detach().float().cpu()
    if weights.dim() == 2:
        weights = weights[None]
    if weights.dim() != 3 or 0 in weights.shape:
        raise InputError(f"attention weights must be (heads, q_len, k_len), got shape {tuple(weights.shape)}")
    heads, q_len, k_len = weights.shape
    for name, tokens, n in (("q_tokens", q_tokens, q_len), ("k_tokens", k_tokens, k_len)):
        if tokens is not None and len(tokens) != n:
            raise InputError(f"{name} has {len(tokens)} tokens but the weights have {n} positions on that axis")
    cells, rows, cols = block_average(weights, max_cells)
    row_labels, col_labels = range_labels(rows, q_tokens), range_labels(cols, k_tokens)
    blocked_q, blocked_k = len(rows) < q_len, len(cols) < k_len

    n_cols = min(heads, 4)
    n_rows = math.ceil(heads / n_cols)
    side = 3.2 if max(len(rows), len(cols)) <= 24 else 4.4
    fig, axes = _figure((side * n_cols + 0.8, side * n_rows + (0.6 if title else 0.2)), n_rows, n_cols, squeeze=False)
    vmax = float(cells.max()) if cells.numel() else 1.0
    image = None
    for ax in axes.flat[heads:]:
        ax.set_axis_off()
    for h, ax in enumerate(axes.flat[:heads]):
        image = ax.imshow(cells[h].numpy(), cmap="viridis", vmin=0.0, vmax=vmax or 1.0, aspect="auto",
                          interpolation="nearest")
        ax.set_title(head_names[h] if head_names is not None else f"head {h}", fontsize=9)
        _ticks(ax.set_xticks, ax.set_xticklabels, col_labels, rotation=90)
        _ticks(ax.set_yticks, ax.set_yticklabels, row_labels)
        if h // n_cols == n_rows - 1 or h + n_cols >= heads:
            ax.set_xlabel("key positions (block means)" if blocked_k else "key")
        if h % n_cols == 0:
            ax.set_ylabel("query positions (block means)" if blocked_q else "query")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention weight")
    if title:
        fig.suptitle(title)
    return fig


def patch_attention_figure(maps: Tensor, names: Sequence[str], title: str = ""):
    """maps: (n, rows, cols), one attention map over the patch grid per query token (``names``, one
    per map); each panel has its own colour scale (where that token looks, not how much).  Returns a
    ``matplotlib.figure.Figure``."""
    maps = torch.as_tensor(maps).detach().float().cpu()
    if maps.dim() != 3 or 0 in maps.shape:
        raise InputError(f"patch maps must be (tokens, rows, cols), got shape {tuple(maps.shape)}")
    if len(names) != maps.shape[0]:
        raise InputError(f"{len(names)} names for {maps.shape[0]} patch maps")
    n, rows, cols = maps.shape
    n_cols = min(n, 6)
    n_rows = math.ceil(n / n_cols)
    side = 2.0
    fig, axes = _figure((side * n_cols * max(1.0, cols / rows) ** 0.5 + 0.4, side * n_rows + (0.6 if title else 0.2)),
                        n_rows, n_cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(maps[i].numpy(), cmap="viridis", vmin=0.0, interpolation="nearest")
        ax.set_title(str(names[i]), fontsize=8)
        ax.set_xticks(range(cols))
        ax.set_yticks(range(rows))
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def neuron_activation_figure(acts: Tensor, tokens: Sequence[str], neurons: Sequence[int], title: str = ""):
    """acts: (seq, k) activations of ``k`` feed-forward neurons (their indices ``neurons``) at each
    token; one heatmap, tokens down, neurons across, a diverging scale centred on 0.  Returns a
    ``matplotlib.figure.Figure``."""
    acts = torch.as_tensor(acts).detach().float().cpu()
    if acts.dim() != 2 or 0 in acts.shape:
        raise InputError(f"activations must be (tokens, neurons), got shape {tuple(acts.shape)}")
    if len(tokens) != acts.shape[0] or len(neurons) != acts.shape[1]:
        raise InputError(f"{len(tokens)} tokens and {len(neurons)} neurons for activations of shape "
                         f"{tuple(acts.shape)}")
    seq, k = acts.shape
    rows = _blocks(seq)                             # long inputs: means over blocks of tokens, as the grids
    cells = torch.stack([acts[a:b].mean(0) for a, b in rows])                  # (≤64, k)
    labels = range_labels(rows, tokens)
    fig, ax = _figure((1.2 + 0.5 * k, 1.2 + 0.22 * len(rows)))
    vmax = float(cells.abs().max()) or 1.0
    image = ax.imshow(cells.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(k))
    ax.set_xticklabels([str(n) for n in neurons], fontsize=8)
    _ticks(ax.set_yticks, ax.set_yticklabels, labels)
    ax.set_xlabel("neuron")
    ax.set_ylabel("token (block means)" if len(rows) < seq else "token")
    return _colorbar_and_title(fig, ax, image, "activation", title)


def saliency_figure(values: dict[str, Tensor | Sequence[float]], tokens: Sequence[str], title: str = ""):
    """One row per attribution method (``values``: method name -> (seq,) per-token attributions),
    tokens across, each row scaled by its own largest |value| on a diverging scale (red raises the
    logit, blue lowers it).  Long inputs: sums over blocks of tokens (attributions add up).
    Returns a ``matplotlib.figure.Figure``."""
    if not values:
        raise InputError("no attributions to draw")
    rows = [torch.as_tensor(v).detach().double().cpu() for v in values.values()]
    seq = len(tokens)
    if any(r.shape != (seq,) for r in rows):
        raise InputError(f"attributions must have one value per token ({seq}), got shapes "
                         f"{[tuple(r.shape) for r in rows]}")
    sums = _blocks(seq)
    cells = torch.stack([torch.stack([r[a:b].sum() for a, b in sums]) for r in rows])        # (methods, ≤64)
    peak = cells.abs().amax(dim=1, keepdim=True)
    scaled = torch.where(peak > 0, cells / peak.clamp_min(1e-300), torch.zeros_like(cells))
    fig, ax = _figure((2 + 0.3 * len(sums), 1.2 + 0.5 * len(rows)))
    image = ax.imshow(scaled.float().numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    _ticks(ax.set_xticks, ax.set_xticklabels, range_labels(sums, tokens), rotation=90)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(list(values), fontsize=8)
    ax.set_xlabel("token (block sums)" if len(sums) < seq else "token")
    return _colorbar_and_title(fig, ax, image, "share of the largest |value|", title)


def logit_lens_figure(probabilities: Tensor | Sequence[Sequence[float]], top_tokens: Sequence[Sequence[str]],
                      layer_names: Sequence[str], tokens: Sequence[str], title: str = ""):
    """The logit lens as a heatmap: layers down (embeddings first), input positions across, each
    cell the probability of that layer's top-1 next token, written in the cell when there are at
    most 24 positions.  probabilities: (layers + 1, seq); top_tokens: the same shape of strings.
    Long inputs keep the last 64 positions.  Returns a ``matplotlib.figure.Figure``."""
    probs = torch.as_tensor(probabilities).detach().float().cpu()
    if probs.dim() != 2 or probs.shape != (len(layer_names), len(tokens)):
        raise InputError(f"the lens must be (layers {len(layer_names)}, tokens {len(tokens)}), "
                         f"got shape {tuple(probs.shape)}")
    start = max(0, probs.shape[1] - MAX_CELLS)
    probs, shown = probs[:, start:], list(tokens)[start:]
    fig, ax = _figure((2 + 0.55 * len(shown), 1.2 + 0.35 * len(layer_names)))
    image = ax.imshow(probs.numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    if len(shown) <= 24:
        for i in range(probs.shape[0]):
            for j in range(probs.shape[1]):
                ax.text(j, i, str(top_tokens[i][start + j]), ha="center", va="center", fontsize=7,
                        color="white" if probs[i, j] > 0.5 else "black")
    _ticks(ax.set_xticks, ax.set_xticklabels, [f"{start + j}:{t}" if start else str(t) for j, t in enumerate(shown)],
           rotation=90)
    ax.set_yticks(range(len(layer_names)))
    ax.set_yticklabels(list(layer_names), fontsize=8)
    ax.set_xlabel("input position (the prediction made there)")
    return _colorbar_and_title(fig, ax, image, "top-1 probability", title)


def _ticks(set_ticks, set_labels, labels: list[str], rotation: int = 0) -> None:
    """Every label when there are few, else about 16 of them."""
    step = 1 if len(labels) <= 32 else math.ceil(len(labels) / 16)
    where = list(range(0, len(labels), step))
    set_ticks(where)
    set_labels([labels[i] for i in where], fontsize=7 if len(labels) > 16 else 8, rotation=rotation)


def _curve_dimensions(d_model: int) -> list[int]:
    wanted = [0, 1, 4, 5, d_model // 2, d_model // 2 + 1, d_model - 2, d_model - 1]
    return sorted({d for d in wanted if 0 <= d < d_model})


def positional_encoding_figure(d_model: int = 128, length: int = 100, *, layout: str = "interleaved"):
    """The sinusoidal positional encoding (§3.5): its (length, d_model) table as a heatmap, and
    dimensions 0, 1, 4, 5, d/2, d/2+1 … as curves over the positions.  d_model must be an even
    number from 2 to MAX_PE_D_MODEL (a sine and a cosine per frequency), length from 1 to MAX_PE_LENGTH."""
    if isinstance(d_model, bool) or not isinstance(d_model, int) or not 2 <= d_model <= MAX_PE_D_MODEL or d_model % 2:
        raise InputError(f"d_model must be an even number from 2 to {MAX_PE_D_MODEL:,} (a sine and a cosine per "
                         f"frequency), got {d_model}")
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_PE_LENGTH:
        raise InputError(f"length must be from 1 to {MAX_PE_LENGTH:,} positions (the heatmap is a few hundred "
                         f"pixels wide; more cannot be told apart), got {length}")
    table = sinusoidal_table(length, d_model, layout)
    Figure = figure_class()
    fig = Figure(figsize=(12, 4.5), dpi=100, layout="constrained")
    heat, curves = fig.subplots(1, 2, width_ratios=[1.2, 1])
    image = heat.imshow(table.T.numpy(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto", origin="lower",
                        interpolation="nearest")
    heat.set_xlabel("position")
    heat.set_ylabel("dimension")
    heat.set_title(f"sinusoidal positional encoding (d_model={d_model})")
    fig.colorbar(image, ax=heat, shrink=0.8)
    positions = torch.arange(length).numpy()
    for d in _curve_dimensions(d_model):
        kind = ("sin" if d % 2 == 0 else "cos") if layout == "interleaved" else ("sin" if d < d_model // 2 else "cos")
        curves.plot(positions, table[:, d].numpy(), label=f"dim {d} ({kind})", linewidth=1.2)
    curves.set_xlabel("position")
    curves.set_ylabel("value")
    curves.set_ylim(-1.1, 1.1)
    curves.set_title("some dimensions")
    curves.legend(fontsize=7, loc="lower right")
    return fig


def pca_figure(vectors: Tensor, words: Sequence[str]):
    """A labelled scatter of ``vectors`` (words, d) on their first two principal components."""
    from .probe import pca_2d

    coords, share = pca_2d(vectors)
    fig = figure_class()(figsize=(6, 5))
    ax = fig.subplots()
    ax.scatter(coords[:, 0], coords[:, 1])
    for (x, y), word in zip(coords.tolist(), words):
        ax.annotate(word, (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel(f"PC 1 ({share[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC 2 ({share[1]:.0%} of the variance)")
    ax.set_title("word vectors, first two principal components")
    return fig


def figure_format(path: str | Path) -> str:
    """The format a figure is written in to ``path``: its suffix (none: PNG).  A suffix matplotlib
    cannot write is an InputError naming those it can, so that a caller can check before drawing."""
    fmt = Path(path).suffix[1:].lower() or "png"
    known = figure_class()().canvas.get_supported_filetypes()
    if fmt not in known:
        common = [f for f in ("png", "svg", "pdf") if f in known]
        names = ", ".join(common + sorted(set(known) - set(common)))
        raise InputError(f"cannot write a figure as .{fmt} ({path}); give a file name ending in .png or another "
                         f"format matplotlib writes: {names}")
    return fmt


def save_figure(fig, path: str | Path, *, dpi: int | None = None, tight: bool = False) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, default PNG; see :func:`figure_format`)
    atomically: into a temporary file in the same folder, then renamed over ``path``.  The pixel
    size is figsize × dpi (``tight``: cut to what is drawn)."""
    path = Path(path)
    fmt = figure_format(path)
    return write_file_atomically(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi if dpi is not None else fig.dpi,
                                                             bbox_inches="tight" if tight else None))
