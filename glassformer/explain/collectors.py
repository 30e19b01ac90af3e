"""What the explain report gathers from each model family, one collector per family, looked up in
:data:`COLLECTORS` by ``config.family`` (see :mod:`glassformer.explain.report` for the report itself).

Each collector runs the model once, normally, under :func:`~glassformer.explain.attention.capture_attention`
and returns a :class:`~glassformer.explain.report_types.Report`: GPT (prompt, prediction, attention, logit lens,
saliency), translator (source and target), BERT (fill-mask when there is a [MASK]), ViT (an image's
patches and classes) and caption model (an image's patches and its caption).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..data.captions import load_strip
from ..data.images import load_image
from ..errors import InputError
from .attention import capture_attention
from .lens import logit_lens, neuron_activations, path_logits, saliency, stack_neuron_activations, top_tokens
from .report_types import AttentionModule, Neurons, Report

TOP_K = 5
TOP_NEURONS = 8


@dataclass(frozen=True)
class Options:
    """What the user asked the report for, the same for every family (see
    :func:`~glassformer.explain.report.explain`)."""

    layers: Sequence[int] | None
    heads: Sequence[int] | None
    max_new_tokens: int
    saliency_steps: int
    neurons: int | None
    device: torch.device


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


def _modules(capture, q_k_tokens) -> list[AttentionModule]:
    out = []
    for name, w in capture.weights.items():
        kind = capture.kinds[name]
        q_tokens, k_tokens = q_k_tokens(name, kind)
        n_heads = w.shape[1]
        out.append(AttentionModule(name, kind, _layer_index(name),
                                   list(capture.heads) if capture.heads is not None else list(range(n_heads)),
                                   q_tokens, k_tokens, w[0].float()))
    return out


def _encoder_decoder(source: list[str], target: list[str]):
    """The (query, key) tokens of an encoder–decoder's modules: the encoder's over the source, the
    decoder's over the target, its cross-attention from the target to the source."""
    def q_k(name, kind):
        if name.startswith("encoder"):
            return source, source
        return (target, source) if kind == "cross" else (target, target)

    return q_k


# -- feed-forward neurons ------------------------------------------------------------------------
def _neurons(acts: torch.Tensor, tokens: list[str], layer: int, k: int = TOP_NEURONS) -> Neurons:
    """acts (seq, d_ff) -> the ``k`` neurons with the highest activation over the input, highest first
    (ties: lower index first), each with its activation per token and its top positions."""
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
    return Neurons(layer, int(acts.shape[1]), top)


# -- GPT -------------------------------------------------------------------------------------------
def _explain_gpt(loaded, model, text, target, options: Options) -> Report:
    from ..generation.sampling import SamplingOptions
    from ..tasks import complete_batch

    tok, device = loaded.tokenizer, options.device
    ids = tok.encode_prompt(text) if text else []      # as generate reads it (a checkpoint's BOS included)
    if not ids:
        raise InputError("the text tokenizes to nothing; give a prompt with at least one token")
    context = model.config.max_len
    if len(ids) > context:
        raise InputError(f"the text has {len(ids)} tokens; the model's context is {context}")
    tokens = _token_strings(tok, ids)
    new = max(0, min(options.max_new_tokens, context - len(ids)))
    with capture_attention(model, options.layers, options.heads) as cap:     # checks layers / heads before any work
        logits = model(torch.tensor([ids], device=device))
    next_top = _top(torch.softmax(logits[0, -1, : model.config.vocab_size].float(), -1), tok)
    continuation = complete_batch(model, tok, [ids], SamplingOptions(max_new_tokens=new, temperature=0.0))[0] \
        if new else ""
    neurons = None
    if options.neurons is not None:
        neurons = _neurons(neuron_activations(model, ids, options.neurons), tokens, options.neurons)
    return Report(loaded.config.family, str(text), {"input": tokens},
                  {"continuation": continuation, "next_token_top5": next_top},
                  _modules(cap, lambda name, kind: (tokens, tokens)),
                  **_lens_and_saliency(model, tok, ids, next_top[0]["id"], options.saliency_steps), neurons=neurons)


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


# -- image models ----------------------------------------------------------------------------------
def _patch_tokens(rows: int, cols: int) -> list[str]:
    """The encoder's sequence of an image of rows × cols patches: [CLS], then the patches row by row."""
    return ["[CLS]"] + [f"patch {r},{c}" for r in range(rows) for c in range(cols)]


def _explain_vit(loaded, model, image_path, target, options: Options) -> Report:
    from ..models.vit import top_classes

    config = model.config
    image = load_image(image_path, config.channels, config.image_size)
    grid = config.image_size // config.patch_size
    tokens = _patch_tokens(grid, grid)
    batch = image[None].to(options.device)
    with capture_attention(model, options.layers, options.heads) as cap:
        logits = model(batch)
    neurons = None
    if options.neurons is not None:
        neurons = _neurons(stack_neuron_activations(model.encoder.layers, options.neurons, lambda: model(batch)),
                           tokens, options.neurons)
    classes = top_classes(logits, config.class_names, TOP_K)[0]
    return Report(loaded.config.family, str(image_path), {"input": tokens}, {"classes_top5": classes},
                  _modules(cap, lambda name, kind: (tokens, tokens)), neurons=neurons)


def _explain_caption(loaded, model, image_path, target, options: Options) -> Report:
    """The encoder over the image's patches, the decoder over [start] + the caption's tokens."""
    from ..tasks import caption_images

    config, tok, device = model.config, loaded.tokenizer, options.device
    image = load_strip(image_path, config.channels, config.image_size, config.image_width)[None].to(device)
    rows, cols = config.image_size // config.patch_size, config.image_width // config.patch_size
    patches = _patch_tokens(rows, cols)
    with capture_attention(model, options.layers, options.heads):            # validate --layers / --heads first
        pass
    given = target is not None
    if target is None:
        target = caption_images(model, tok, image)[0]
    tgt_ids = ([config.bos_id] + (tok.encode(target) if target.strip() else []))[: config.max_len]
    caption_tokens = _token_strings(tok, tgt_ids)
    with capture_attention(model, options.layers, options.heads) as cap:
        logits = model(image, torch.tensor([tgt_ids], device=device))
    next_top = _top(torch.softmax(logits[0, -1].float(), -1), tok)

    return Report(loaded.config.family, str(image_path),
                  {"input": patches, "patches": patches, "target": caption_tokens},
                  {"caption": target, "target_given": given, "next_token_top5": next_top},
                  _modules(cap, _encoder_decoder(patches, caption_tokens)), patch_grid=[rows, cols])


# -- text encoders and encoder–decoders ------------------------------------------------------------
def _explain_translation(loaded, model, text, target, options: Options) -> Report:
    from ..tasks import translate

    config, device = model.config, options.device
    src_tok, tgt_tok = loaded.src_tokenizer, loaded.tokenizer
    src_ids = src_tok.encode(text) if text.strip() else []
    if not src_ids:
        raise InputError("the text tokenizes to nothing; give a source sentence with at least one token")
    src_ids = src_ids + [config.eos_id]
    if len(src_ids) > config.max_len:
        raise InputError(f"the source has {len(src_ids)} tokens but the model takes at most {config.max_len}")
    with capture_attention(model, options.layers, options.heads):            # validate --layers / --heads first
        pass
    given = target is not None
    if target is None:
        target = translate(model, src_tok, tgt_tok, [text])[0]
    tgt_ids = [config.start_id] + (tgt_tok.encode(target) if target else [])
    tgt_ids = tgt_ids[: config.max_len]
    src_tokens, tgt_tokens = _token_strings(src_tok, src_ids), _token_strings(tgt_tok, tgt_ids)
    src = torch.tensor([src_ids], device=device)
    with capture_attention(model, options.layers, options.heads) as cap:
        logits = model(src, torch.tensor([tgt_ids], device=device))
    next_top = _top(torch.softmax(logits[0, -1].float(), -1), tgt_tok)

    neurons = None
    if options.neurons is not None:                          # the encoder's layer, over the source tokens
        neurons = _neurons(stack_neuron_activations(model.encoder.layers, options.neurons, lambda: model.encode(src)),
                           src_tokens, options.neurons)
        neurons.stack = "encoder"
    return Report(loaded.config.family, str(text), {"input": src_tokens, "source": src_tokens, "target": tgt_tokens},
                  {"translation": target, "target_given": given, "next_token_top5": next_top},
                  _modules(cap, _encoder_decoder(src_tokens, tgt_tokens)), neurons=neurons)


def _explain_bert(loaded, model, text, target, options: Options) -> Report:
    tok, config = loaded.tokenizer, model.config
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
    batch = torch.tensor([ids], device=options.device)
    with capture_attention(model, options.layers, options.heads) as cap:
        hidden = model.encode(batch).hidden
    neurons = None
    if options.neurons is not None:
        neurons = _neurons(stack_neuron_activations(model.encoder.layers, options.neurons, lambda: model.encode(batch)),
                           tokens, options.neurons)
    prediction = None
    if config.head == "mlm" and positions:
        probs = torch.softmax(model.mlm_logits(hidden[0, positions]).float(), -1)
        prediction = {"masks": [{"position": p, "top5": _top(pr, tok)} for p, pr in zip(positions, probs)]}
    return Report(loaded.config.family, str(text), {"input": tokens}, prediction,
                  _modules(cap, lambda name, kind: (tokens, tokens)), neurons=neurons)


# -- the table -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Collector:
    """One family as the report sees it: ``collect(loaded, model, text, target, options)``;
    ``needs_tokenizer``: it shows text tokens; ``ffn_layers(model)``: the feed-forward layers
    ``--neurons`` reads (None: ``--neurons`` does not apply); ``no_prediction``: what the page says
    when the report has no prediction; ``check_input(config, given)``: refuses, before the weights
    are loaded, an input the family cannot read (an image that is not one)."""

    collect: Callable[[Any, Any, Any, str | None, Options], Report]
    needs_tokenizer: bool = True
    ffn_layers: Callable[[Any], Any] | None = None
    no_prediction: str = "No prediction."
    check_input: Callable[[Any, str], None] = lambda config, given: None


def _encoder_layers(model):
    return model.encoder.layers


COLLECTORS: dict[str, Collector] = {
    "gpt": Collector(_explain_gpt, ffn_layers=lambda model: model.decoder.layers),
    "transformer": Collector(_explain_translation, ffn_layers=_encoder_layers),   # the encoder: over the text given
    "recurrent": Collector(_explain_translation),          # its attention over the source; no feed-forward layers
    "bert": Collector(_explain_bert, ffn_layers=_encoder_layers,
                      no_prediction="No prediction: the model has no masked-LM head, or the text has no [MASK]."),
    "vit": Collector(_explain_vit, needs_tokenizer=False, ffn_layers=_encoder_layers,
                     check_input=lambda config, path: load_image(path, config.channels, config.image_size)),
    "caption": Collector(_explain_caption, check_input=lambda config, path: load_strip(
        path, config.channels, config.image_size, config.image_width)),
}
