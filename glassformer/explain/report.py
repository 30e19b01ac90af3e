"""One self-contained HTML page that explains what a model did with one input (issue 12).

::

    from glassformer.explain.report import explain, write_html, write_pngs
    report = explain("runs/gpt/best", "ROMEO:")           # a model directory or a loaded ModelDir
    write_html(report, "report.html")                     # inline CSS/JS/SVG only: opens offline
    write_pngs(report, "pngs/")                           # one PNG per attention module (all heads)

:func:`explain` runs the model once, normally, under
:func:`~glassformer.explain.attention.capture_attention` (the family's collector in
:mod:`~glassformer.explain.collectors`) and returns a :class:`Report`, rendered by
:mod:`~glassformer.explain.render`.  ``report.to_dict()`` (and ``report[key]``) is the report as plain data:

* ``family``: "gpt" | "transformer" | "bert" | "vit" | "caption";
* ``tokens``: the token strings as the model saw them (``"input"``; for a translator also
  ``"source"`` and ``"target"`` — the decoder's inputs, start token first; for a caption model
  ``"patches"`` — the encoder's inputs, as ``"input"`` — and ``"target"``);
* ``prediction``: GPT: the greedy continuation and the next-token top-5; translator: the
  translation (given with ``target`` or the model's greedy one); BERT: fill-mask top-5 at each
  [MASK] (a model with an MLM head and a text with a mask), else None; caption model: the caption
  (given with ``target`` or the model's greedy one) and the next-token top-5;
* ``attention``: one :class:`AttentionModule` per captured attention module, in model order: ``name``
  (module path), ``kind`` ("self" / "cross"), ``layer`` (index), ``heads`` (head indices),
  ``q_tokens`` / ``k_tokens`` and ``weights`` (heads, q_len, k_len) float32 tensor.

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
:func:`~glassformer.tasks.caption_images`), fed to the decoder after its start token.
``patch_grid`` = [rows, cols]; the page adds, per cross-attention module and caption token, the
attention over the patch grid (mean over heads, [CLS] left out and shown as a number), also as
JSON (``id="patch-maps-data"``).

With ``neurons=LAYER`` (GPT, BERT, ViT; a translator's encoder, over the source), ``neurons`` (a
:class:`Neurons`) holds that layer's feed-forward activations
(after the nonlinearity, :func:`~glassformer.explain.lens.neuron_activations`): ``layer``,
``d_ff`` and ``top``, the ``TOP_NEURONS`` neurons with the highest activation over the input
(highest first), each with ``neuron``, ``max``, ``values`` (one per token) and ``top_tokens`` (the
positions that excite it most); the page shades the tokens per neuron and embeds them as JSON
(``id="neurons-data"``).
"""

from __future__ import annotations

import os

import torch

from ..errors import InputError
from .collectors import COLLECTORS, Options
from .render import patch_maps, render_html, write_html, write_pngs
from .report_types import AttentionModule, Neurons, Report

__all__ = ["AttentionModule", "Neurons", "Report", "explain", "patch_maps", "render_html", "write_html", "write_pngs"]


def _load(model_dir_or_loaded):
    if isinstance(model_dir_or_loaded, (str, os.PathLike)):
        from ..model_dir import load_model_dir

        return load_model_dir(model_dir_or_loaded)
    return model_dir_or_loaded


@torch.no_grad()
def explain(model_dir_or_loaded, text: str, target: str | None = None, *, layers=None, heads=None,
            max_new_tokens: int = 8, saliency_steps: int = 32, neurons: int | None = None) -> Report:
    """Run the model of a model directory (a path or a loaded ``ModelDir``) on ``text`` under
    :func:`capture_attention` and gather tokens, prediction and attention (see the module doc).
    ``layers`` / ``heads``: as :func:`capture_attention` (out-of-range indices: ``InputError``).
    ``target``: for a translator or a caption model, the target to explain (default: its greedy
    output).  ``saliency_steps``: GPT, the points of integrated gradients.  ``neurons``: GPT, BERT
    and ViT, a feed-forward layer whose most active neurons the report shows."""
    loaded = _load(model_dir_or_loaded)
    family = loaded.config.family
    if family not in COLLECTORS:
        raise InputError(f"explain does not support {family!r} models; "
                         "it explains GPT, translation, BERT, ViT and caption models")
    collector = COLLECTORS[family]
    if isinstance(saliency_steps, bool) or not isinstance(saliency_steps, int) or saliency_steps < 1:
        raise InputError(f"saliency steps must be a positive number, got {saliency_steps!r}")
    model = loaded.model.eval()
    if neurons is not None:
        if collector.ffn_layers is None:
            raise InputError(f"--neurons works for GPT, BERT, ViT and translation models (a translator's encoder), "
                             f"not {family!r} models")
        n = len(collector.ffn_layers(model))
        if isinstance(neurons, bool) or not isinstance(neurons, int) or not 0 <= neurons < n:
            raise InputError(f"feed-forward layer {neurons} does not exist; the model has {n} layers, "
                             f"so --neurons takes 0..{n - 1}")
    if collector.needs_tokenizer and loaded.tokenizer is None:
        raise InputError("the model directory has no tokenizer.json; explain needs the tokenizer to show the tokens")
    options = Options(layers, heads, max_new_tokens, saliency_steps, neurons, next(model.parameters()).device)
    return collector.collect(loaded, model, text, target, options)
