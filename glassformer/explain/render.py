"""The explain report as one self-contained HTML page (inline CSS/JS/SVG only: it opens offline) and as
PNG figures.  The page's frame, style and script are ``templates/report.html``; the parts that depend on
the report (token rows, prediction, logit lens, saliency, neurons, grids, patch maps) are built here."""

from __future__ import annotations

import html
import json
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Sequence

import torch

from ..files import write_text_atomically
from .collectors import COLLECTORS
from .figures import MAX_CELLS, block_average, range_labels
from .report_types import AttentionModule, Report

# ${family}, ${text}, ${tokens}, ... : filled in by render_html (the style and script hold no "$")
TEMPLATE = Template(files(__package__).joinpath("templates", "report.html").read_text(encoding="utf-8"))


def _blocked(entry: AttentionModule) -> tuple[torch.Tensor, list[str], list[str]]:
    """(heads, ≤64, ≤64) cells and the row / column labels (tokens, or position ranges of blocks)."""
    cells, rows, cols = block_average(entry.weights, MAX_CELLS)
    return cells, range_labels(rows, entry.q_tokens), range_labels(cols, entry.k_tokens)


def _color(v: float, vmax: float) -> str:
    """White -> dark blue."""
    x = 0.0 if vmax <= 0 else max(0.0, min(1.0, v / vmax))
    r, g, b = (round(255 + (c - 255) * x) for c in (8, 48, 107))
    return f"#{r:02x}{g:02x}{b:02x}"


def _heatmap_svg(cells: torch.Tensor, row_labels: list[str], col_labels: list[str], attrs: str = "") -> str:
    q, k = cells.shape
    cell = max(6, min(22, 560 // max(q, k, 1)))
    left, top = 90, 90
    width, height = left + k * cell + 10, top + q * cell + 10
    vmax = float(cells.max()) if cells.numel() else 1.0
    parts = [f'<svg width="{width}" height="{height}" {attrs}>']
    font = 10 if cell >= 10 else 7
    for j, lab in enumerate(col_labels):
        x = left + j * cell + cell / 2
        parts.append(f'<text x="{x:.1f}" y="{top - 4}" font-size="{font}" transform="rotate(-90 {x:.1f} {top - 4})">'
                     f'{html.escape(lab)}</text>')
    for i, lab in enumerate(row_labels):
        parts.append(f'<text x="{left - 4}" y="{top + i * cell + cell * 0.75:.1f}" font-size="{font}" '
                     f'text-anchor="end">{html.escape(lab)}</text>')
    values = cells.tolist()
    for i in range(q):
        for j in range(k):
            v = values[i][j]
            parts.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                         f'fill="{_color(v, vmax)}"><title>{html.escape(row_labels[i])} → '
                         f'{html.escape(col_labels[j])}: {v:.4f}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _json_data(report: Report, blocked: list[tuple[torch.Tensor, list[str], list[str]]]) -> dict:
    """What the page's script draws from: every module's (block-averaged) weights and labels;
    ``blocked``: :func:`_blocked` of each module of ``report.attention``."""
    modules = []
    for m, (cells, rows, cols) in zip(report.attention, blocked):
        modules.append({"name": m.name, "kind": m.kind, "layer": m.layer, "heads": m.heads,
                        "q_labels": rows, "k_labels": cols,
                        "blocked": cells.shape[-2:] != m.weights.shape[-2:],
                        "weights": [[[round(v, 7) for v in row] for row in head] for head in cells.tolist()]})
    return {"family": report.family, "tokens": report.tokens, "modules": modules}


def _prediction_html(report: Report) -> str:
    p = report.prediction
    if not p:
        return f"<p>{COLLECTORS[report.family].no_prediction}</p>"

    def top_table(items):
        rows = "".join(f"<tr><td class='tok'>{html.escape(c['token'])}</td><td>{c['probability']:.4f}</td></tr>"
                       for c in items)
        return f"<table><tr><th>token</th><th>probability</th></tr>{rows}</table>"

    out = []
    if "continuation" in p:
        out.append(f"<p>Greedy continuation: <span class='pred'>{html.escape(p['continuation'])}</span></p>")
    if "translation" in p:
        how = "given target" if p["target_given"] else "greedy translation"
        out.append(f"<p>Target ({how}): <span class='pred'>{html.escape(p['translation'])}</span></p>")
    if "caption" in p:
        how = "given caption" if p["target_given"] else "greedy caption"
        out.append(f"<p>Caption ({how}): <span class='pred' id='caption'>{html.escape(p['caption'])}</span></p>")
    if "next_token_top5" in p:
        out.append("<p>Next token, top 5:</p>" + top_table(p["next_token_top5"]))
    for m in p.get("masks", []):
        out.append(f"<p>[MASK] at position {m['position']}, top 5:</p>" + top_table(m["top5"]))
    if "classes_top5" in p:
        rows = "".join(f"<tr data-class='{html.escape(c['label'])}'><td class='tok'>{html.escape(c['label'])}</td>"
                       f"<td>{c['probability']:.4f}</td></tr>" for c in p["classes_top5"])
        out.append(f"<p>Classes, top {len(p['classes_top5'])}:</p>"
                   f"<table id='classes'><tr><th>class</th><th>probability</th></tr>{rows}</table>")
    return "".join(out)


def _lens_html(report: Report) -> str:
    rows = report.logit_lens
    if not rows:
        return ""
    esc = html.escape
    tokens = report.tokens["input"]
    last = "".join(f"<tr data-lens-layer='{esc(r['layer'])}'><td>{esc(r['layer'])}</td>"
                   f"<td class='tok'>{esc(r['top1'][-1]['token'])}</td><td>{r['top1'][-1]['probability']:.4f}</td></tr>"
                   for r in rows)
    head = "".join(f"<th class='tok'>{esc(t)}</th>" for t in tokens)
    every = "".join(f"<tr><td>{esc(r['layer'])}</td>"
                    + "".join(f"<td class='tok' title='{c['probability']:.4f}'>{esc(c['token'])}</td>" for c in r["top1"])
                    + "</tr>" for r in rows)
    return ("<h2>Logit lens</h2><p>The top-1 token (and its probability) when each layer's output is "
            "unembedded by the model's final norm and output matrix, at the last position:</p>"
            f"<table id='lens-last'><tr><th>layer</th><th>top-1 token</th><th>probability</th></tr>{last}</table>"
            "<details><summary>Every position</summary>"
            f"<table id='lens-all'><tr><th>layer</th>{head}</tr>{every}</table></details>")


def _json_script(element_id: str, value) -> str:
    data = json.dumps(value, ensure_ascii=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{data}</script>'


def _shaded_tokens(tokens: Sequence[str], values: Sequence[float], attribute: str) -> str:
    """One span per token, shaded by value / max |value|: red for positive, blue for negative."""
    peak = max((abs(v) for v in values), default=0.0)
    spans = []
    for i, (t, v) in enumerate(zip(tokens, values)):
        n = abs(v) / peak if peak > 0 else 0.0
        rgb = "214,39,40" if v >= 0 else "31,119,180"
        spans.append(f"<span {attribute}='{n:.4f}' style='background:rgba({rgb},{n:.3f})' title='{v:.6g}'>"
                     f"<i>{i}</i>{html.escape(t)}</span>")
    return "".join(spans)


def _saliency_html(report: Report) -> str:
    sal, ig = report.saliency, report.integrated_gradients
    if not sal:
        return ""
    esc = html.escape
    tokens = report.tokens["input"]
    out = [f"<h2>Input saliency</h2><p>How much each input token's embedding contributes to the logit of the "
           f"predicted next token <span class='pred'>{esc(sal['target_token'])}</span>, shaded relative to the "
           "largest |value|: red raises the logit, blue lowers it; hover for the value.</p>",
           "<h3>Gradient × input</h3>",
           f"<div class='toks sal' data-method='grad_x_input'>{_shaded_tokens(tokens, sal['values'], 'data-saliency')}"
           "</div>", _json_script("saliency-data", sal)]
    if ig:
        out += [f"<h3>Integrated gradients ({ig['steps']} steps from zero token embeddings)</h3>"
                f"<p>The values add up to {sum(ig['values']):.5g}; the logit goes from "
                f"{ig['baseline_logit']:.5g} (baseline) to {ig['input_logit']:.5g} (input), a difference of "
                f"{ig['input_logit'] - ig['baseline_logit']:.5g} (completeness).</p>",
                f"<div class='toks sal' data-method='integrated_gradients'>"
                f"{_shaded_tokens(tokens, ig['values'], 'data-ig')}</div>",
                _json_script("integrated-gradients-data", ig)]
    return "".join(out)


def _neurons_html(report: Report) -> str:
    info = report.neurons
    if not info:
        return ""
    esc = html.escape
    tokens = report.tokens["input"]
    rows = []
    for n in info.top:
        best = ", ".join(f"{esc(t['token'])} ({t['activation']:.3g} at {t['position']})" for t in n["top_tokens"])
        rows.append(f"<tr data-neuron='{n['neuron']}'><td>{n['neuron']}</td><td>{n['max']:.4g}</td>"
                    f"<td class='tok'>{best}</td><td><div class='toks sal'>"
                    f"{_shaded_tokens(tokens, n['values'], 'data-activation')}</div></td></tr>")
    where = f"{info.stack} layer" if info.stack else "layer"
    return (f"<h2>Feed-forward neurons, {where} {info.layer}</h2><p>The {len(info.top)} of "
            f"{info.d_ff} neurons with the highest activation (after the nonlinearity) over the input, "
            "highest first; each token shaded by the neuron's activation there (red positive, blue negative, "
            "relative to the neuron's largest |activation|).</p>"
            "<table id='neurons'><tr><th>neuron</th><th>max</th><th>tokens that excite it most</th>"
            f"<th>activation per token</th></tr>{''.join(rows)}</table>" + _json_script("neurons-data", info.to_dict()))


def patch_maps(entry: AttentionModule, grid: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A cross-attention entry over an image memory ([CLS] + rows·cols patches, row by row) ->
    (q_len, rows, cols) the attention over the patch grid, mean over the captured heads, and
    (q_len,) the mean weight on [CLS]."""
    rows, cols = grid
    mean = entry.weights.mean(0)                                       # (q_len, 1 + rows·cols)
    return mean[:, 1:].reshape(-1, rows, cols), mean[:, 0]


def _patch_map_svg(cells: torch.Tensor) -> str:
    """(rows, cols) -> a small SVG heatmap, white -> dark blue relative to its own maximum."""
    rows, cols = cells.shape
    size = max(8, min(24, 160 // max(rows, cols)))
    vmax = float(cells.max())
    rects = "".join(f'<rect x="{c * size}" y="{r * size}" width="{size}" height="{size}" '
                    f'fill="{_color(v, vmax)}"><title>patch {r},{c}: {v:.4f}</title></rect>'
                    for r, line in enumerate(cells.tolist()) for c, v in enumerate(line))
    return f'<svg width="{cols * size}" height="{rows * size}" style="border:1px solid #ccc">{rects}</svg>'


def _patch_maps_html(report: Report) -> str:
    grid = report.patch_grid
    cross = [m for m in report.attention if m.kind == "cross"]
    if not grid or not cross:
        return ""
    esc = html.escape
    parts, data = [], {}
    for m in cross:
        maps, cls = patch_maps(m, grid)
        cells = "".join(f"<figure data-patch-map='{i}'>{_patch_map_svg(maps[i])}<figcaption><span class='tok'>"
                        f"{esc(t)}</span><br>[CLS] {float(cls[i]):.3f}</figcaption></figure>"
                        for i, t in enumerate(m.q_tokens))
        parts.append(f"<div data-patch-maps='{esc(m.name)}'><h3>{esc(m.name)}</h3>"
                     f"<div class='maps'>{cells}</div></div>")
        data[m.name] = {"tokens": m.q_tokens, "grid": list(grid), "heads": m.heads,
                           "cls": [round(v, 7) for v in cls.tolist()],
                           "maps": [[[round(v, 7) for v in row] for row in tm] for tm in maps.tolist()]}
    return ("<h2>Where each caption token looks in the image</h2><p>For each decoder input token (the "
            "next token is predicted from it), its cross-attention over the patch grid, mean over heads; each "
            "map is shaded relative to its own largest weight, and the weight on [CLS] is given below it.</p>"
            + "".join(parts) + _json_script("patch-maps-data", data))


def render_html(report: Report) -> str:
    """The page as a string (see :func:`write_html`)."""
    esc = html.escape
    tokens = report.tokens
    token_rows = []
    for key, label in (("source", "Source tokens"), ("patches", "Image patches (encoder inputs)"),
                       ("target", "Target tokens (decoder inputs)")):
        if key in tokens:
            token_rows.append((label, tokens[key]))
    if not token_rows:
        token_rows.append(("As the model saw them", tokens["input"]))
    token_html = "".join(
        f"<h3>{esc(label)} ({len(toks)})</h3><div class='toks'>"
        + "".join(f"<span><i>{i}</i>{esc(t)}</span>" for i, t in enumerate(toks)) + "</div>"
        for label, toks in token_rows)

    grids, alignments = [], []
    blocked = [_blocked(m) for m in report.attention]
    for mi, (m, (cells, rows, cols)) in enumerate(zip(report.attention, blocked)):
        for hi, h in enumerate(m.heads):
            svg = "<svg></svg>"            # drawn by the page's script from the embedded data when shown
            grids.append(f"<div class='grid' data-grid data-module='{esc(m.name)}' data-module-index='{mi}' "
                         f"data-layer='{m.layer}' data-head='{h}' data-head-index='{hi}' data-kind='{m.kind}'>"
                         f"<p>{esc(m.name)} — head {h}</p>{svg}</div>")
        if m.kind == "cross":          # any model with cross-attention: translators, caption models
            svg = _heatmap_svg(cells.mean(0), rows, cols)
            axes = ("rows: caption tokens, columns: [CLS] and image patches" if "patches" in tokens
                    else "rows: target, columns: source")
            alignments.append(f"<div data-alignment='{esc(m.name)}'><h3>{esc(m.name)} "
                              f"(mean over {len(m.heads)} heads; {axes})</h3>{svg}</div>")
    averaged = any(m.weights.shape[-2:] != cells.shape[-2:] for m, (cells, _, _) in zip(report.attention, blocked))
    note = (f"<p>The input is longer than {MAX_CELLS} tokens: grids show means over blocks of consecutive "
            "positions.</p>") if averaged else ""
    data = json.dumps(_json_data(report, blocked), ensure_ascii=False).replace("</", "<\\/")
    align_html = ("<h2>Cross-attention alignment</h2>" + "".join(alignments)) if alignments else ""
    return TEMPLATE.substitute(
        family=esc(report.family), text=esc(report.text), tokens=token_html, prediction=_prediction_html(report),
        lens=_lens_html(report), saliency=_saliency_html(report), neurons=_neurons_html(report), note=note,
        grids="".join(grids), alignment=align_html, patch_maps=_patch_maps_html(report), data=data)


def write_html(report: Report, path: str | Path) -> Path:
    """Write the page to ``path`` atomically (a temporary file in the same folder, then ``os.replace``)."""
    return write_text_atomically(Path(path), render_html(report))


def write_pngs(report: Report, folder: str | Path) -> list[Path]:
    """One PNG per attention module (all its heads) into ``folder``, named by the module path
    (``decoder.layers.0.self_attention.png``); for a caption model also one per cross-attention
    module of the patch-grid maps (``decoder.layers.0.cross_attention.patches.png``); with neurons,
    ``neurons.layer{L}.png`` (tokens × top neurons); for a GPT ``logit_lens.png`` and ``saliency.png``
    (gradient × input and integrated gradients).  Written with :func:`save_figure`."""
    from .figures import (attention_grid_figure, logit_lens_figure, neuron_activation_figure, patch_attention_figure,
                          saliency_figure, save_figure)

    folder = Path(folder)
    written = []
    for m in report.attention:
        fig = attention_grid_figure(m.weights, m.q_tokens, m.k_tokens, title=m.name,
                                    head_names=[f"head {h}" for h in m.heads])
        written.append(save_figure(fig, folder / f"{m.name}.png"))
        if m.kind == "cross" and report.patch_grid:
            maps, cls = patch_maps(m, report.patch_grid)
            names = [f"{t} ([CLS] {c:.2f})" for t, c in zip(m.q_tokens, cls.tolist())]
            fig = patch_attention_figure(maps, names, title=f"{m.name}: mean over heads, per caption token")
            written.append(save_figure(fig, folder / f"{m.name}.patches.png"))
    tokens = report.tokens["input"]
    lens = report.logit_lens
    if lens:
        fig = logit_lens_figure([[c["probability"] for c in r["top1"]] for r in lens],
                                [[c["token"] for c in r["top1"]] for r in lens], [r["layer"] for r in lens], tokens,
                                title="logit lens: each layer's top-1 next token")
        written.append(save_figure(fig, folder / "logit_lens.png"))
    attributions = {name: entry["values"] for entry, name in ((report.saliency, "gradient × input"),
                                                              (report.integrated_gradients, "integrated gradients"))
                    if entry}
    if attributions:
        target = report.saliency["target_token"] if report.saliency else ""
        fig = saliency_figure(attributions, tokens, title=f"input saliency for the next token {target!r}")
        written.append(save_figure(fig, folder / "saliency.png"))
    info = report.neurons
    if info:
        acts = torch.tensor([n["values"] for n in info.top]).T                 # (seq, top neurons)
        fig = neuron_activation_figure(acts, tokens, [n["neuron"] for n in info.top],
                                       title=f"feed-forward layer {info.layer}: top neurons")
        written.append(save_figure(fig, folder / f"neurons.layer{info.layer}.png"))
    return written
