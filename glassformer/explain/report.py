"""One self-contained HTML page that explains what a model did with one input (issue 12).

::

    from glassformer.explain.report import explain, write_html, write_pngs
    report = explain("runs/gpt/best", "ROMEO:")           # a model directory or a loaded ModelDir
    write_html(report, "report.html")                     # inline CSS/JS/SVG only: opens offline
    write_pngs(report, "pngs/")                           # one PNG per attention module (all heads)

:func:`explain` runs the model once, normally, under
:func:`~glassformer.explain.attention.capture_attention` and returns a dict:

* ``family``: "gpt" | "transformer" | "bert" | "vit" | "caption";
* ``tokens``: the token strings as the model saw them (``"input"``; for a translator also
  ``"source"`` and ``"target"`` — the decoder's inputs, start token first; for a caption model
  ``"patches"`` — the encoder's inputs, as ``"input"`` — and ``"target"``);
* ``prediction``: GPT: the greedy continuation and the next-token top-5; translator: the
  translation (given with ``target`` or the model's greedy one); BERT: fill-mask top-5 at each
  [MASK] (a model with an MLM head and a text with a mask), else None; caption model: the caption
  (given with ``target`` or the model's greedy one) and the next-token top-5;
* ``attention``: one entry per captured attention module, in model order: ``name`` (module path),
  ``kind`` ("self" / "cross"), ``layer`` (index), ``heads`` (head indices), ``q_tokens`` /
  ``k_tokens`` and ``weights`` (heads, q_len, k_len) float32 tensor.

The page draws each (module, head) as an SVG heatmap (inputs of more than 64 tokens averaged over
blocks of positions: at most 64×64 cells), a head view (lines between tokens whose opacity is the
weight, drawn by inline JS from the embedded JSON) and, for every model with cross-attention
(translators, caption models), the cross-attention alignment (target × source, mean over heads).

GPT reports also hold ``logit_lens`` (one row per layer, embedding first: the top-1 token and
probability at each position, from :func:`~glassformer.explain.lens.logit_lens`), ``saliency``
(grad × input attribution of the predicted next token per input token, raw ``values`` and
|value| / max ``normalised``) and ``integrated_gradients`` (the same for integrated gradients with
``saliency_steps`` points, plus ``input_logit`` and ``baseline_logit``, the logits at the two ends
of its path: the values add up to their difference); the page shows a lens table and one row of
shaded tokens per method, and embeds them as JSON (``id="saliency-data"``,
``id="integrated-gradients-data"``).

ViT: ``text`` is an image path (loaded with :func:`~glassformer.data.images.load_image`); the tokens
are "[CLS]" and "patch r,c"; the prediction is ``classes_top5``.

Caption models: ``text`` is an image path (loaded with :func:`~glassformer.data.captions.load_strip`,
so a narrower strip is padded on the right as the ``caption`` command does); the encoder's tokens
are "[CLS]" and "patch r,c" (the memory the decoder cross-attends to: 1 + rows·cols); ``target``
is the caption to explain (default: the greedy caption of
:func:`~glassformer.training.caption.caption_images`), fed to the decoder after its start token.
``patch_grid`` = [rows, cols]; the page adds, per cross-attention module and caption token, the
attention over the patch grid (mean over heads, [CLS] left out and shown as a number), also as
JSON (``id="patch-maps-data"``).

With ``neurons=LAYER`` (GPT, BERT, ViT; a translator's encoder, over the source), ``neurons`` holds that layer's feed-forward activations
(after the nonlinearity, :func:`~glassformer.explain.lens.neuron_activations`): ``layer``,
``d_ff`` and ``top``, the ``TOP_NEURONS`` neurons with the highest activation over the input
(highest first), each with ``neuron``, ``max``, ``values`` (one per token) and ``top_tokens`` (the
positions that excite it most); the page shades the tokens per neuron and embeds them as JSON
(``id="neurons-data"``).
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
from .figures import MAX_CELLS, block_average, range_labels

__all__ = ["explain", "patch_maps", "render_html", "write_html", "write_pngs"]

TOP_K = 5
TOP_NEURONS = 8
NEURON_FAMILIES = ("gpt", "bert", "vit", "transformer")


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
            max_new_tokens: int = 8, saliency_steps: int = 32, neurons: int | None = None) -> dict[str, Any]:
    """Run the model of a model directory (a path or a loaded ``ModelDir``) on ``text`` under
    :func:`capture_attention` and gather tokens, prediction and attention (see the module doc).
    ``layers`` / ``heads``: as :func:`capture_attention` (out-of-range indices: ``InputError``).
    ``target``: for a translator or a caption model, the target to explain (default: its greedy
    output).  ``saliency_steps``: GPT, the points of integrated gradients.  ``neurons``: GPT, BERT
    and ViT, a feed-forward layer whose most active neurons the report shows."""
    loaded = _load(model_dir_or_loaded)
    family = loaded.config.family
    if family not in ("gpt", "transformer", "bert", "vit", "caption"):
        raise InputError(f"explain does not support {family!r} models; "
                         "it explains GPT, translation, BERT, ViT and caption models")
    if isinstance(saliency_steps, bool) or not isinstance(saliency_steps, int) or saliency_steps < 1:
        raise InputError(f"saliency steps must be a positive number, got {saliency_steps!r}")
    model = loaded.model.eval()
    if neurons is not None:
        _check_neuron_layer(model, family, neurons)
    if family == "vit":
        report = _explain_vit(loaded, model, text, layers, heads, neurons)
        report.update(family=family, text=str(text))
        return report
    if loaded.tokenizer is None:
        raise InputError("the model directory has no tokenizer.json; explain needs the tokenizer to show the tokens")
    device = next(model.parameters()).device
    if family == "caption":
        report = _explain_caption(loaded, model, text, target, layers, heads, device)
        report.update(family=family, text=str(text))
        return report
    runner = {"gpt": _explain_gpt, "transformer": _explain_translation, "bert": _explain_bert}[family]
    report = runner(loaded, model, text, target, layers, heads, max_new_tokens, device,
                    saliency_steps=saliency_steps, neurons=neurons)
    report.update(family=family, text=text)
    return report


# -- feed-forward neurons ------------------------------------------------------------------------
def _ffn_layers(model, family: str):
    """The layers whose feed-forward --neurons reads: the one stack of a GPT, BERT or ViT, a
    translator's encoder (the stack over the text the user gave)."""
    return model.decoder.layers if family == "gpt" else model.encoder.layers


def _check_neuron_layer(model, family: str, layer) -> None:
    if family not in NEURON_FAMILIES:
        raise InputError(f"--neurons works for GPT, BERT, ViT and translation models (a translator's encoder), "
                         f"not {family!r} models")
    n = len(_ffn_layers(model, family))
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise InputError(f"feed-forward layer {layer} does not exist; the model has {n} layers, "
                         f"so --neurons takes 0..{n - 1}")


def _neuron_report(acts: torch.Tensor, tokens: list[str], layer: int, k: int = TOP_NEURONS) -> dict:
    """acts (seq, d_ff) -> the ``k`` neurons with the highest activation over the input, highest first
    (ties: lower index first), each with its activation per token and its top positions."""
    from .lens import top_tokens

    peaks = acts.max(0).values                                            # (d_ff,)
    order = torch.sort(peaks, descending=True, stable=True).indices[: min(k, acts.shape[1])]
    positions = list(range(acts.shape[0]))
    top = []
    for j in order.tolist():
        values = [float(v) for v in acts[:, j].tolist()]
        peak = max((abs(v) for v in values), default=0.0)
        best = top_tokens(acts, positions, j, k=min(3, acts.shape[0]))
        top.append({"neuron": j, "max": float(peaks[j]), "values": values,
                    "normalised": [v / peak if peak > 0 else 0.0 for v in values],
                    "top_tokens": [{"position": p, "token": tokens[p], "activation": a} for p, _, a in best]})
    return {"neurons": {"layer": layer, "d_ff": int(acts.shape[1]), "top": top}}


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


def _explain_gpt(loaded, model, text, target, layers, heads, max_new_tokens, device, *, saliency_steps=32,
                 neurons=None) -> dict:
    from ..generation.sampling import SamplingOptions
    from ..generation.text import complete_batch

    tok = loaded.tokenizer
    ids = tok.encode_prompt(text) if text else []      # as generate reads it (a checkpoint's BOS included)
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
            **_lens_and_saliency(model, tok, ids, next_top[0]["id"], saliency_steps),
            **(_gpt_neurons(model, ids, tokens, neurons) if neurons is not None else {})}


def _gpt_neurons(model, ids, tokens, layer: int) -> dict:
    from .lens import neuron_activations

    return _neuron_report(neuron_activations(model, ids, layer), tokens, layer)


def _attribution(values: torch.Tensor, method: str, position: int, tok, predicted: int) -> dict:
    """(seq,) attributions -> the report's entry: raw ``values`` and |value| / max ``normalised``."""
    values = [float(v) for v in values.tolist()]
    peak = max((abs(v) for v in values), default=0.0)
    return {"method": method, "target_position": position, "target_token": _token_strings(tok, [predicted])[0],
            "target_id": int(predicted), "values": values,
            "normalised": [abs(v) / peak if peak > 0 else 0.0 for v in values]}


def _lens_and_saliency(model, tok, ids, predicted: int, steps: int = 32) -> dict:
    """GPT: the logit lens (top-1 token and probability per layer and position), and the grad × input
    and integrated-gradients (``steps`` points) saliency of the predicted next token.  Empty for
    models without the hooks."""
    from .lens import logit_lens, path_logits, saliency

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
    last = len(ids) - 1
    with torch.enable_grad():
        grad_x_input = saliency(model, ids, last, predicted, method="grad_x_input")
        integrated = saliency(model, ids, last, predicted, method="integrated_gradients", steps=steps)
    baseline_logit, input_logit = path_logits(model, ids, last, predicted).tolist()
    return {"logit_lens": rows,
            "saliency": _attribution(grad_x_input, "grad_x_input", last, tok, predicted),
            "integrated_gradients": {**_attribution(integrated, "integrated_gradients", last, tok, predicted),
                                     "steps": steps, "input_logit": input_logit, "baseline_logit": baseline_logit}}


def _patch_tokens(rows: int, cols: int) -> list[str]:
    """The encoder's sequence of an image of rows × cols patches: [CLS], then the patches row by row."""
    return ["[CLS]"] + [f"patch {r},{c}" for r in range(rows) for c in range(cols)]


def _explain_vit(loaded, model, image_path, layers, heads, neurons=None) -> dict:
    from ..data.images import load_image
    from ..models.vit import top_classes

    config = model.config
    image = load_image(image_path, config.channels, config.image_size)
    grid = config.image_size // config.patch_size
    tokens = _patch_tokens(grid, grid)
    device = next(model.parameters()).device
    with capture_attention(model, layers, heads) as cap:
        logits = model(image[None].to(device))
    extra = {}
    if neurons is not None:
        from .lens import stack_neuron_activations

        acts = stack_neuron_activations(model.encoder.layers, neurons, lambda: model(image[None].to(device)))
        extra = _neuron_report(acts, tokens, neurons)
    classes = top_classes(logits, config.class_names, TOP_K)[0]
    return {"tokens": {"input": tokens}, "prediction": {"classes_top5": classes},
            "attention": _modules(cap, lambda name, kind: (tokens, tokens)), **extra}


def _explain_caption(loaded, model, image_path, target, layers, heads, device) -> dict:
    """The encoder over the image's patches, the decoder over [start] + the caption's tokens."""
    from ..data.captions import load_strip
    from ..tasks import caption_images

    config, tok = model.config, loaded.tokenizer
    image = load_strip(image_path, config.channels, config.image_size, config.image_width)[None].to(device)
    rows, cols = config.image_size // config.patch_size, config.image_width // config.patch_size
    patches = _patch_tokens(rows, cols)
    with capture_attention(model, layers, heads):            # validate --layers / --heads first
        pass
    given = target is not None
    if target is None:
        target = caption_images(model, tok, image)[0]
    tgt_ids = ([config.bos_id] + (tok.encode(target) if target.strip() else []))[: config.max_len]
    caption_tokens = _token_strings(tok, tgt_ids)
    with capture_attention(model, layers, heads) as cap:
        logits = model(image, torch.tensor([tgt_ids], device=device))
    next_top = _top(torch.softmax(logits[0, -1].float(), -1), tok)

    def q_k(name, kind):
        if name.startswith("encoder"):
            return patches, patches
        return (caption_tokens, patches) if kind == "cross" else (caption_tokens, caption_tokens)

    return {"tokens": {"input": patches, "patches": patches, "target": caption_tokens},
            "prediction": {"caption": target, "target_given": given, "next_token_top5": next_top},
            "attention": _modules(cap, q_k), "patch_grid": [rows, cols]}


def _explain_translation(loaded, model, text, target, layers, heads, max_new_tokens, device, *, neurons=None,
                         **_) -> dict:
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

    extra = {}
    if neurons is not None:                                  # the encoder's layer, over the source tokens
        from .lens import stack_neuron_activations

        src = torch.tensor([src_ids], device=device)
        extra = _neuron_report(stack_neuron_activations(model.encoder.layers, neurons, lambda: model.encode(src)),
                               src_tokens, neurons)
        extra["neurons"]["stack"] = "encoder"
    return {"tokens": {"input": src_tokens, "source": src_tokens, "target": tgt_tokens},
            "prediction": {"translation": target, "target_given": given, "next_token_top5": next_top},
            "attention": _modules(cap, q_k), **extra}


def _explain_bert(loaded, model, text, target, layers, heads, max_new_tokens, device, *, neurons=None,
                  **_) -> dict:
    tok = loaded.tokenizer
    config = model.config
    mask_token = tok.id_to_token(tok.mask_id) if tok.mask_id is not None else None
    if config.head == "mlm" and mask_token and mask_token in text:
        from ..tasks import mask_ids

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
    batch = torch.tensor([ids], device=device)
    with capture_attention(model, layers, heads) as cap:
        hidden = model.encode(batch).hidden
    extra = {}
    if neurons is not None:
        from .lens import stack_neuron_activations

        extra = _neuron_report(stack_neuron_activations(model.encoder.layers, neurons, lambda: model.encode(batch)),
                               tokens, neurons)
    prediction = None
    if config.head == "mlm" and positions:
        probs = torch.softmax(model.mlm_logits(hidden[0, positions]).float(), -1)
        prediction = {"masks": [{"position": p, "top5": _top(pr, tok)} for p, pr in zip(positions, probs)]}
    return {"tokens": {"input": tokens}, "prediction": prediction,
            "attention": _modules(cap, lambda name, kind: (tokens, tokens)), **extra}


# -- the page ------------------------------------------------------------------------------------
def _blocked(entry: dict) -> tuple[torch.Tensor, list[str], list[str]]:
    """(heads, ≤64, ≤64) cells and the row / column labels (tokens, or position ranges of blocks)."""
    cells, rows, cols = block_average(entry["weights"], MAX_CELLS)
    return cells, range_labels(rows, entry["q_tokens"]), range_labels(cols, entry["k_tokens"])


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


def _json_data(report: dict, blocked: list[tuple[torch.Tensor, list[str], list[str]]]) -> dict:
    """What the page's script draws from: every module's (block-averaged) weights and labels;
    ``blocked``: :func:`_blocked` of each module of ``report["attention"]``."""
    modules = []
    for m, (cells, rows, cols) in zip(report["attention"], blocked):
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


def _saliency_html(report: dict) -> str:
    sal, ig = report.get("saliency"), report.get("integrated_gradients")
    if not sal:
        return ""
    esc = html.escape
    tokens = report["tokens"]["input"]
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


def _neurons_html(report: dict) -> str:
    info = report.get("neurons")
    if not info:
        return ""
    esc = html.escape
    tokens = report["tokens"]["input"]
    rows = []
    for n in info["top"]:
        best = ", ".join(f"{esc(t['token'])} ({t['activation']:.3g} at {t['position']})" for t in n["top_tokens"])
        rows.append(f"<tr data-neuron='{n['neuron']}'><td>{n['neuron']}</td><td>{n['max']:.4g}</td>"
                    f"<td class='tok'>{best}</td><td><div class='toks sal'>"
                    f"{_shaded_tokens(tokens, n['values'], 'data-activation')}</div></td></tr>")
    where = f"{info['stack']} layer" if info.get("stack") else "layer"
    return (f"<h2>Feed-forward neurons, {where} {info['layer']}</h2><p>The {len(info['top'])} of "
            f"{info['d_ff']} neurons with the highest activation (after the nonlinearity) over the input, "
            "highest first; each token shaded by the neuron's activation there (red positive, blue negative, "
            "relative to the neuron's largest |activation|).</p>"
            "<table id='neurons'><tr><th>neuron</th><th>max</th><th>tokens that excite it most</th>"
            f"<th>activation per token</th></tr>{''.join(rows)}</table>" + _json_script("neurons-data", info))


def patch_maps(entry: dict, grid: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A cross-attention entry over an image memory ([CLS] + rows·cols patches, row by row) ->
    (q_len, rows, cols) the attention over the patch grid, mean over the captured heads, and
    (q_len,) the mean weight on [CLS]."""
    rows, cols = grid
    mean = entry["weights"].mean(0)                                       # (q_len, 1 + rows·cols)
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


def _patch_maps_html(report: dict) -> str:
    grid = report.get("patch_grid")
    cross = [m for m in report["attention"] if m["kind"] == "cross"]
    if not grid or not cross:
        return ""
    esc = html.escape
    parts, data = [], {}
    for m in cross:
        maps, cls = patch_maps(m, grid)
        cells = "".join(f"<figure data-patch-map='{i}'>{_patch_map_svg(maps[i])}<figcaption><span class='tok'>"
                        f"{esc(t)}</span><br>[CLS] {float(cls[i]):.3f}</figcaption></figure>"
                        for i, t in enumerate(m["q_tokens"]))
        parts.append(f"<div data-patch-maps='{esc(m['name'])}'><h3>{esc(m['name'])}</h3>"
                     f"<div class='maps'>{cells}</div></div>")
        data[m["name"]] = {"tokens": m["q_tokens"], "grid": list(grid), "heads": m["heads"],
                           "cls": [round(v, 7) for v in cls.tolist()],
                           "maps": [[[round(v, 7) for v in row] for row in tm] for tm in maps.tolist()]}
    return ("<h2>Where each caption token looks in the image</h2><p>For each decoder input token (the "
            "next token is predicted from it), its cross-attention over the patch grid, mean over heads; each "
            "map is shaded relative to its own largest weight, and the weight on [CLS] is given below it.</p>"
            + "".join(parts) + _json_script("patch-maps-data", data))


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.toks span{display:inline-block;border:1px solid #ccc;border-radius:3px;padding:1px 4px;margin:2px;
font-family:monospace;background:#f7f7f7}
.toks.sal span{background:none}
.maps{display:flex;flex-wrap:wrap}.maps figure{margin:4px 8px;text-align:center;font-size:80%}
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
document.querySelectorAll('.grid').forEach(function(g){var on=+g.dataset.moduleIndex===mi&&+g.dataset.headIndex===hi;
g.classList.toggle('on',on);if(on)heat(g.querySelector('svg'),data.modules[mi],hi);});
headView(data.modules[mi],hi);}
function heat(svg,m,hi){if(svg.firstChild)return;   // drawn from the data when first shown: a page of many heads stays small
var NS=svg.namespaceURI,w=m.weights[hi],q=m.q_labels,k=m.k_labels,left=90,top=90;
var cell=Math.max(6,Math.min(22,Math.floor(560/Math.max(q.length,k.length,1)))),font=cell>=10?10:7,mx=0;
w.forEach(function(r){r.forEach(function(v){if(v>mx)mx=v;});});
svg.setAttribute('width',left+k.length*cell+10);svg.setAttribute('height',top+q.length*cell+10);
function text(x,y,t,attrs){var e=document.createElementNS(NS,'text');e.setAttribute('x',x);e.setAttribute('y',y);
e.setAttribute('font-size',font);for(var a in attrs)e.setAttribute(a,attrs[a]);e.textContent=t;svg.appendChild(e);}
k.forEach(function(t,j){var x=left+j*cell+cell/2;text(x,top-4,t,{transform:'rotate(-90 '+x+' '+(top-4)+')'});});
q.forEach(function(t,i){text(left-4,top+i*cell+cell*0.75,t,{'text-anchor':'end'});});
for(var i=0;i<q.length;i++)for(var j=0;j<k.length;j++){var v=w[i][j],x=mx>0?Math.max(0,Math.min(1,v/mx)):0;
var r=document.createElementNS(NS,'rect');r.setAttribute('x',left+j*cell);r.setAttribute('y',top+i*cell);
r.setAttribute('width',cell);r.setAttribute('height',cell);
r.setAttribute('fill','rgb('+Math.round(255+(8-255)*x)+','+Math.round(255+(48-255)*x)+','+Math.round(255+(107-255)*x)+')');
var tt=document.createElementNS(NS,'title');tt.textContent=q[i]+' \u2192 '+k[j]+': '+v.toFixed(4);r.appendChild(tt);svg.appendChild(r);}}
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
    blocked = [_blocked(m) for m in report["attention"]]
    for mi, (m, (cells, rows, cols)) in enumerate(zip(report["attention"], blocked)):
        for hi, h in enumerate(m["heads"]):
            svg = "<svg></svg>"            # drawn by the page's script from the embedded data when shown
            grids.append(f"<div class='grid' data-grid data-module='{esc(m['name'])}' data-module-index='{mi}' "
                         f"data-layer='{m['layer']}' data-head='{h}' data-head-index='{hi}' data-kind='{m['kind']}'>"
                         f"<p>{esc(m['name'])} — head {h}</p>{svg}</div>")
        if m["kind"] == "cross":          # any model with cross-attention: translators, caption models
            svg = _heatmap_svg(cells.mean(0), rows, cols)
            axes = ("rows: caption tokens, columns: [CLS] and image patches" if "patches" in tokens
                    else "rows: target, columns: source")
            alignments.append(f"<div data-alignment='{esc(m['name'])}'><h3>{esc(m['name'])} "
                              f"(mean over {len(m['heads'])} heads; {axes})</h3>{svg}</div>")
    averaged = any(m["weights"].shape[-2:] != cells.shape[-2:] for m, (cells, _, _) in zip(report["attention"], blocked))
    note = (f"<p>The input is longer than {MAX_CELLS} tokens: grids show means over blocks of consecutive "
            "positions.</p>") if averaged else ""
    data = json.dumps(_json_data(report, blocked), ensure_ascii=False).replace("</", "<\\/")
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
{_neurons_html(report)}
<h2>Attention</h2>{note}
<p><label>Module <select id="sel-module"></select></label><label>Head <select id="sel-head"></select></label></p>
<div id="grids">{''.join(grids)}</div>
<h2>Head view</h2><p>Lines from each query token (left) to each key token (right); opacity = attention weight.
Hover a token to see only its lines.</p>
<svg id="headview" width="620" height="100"></svg>
{align_html}
{_patch_maps_html(report)}
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
    (``decoder.layers.0.self_attention.png``); for a caption model also one per cross-attention
    module of the patch-grid maps (``decoder.layers.0.cross_attention.patches.png``); with neurons,
    ``neurons.layer{L}.png`` (tokens × top neurons); for a GPT ``logit_lens.png`` and ``saliency.png``
    (gradient × input and integrated gradients).  Written with :func:`save_figure`."""
    from .figures import (attention_grid_figure, logit_lens_figure, neuron_activation_figure, patch_attention_figure,
                          saliency_figure, save_figure)

    folder = Path(folder)
    written = []
    for m in report["attention"]:
        fig = attention_grid_figure(m["weights"], m["q_tokens"], m["k_tokens"], title=m["name"],
                                    head_names=[f"head {h}" for h in m["heads"]])
        written.append(save_figure(fig, folder / f"{m['name']}.png"))
        if m["kind"] == "cross" and report.get("patch_grid"):
            maps, cls = patch_maps(m, report["patch_grid"])
            names = [f"{t} ([CLS] {c:.2f})" for t, c in zip(m["q_tokens"], cls.tolist())]
            fig = patch_attention_figure(maps, names, title=f"{m['name']}: mean over heads, per caption token")
            written.append(save_figure(fig, folder / f"{m['name']}.patches.png"))
    tokens = report["tokens"]["input"]
    lens = report.get("logit_lens")
    if lens:
        fig = logit_lens_figure([[c["probability"] for c in r["top1"]] for r in lens],
                                [[c["token"] for c in r["top1"]] for r in lens], [r["layer"] for r in lens], tokens,
                                title="logit lens: each layer's top-1 next token")
        written.append(save_figure(fig, folder / "logit_lens.png"))
    attributions = {name: report[key]["values"] for key, name in (("saliency", "gradient × input"),
                                                                  ("integrated_gradients", "integrated gradients"))
                    if report.get(key)}
    if attributions:
        target = report["saliency"]["target_token"] if report.get("saliency") else ""
        fig = saliency_figure(attributions, tokens, title=f"input saliency for the next token {target!r}")
        written.append(save_figure(fig, folder / "saliency.png"))
    info = report.get("neurons")
    if info:
        acts = torch.tensor([n["values"] for n in info["top"]]).T                 # (seq, top neurons)
        fig = neuron_activation_figure(acts, report["tokens"]["input"], [n["neuron"] for n in info["top"]],
                                       title=f"feed-forward layer {info['layer']}: top neurons")
        written.append(save_figure(fig, folder / f"neurons.layer{info['layer']}.png"))
    return written
