"""One self-contained HTML page that explains what a model did with one input (issue 12).

::

    from glassformer.explain.report import explain, write_html, write_pngs
    report = explain("runs/gpt/best", "ROMEO:")           # a model directory or a loaded ModelDir
    write_html(report, "report.html")                     # inline CSS/JS/SVG only: opens offline
    write_pngs(report, "pngs/")                           # one PNG per attention module (all heads)

:func:`explain` runs the model once, normally, under
:func:`~glassformer.explain.attention.capture_attention` and returns a dict:

* ``family``: "gpt" | "transformer" | "bert" | "vit";
* ``tokens``: the token strings as the model saw them (``"input"``; for a translator also
  ``"source"`` and ``"target"`` — the decoder's inputs, start token first);
* ``prediction``: GPT: the greedy continuation and the next-token top-5; translator: the
  translation (given with ``target`` or the model's greedy one); BERT: fill-mask top-5 at each
  [MASK] (a model with an MLM head and a text with a mask), else None;
* ``attention``: one entry per captured attention module, in model order: ``name`` (module path),
  ``kind`` ("self" / "cross"), ``layer`` (index), ``heads`` (head indices), ``q_tokens`` /
  ``k_tokens`` and ``weights`` (heads, q_len, k_len) float32 tensor.

The page draws each (module, head) as an SVG heatmap (inputs of more than 64 tokens averaged over
blocks of positions: at most 64×64 cells), a head view (lines between tokens whose opacity is the
weight, drawn by inline JS from the embedded JSON) and, for translators, the cross-attention
alignment (target × source, mean over heads).

GPT reports also hold ``logit_lens`` (one row per layer, embedding first: the top-1 token and
probability at each position, from :func:`~glassformer.explain.lens.logit_lens`) and ``saliency``
(grad × input attribution of the predicted next token per input token, raw ``values`` and
|value| / max ``normalised``); the page shows a lens table and shaded tokens, and embeds the
saliency as JSON (``id="saliency-data"``).

ViT: ``text`` is an image path (loaded with :func:`~glassformer.data.images.load_image`); the tokens
are "[CLS]" and "patch r,c"; the prediction is ``classes_top5``.  Captioning models are not
supported yet.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import InputError
from ..files import write_text_atomically
from .attention import capture_attention
from .figures import MAX_CELLS, block_average

__all__ = ["explain", "write_html", "write_pngs"]

TOP_K = 5


def _token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    out = []
    for i in ids:
        t = tokenizer.id_to_token(int(i)) if tokenizer is not None else None
        out.append(t if t is not None else f"#{int(i)}")
    return out


def _layer_index(name: str) -> int:
    m = re.search(r"layers\.(\d+)", name)
    return int(m.group(1)) if m else 0


def _top(probs: torch.Tensor, tokenizer, k: int = TOP_K) -> list[dict]:
    top = probs.float().topk(min(k, probs.shape[-1]))
    return [{"token": _token_strings(tokenizer, [i])[0], "id": int(i), "probability": float(p)}
            for p, i in zip(top.values.tolist(), top.indices.tolist())]


def _load(model_dir_or_loaded):
    if isinstance(model_dir_or_loaded, (str, os.PathLike)):
        from ..model_dir import load_model_dir

        return load_model_dir(model_dir_or_loaded)
    return model_dir_or_loaded


@torch.no_grad()
def explain(model_dir_or_loaded, text: str, target: str | None = None, *, layers=None, heads=None,
            max_new_tokens: int = 8) -> dict[str, Any]:
    """Run the model of a model directory (a path or a loaded ``ModelDir``) on ``text`` under
    :func:`capture_attention` and gather tokens, prediction and attention (see the module doc).
    ``layers`` / ``heads``: as :func:`capture_attention` (out-of-range indices: ``InputError``).
    ``target``: for a translator, the target to explain (default: its greedy translation)."""
    loaded = _load(model_dir_or_loaded)
    family = loaded.config.family
    if family == "caption":
        raise InputError(f"explain does not support captioning image models yet (this is a {family!r} model); "
                         "it explains GPT, translation, BERT and ViT models")
    if family not in ("gpt", "transformer", "bert", "vit"):
        raise InputError(f"explain does not support {family!r} models; "
                         "it explains GPT, translation, BERT and ViT models")
    model = loaded.model.eval()
    if family == "vit":
        report = _explain_vit(loaded, model, text, layers, heads)
        report.update(family=family, text=str(text))
        return report
    if loaded.tokenizer is None:
        raise InputError("the model directory has no tokenizer.json; explain needs the tokenizer to show the tokens")
    device = next(model.parameters()).device
    runner = {"gpt": _explain_gpt, "transformer": _explain_translation, "bert": _explain_bert}[family]
    report = runner(loaded, model, text, target, layers, heads, max_new_tokens, device)
    report.update(family=family, text=text)
    return report


def _modules(capture, q_k_tokens) -> list[dict]:
    out = []
    for name, w in capture.weights.items():
        kind = capture.kinds[name]
        q_tokens, k_tokens = q_k_tokens(name, kind)
        n_heads = w.shape[1]
        out.append({"name": name, "kind": kind, "layer": _layer_index(name),
                    "heads": list(capture.heads) if capture.heads is not None else list(range(n_heads)),
                    "q_tokens": q_tokens, "k_tokens": k_tokens, "weights": w[0].float()})
    return out


def _explain_gpt(loaded, model, text, target, layers, heads, max_new_tokens, device) -> dict:
    from ..generation.sampling import SamplingOptions
    from ..generation.text import complete_batch

    tok = loaded.tokenizer
    ids = tok.encode(text) if text else []
    if not ids:
        raise InputError("the text tokenizes to nothing; give a prompt with at least one token")
    context = model.config.max_len
    if len(ids) > context:
        raise InputError(f"the text has {len(ids)} tokens; the model's context is {context}")
    tokens = _token_strings(tok, ids)
    new = max(0, min(max_new_tokens, context - len(ids)))
    with capture_attention(model, layers, heads) as cap:     # checks layers / heads before any work
        logits = model(torch.tensor([ids], device=device))
    next_top = _top(torch.softmax(logits[0, -1, : model.config.vocab_size].float(), -1), tok)
    continuation = complete_batch(model, tok, [ids], SamplingOptions(max_new_tokens=new, temperature=0.0))[0] \
        if new else ""
    return {"tokens": {"input": tokens},
            "prediction": {"continuation": continuation, "next_token_top5": next_top},
            "attention": _modules(cap, lambda name, kind: (tokens, tokens)),
            **_lens_and_saliency(model, tok, ids, next_top[0]["id"])}


def _lens_and_saliency(model, tok, ids, predicted: int) -> dict:
    """GPT: the logit lens (top-1 token and probability per layer and position) and the
    grad × input saliency of the predicted next token.  Empty for models without the hooks."""
    from .lens import logit_lens, saliency

    if not (hasattr(model, "output_weight") and hasattr(model, "hidden_states") and hasattr(model, "embed")):
        return {}
    vocab = model.config.vocab_size
    lens = torch.softmax(logit_lens(model, ids)[..., :vocab], -1)           # (layers + 1, seq, vocab)
    top = lens.max(-1)
    names = ["embed"] + [f"layer {i}" for i in range(lens.shape[0] - 1)]
    rows = [{"layer": names[r],
             "top1": [{"token": _token_strings(tok, [i])[0], "id": int(i), "probability": float(p)}
                      for p, i in zip(top.values[r].tolist(), top.indices[r].tolist())]}
            for r in range(lens.shape[0])]
    with torch.enable_grad():
        sal = saliency(model, ids, len(ids) - 1, predicted, method="grad_x_input")
    values = [float(v) for v in sal.tolist()]
    peak = max((abs(v) for v in values), default=0.0)
    normalised = [abs(v) / peak if peak > 0 else 0.0 for v in values]
    return {"logit_lens": rows,
            "saliency": {"method": "grad_x_input", "target_position": len(ids) - 1,
                         "target_token": _token_strings(tok, [predicted])[0], "target_id": int(predicted),
                         "values": values, "normalised": normalised}}


def _explain_vit(loaded, model, image_path, layers, heads) -> dict:
    from ..data.images import load_image

    config = model.config
    image = load_image(image_path, config.channels, config.image_size)
    grid = config.image_size // config.patch_size
    tokens = ["[CLS]"] + [f"patch {r},{c}" for r in range(grid) for c in range(grid)]
    device = next(model.parameters()).device
    with capture_attention(model, layers, heads) as cap:
        logits = model(image[None].to(device))
    probs = torch.softmax(logits[0].float(), -1)
    top = probs.topk(min(TOP_K, probs.shape[-1]))
    names = config.class_names
    classes = [{"token": names[int(i)], "id": int(i), "probability": float(p)}
               for p, i in zip(top.values.tolist(), top.indices.tolist())]
    return {"tokens": {"input": tokens}, "prediction": {"classes_top5": classes},
            "attention": _modules(cap, lambda name, kind: (tokens, tokens))}


def _explain_translation(loaded, model, text, target, layers, heads, max_new_tokens, device) -> dict:
    from ..generation.translation import translate

    config = model.config
    src_tok, tgt_tok = loaded.src_tokenizer, loaded.tokenizer
    src_ids = src_tok.encode(text) if text.strip() else []
    if not src_ids:
        raise InputError("the text tokenizes to nothing; give a source sentence with at least one token")
    src_ids = src_ids + [config.eos_id]
    if len(src_ids) > config.max_len:
        raise InputError(f"the source has {len(src_ids)} tokens but the model takes at most {config.max_len}")
    with capture_attention(model, layers, heads):            # validate --layers / --heads first
        pass
    given = target is not None
    if target is None:
        target = translate(model, src_tok, tgt_tok, [text])[0]
    tgt_ids = [config.start_id] + (tgt_tok.encode(target) if target else [])
    tgt_ids = tgt_ids[: config.max_len]
    src_tokens, tgt_tokens = _token_strings(src_tok, src_ids), _token_strings(tgt_tok, tgt_ids)
    with capture_attention(model, layers, heads) as cap:
        logits = model(torch.tensor([src_ids], device=device), torch.tensor([tgt_ids], device=device))
    next_top = _top(torch.softmax(logits[0, -1].float(), -1), tgt_tok)

    def q_k(name, kind):
        if name.startswith("encoder"):
            return src_tokens, src_tokens
        return (tgt_tokens, src_tokens) if kind == "cross" else (tgt_tokens, tgt_tokens)

    return {"tokens": {"input": src_tokens, "source": src_tokens, "target": tgt_tokens},
            "prediction": {"translation": target, "target_given": given, "next_token_top5": next_top},
            "attention": _modules(cap, q_k)}


def _explain_bert(loaded, model, text, target, layers, heads, max_new_tokens, device) -> dict:
    tok = loaded.tokenizer
    config = model.config
    mask_token = tok.id_to_token(tok.mask_id) if tok.mask_id is not None else None
    if config.head == "mlm" and mask_token and mask_token in text:
        from ..cli.mlm import mask_ids

        ids, positions = mask_ids(tok, text, config.max_len, False)
    else:
        ids = tok.encode_sentences([text])[0][0] if text.strip() else []
        positions = []
    specials = {tok.bos_id, tok.eos_id, tok.pad_id}
    if not [i for i in ids if i not in specials]:
        raise InputError("the text tokenizes to nothing; give a text with at least one token")
    if len(ids) > config.max_len:
        raise InputError(f"the text has {len(ids)} tokens but the model takes at most {config.max_len}")
    tokens = _token_strings(tok, ids)
    with capture_attention(model, layers, heads) as cap:
        hidden = model.encode(torch.tensor([ids], device=device)).hidden
    prediction = None
    if config.head == "mlm" and positions:
        probs = torch.softmax(model.mlm_logits(hidden[0, positions]).float(), -1)
        prediction = {"masks": [{"position": p, "top5": _top(pr, tok)} for p, pr in zip(positions, probs)]}
    return {"tokens": {"input": tokens}, "prediction": prediction,
            "attention": _modules(cap, lambda name, kind: (tokens, tokens))}


# -- the page ------------------------------------------------------------------------------------
def _blocked(entry: dict) -> tuple[torch.Tensor, list[str], list[str]]:
    """(heads, ≤64, ≤64) cells and the row / column labels (tokens, or position ranges of blocks)."""
    cells, rows, cols = block_average(entry["weights"], MAX_CELLS)

    def labels(blocks, tokens):
        return [tokens[a] if b - a == 1 else f"{a}–{b - 1}" for a, b in blocks]

    return cells, labels(rows, entry["q_tokens"]), labels(cols, entry["k_tokens"])


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


def _json_data(report: dict) -> dict:
    modules = []
    for m in report["attention"]:
        cells, rows, cols = _blocked(m)
        modules.append({"name": m["name"], "kind": m["kind"], "layer": m["layer"], "heads": m["heads"],
                        "q_labels": rows, "k_labels": cols,
                        "blocked": cells.shape[-2:] != m["weights"].shape[-2:],
                        "weights": [[[round(v, 7) for v in row] for row in head] for head in cells.tolist()]})
    return {"family": report["family"], "tokens": report["tokens"], "modules": modules}


def _prediction_html(report: dict) -> str:
    p = report.get("prediction")
    if not p:
        if report["family"] == "bert":
            return "<p>No prediction: the model has no masked-LM head, or the text has no [MASK].</p>"
        return "<p>No prediction.</p>"

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
    if "next_token_top5" in p:
        out.append("<p>Next token, top 5:</p>" + top_table(p["next_token_top5"]))
    for m in p.get("masks", []):
        out.append(f"<p>[MASK] at position {m['position']}, top 5:</p>" + top_table(m["top5"]))
    if "classes_top5" in p:
        rows = "".join(f"<tr data-class='{html.escape(c['token'])}'><td class='tok'>{html.escape(c['token'])}</td>"
                       f"<td>{c['probability']:.4f}</td></tr>" for c in p["classes_top5"])
        out.append(f"<p>Classes, top {len(p['classes_top5'])}:</p>"
                   f"<table id='classes'><tr><th>class</th><th>probability</th></tr>{rows}</table>")
    return "".join(out)


def _lens_html(report: dict) -> str:
    rows = report.get("logit_lens")
    if not rows:
        return ""
    esc = html.escape
    tokens = report["tokens"]["input"]
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


def _saliency_html(report: dict) -> str:
    sal = report.get("saliency")
    if not sal:
        return ""
    esc = html.escape
    spans = "".join(
        f"<span data-saliency='{n:.4f}' style='background:rgba(214,39,40,{n:.3f})' title='{v:.6g}'>"
        f"<i>{i}</i>{esc(t)}</span>"
        for i, (t, v, n) in enumerate(zip(report["tokens"]["input"], sal["values"], sal["normalised"])))
    data = json.dumps(sal, ensure_ascii=False).replace("</", "<\\/")
    return (f"<h2>Input saliency</h2><p>|gradient × input| of the logit of the predicted next token "
            f"<span class='pred'>{esc(sal['target_token'])}</span>, normalised to the largest: darker = more.</p>"
            f"<div class='toks sal'>{spans}</div>"
            f'<script type="application/json" id="saliency-data">{data}</script>')


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.toks span{display:inline-block;border:1px solid #ccc;border-radius:3px;padding:1px 4px;margin:2px;
font-family:monospace;background:#f7f7f7}
.toks.sal span{background:none}
.toks span i{color:#999;font-size:70%;margin-right:3px;font-style:normal}
.pred{font-family:monospace;background:#eef;padding:1px 4px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 8px}.tok{font-family:monospace}
.grid{display:none}.grid.on{display:block}
select{margin-right:1em}#headview text{font-family:monospace;font-size:11px}
"""

_JS = """
(function(){
var data=JSON.parse(document.getElementById('attention-data').textContent);
var modSel=document.getElementById('sel-module'),headSel=document.getElementById('sel-head');
data.modules.forEach(function(m,i){var o=document.createElement('option');o.value=i;
o.textContent=m.name+' ('+m.kind+', layer '+m.layer+')';modSel.appendChild(o);});
function fillHeads(){var m=data.modules[modSel.value];headSel.innerHTML='';
m.heads.forEach(function(h,i){var o=document.createElement('option');o.value=i;o.textContent='head '+h;headSel.appendChild(o);});}
function show(){var mi=+modSel.value,hi=+headSel.value;
document.querySelectorAll('.grid').forEach(function(g){
g.classList.toggle('on',+g.dataset.moduleIndex===mi&&+g.dataset.headIndex===hi);});
headView(data.modules[mi],hi);}
function headView(m,hi){var svg=document.getElementById('headview'),NS='http://www.w3.org/2000/svg';
while(svg.firstChild)svg.removeChild(svg.firstChild);
var w=m.weights[hi],q=m.q_labels,k=m.k_labels,row=16,lx=150,rx=450,top=20;
var n=Math.max(q.length,k.length);svg.setAttribute('height',top+n*row+10);
var mx=0;w.forEach(function(r){r.forEach(function(v){if(v>mx)mx=v;});});
for(var i=0;i<q.length;i++)for(var j=0;j<k.length;j++){var v=w[i][j];if(v<=0)continue;
var l=document.createElementNS(NS,'line');l.setAttribute('x1',lx+5);l.setAttribute('y1',top+i*row-4);
l.setAttribute('x2',rx-5);l.setAttribute('y2',top+j*row-4);l.setAttribute('stroke','#2a5db0');
l.setAttribute('stroke-width',2);l.setAttribute('stroke-opacity',v.toFixed(4));
l.setAttribute('data-q',i);l.setAttribute('data-k',j);svg.appendChild(l);}
function label(x,y,t,anchor,side,idx){var e=document.createElementNS(NS,'text');e.setAttribute('x',x);
e.setAttribute('y',y);e.setAttribute('text-anchor',anchor);e.textContent=t;e.style.cursor='pointer';
e.addEventListener('mouseenter',function(){svg.querySelectorAll('line').forEach(function(l){
l.style.display=(l.getAttribute(side)==String(idx))?'':'none';});});
e.addEventListener('mouseleave',function(){svg.querySelectorAll('line').forEach(function(l){l.style.display='';});});
svg.appendChild(e);}
q.forEach(function(t,i){label(lx,top+i*row,t,'end','data-q',i);});
k.forEach(function(t,j){label(rx,top+j*row,t,'start','data-k',j);});}
modSel.addEventListener('change',function(){fillHeads();show();});
headSel.addEventListener('change',show);
if(data.modules.length){fillHeads();show();}
})();
"""


def render_html(report: dict) -> str:
    """The page as a string (see :func:`write_html`)."""
    esc = html.escape
    tokens = report["tokens"]
    token_rows = []
    for key, label in (("source", "Source tokens"), ("target", "Target tokens (decoder inputs)")):
        if key in tokens:
            token_rows.append((label, tokens[key]))
    if not token_rows:
        token_rows.append(("Tokens", tokens["input"]))
    token_html = "".join(
        f"<h3>{esc(label)} ({len(toks)})</h3><div class='toks'>"
        + "".join(f"<span><i>{i}</i>{esc(t)}</span>" for i, t in enumerate(toks)) + "</div>"
        for label, toks in token_rows)

    grids, alignments = [], []
    for mi, m in enumerate(report["attention"]):
        cells, rows, cols = _blocked(m)
        for hi, h in enumerate(m["heads"]):
            svg = _heatmap_svg(cells[hi], rows, cols)
            grids.append(f"<div class='grid' data-grid data-module='{esc(m['name'])}' data-module-index='{mi}' "
                         f"data-layer='{m['layer']}' data-head='{h}' data-head-index='{hi}' data-kind='{m['kind']}'>"
                         f"<p>{esc(m['name'])} — head {h}</p>{svg}</div>")
        if m["kind"] == "cross":
            svg = _heatmap_svg(cells.mean(0), rows, cols)
            alignments.append(f"<div data-alignment='{esc(m['name'])}'><h3>{esc(m['name'])} "
                              f"(mean over {len(m['heads'])} heads; rows: target, columns: source)</h3>{svg}</div>")
    blocked = any(tuple(m["weights"].shape[-2:]) != tuple(_blocked(m)[0].shape[-2:]) for m in report["attention"])
    note = (f"<p>The input is longer than {MAX_CELLS} tokens: grids show means over blocks of consecutive "
            "positions.</p>") if blocked else ""
    data = json.dumps(_json_data(report), ensure_ascii=False).replace("</", "<\\/")
    align_html = ("<h2>Cross-attention alignment</h2>" + "".join(alignments)) if alignments else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>glassformer explain</title>
<style>{_CSS}</style></head><body>
<h1>glassformer explain — {esc(report['family'])} model</h1>
<p>Input: <span class="pred">{esc(report.get('text', ''))}</span></p>
<h2>Tokens</h2>{token_html}
<h2>Prediction</h2>{_prediction_html(report)}
{_lens_html(report)}
{_saliency_html(report)}
<h2>Attention</h2>{note}
<p><label>Module <select id="sel-module"></select></label><label>Head <select id="sel-head"></select></label></p>
<div id="grids">{''.join(grids)}</div>
<h2>Head view</h2><p>Lines from each query token (left) to each key token (right); opacity = attention weight.
Hover a token to see only its lines.</p>
<svg id="headview" width="620" height="100"></svg>
{align_html}
<script type="application/json" id="attention-data">{data}</script>
<script>{_JS}</script>
</body></html>
"""


def write_html(report: dict, path: str | Path) -> Path:
    """Write the page to ``path`` atomically (a temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    page = render_html(report)
    return write_text_atomically(path, page)


def write_pngs(report: dict, folder: str | Path) -> list[Path]:
    """One PNG per attention module (all its heads) into ``folder``, named by the module path
    (``decoder.layers.0.self_attention.png``); written with :func:`save_figure`."""
    from .figures import attention_grid_figure, save_figure

    folder = Path(folder)
    written = []
    for m in report["attention"]:
        fig = attention_grid_figure(m["weights"], m["q_tokens"], m["k_tokens"], title=m["name"],
                                    head_names=[f"head {h}" for h in m["heads"]])
        written.append(save_figure(fig, folder / f"{m['name']}.png"))
    return written
