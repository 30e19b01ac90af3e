"""Why this output: the logit lens, feed-forward neurons and input saliency of a GPT.

* logit lens (nostalgebraist 2020): the unembedding (final norm, then the output matrix) applied
  to the residual stream after the embedding and after every layer: what the model "would say"
  if it stopped there.  The last row is the model's own logits.
* neuron activations: the values after the feed-forward's nonlinearity (for a gated feed-forward,
  act(gate) ⊙ up), read from the input of ``linear2`` by a forward pre-hook, one layer at a time;
  ``top_tokens`` finds the positions that excite one neuron most; ``stack_neuron_activations``
  reads the same from any stack of layers (BERT's, ViT's) given a function that runs the model.
* saliency: how much each input token's embedding contributes to one logit.  Gradient × input
  (Shrikumar et al. 2016) sums ∂logit/∂e · e over d_model; integrated gradients (Sundararajan et
  al. 2017) average the gradient on the straight path from a zero token embedding (the positions
  stay) to the real one, times the embedding: the attributions add up to
  logit(input) − logit(baseline) (completeness), up to the Riemann sum's error; ``path_logits``
  gives those two logits.

Everything reads the model through forward hooks on its modules: nothing in ``glassformer.nn``
changes, and the hooks are removed when each function returns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InputError

SALIENCY_METHODS = ("grad_x_input", "integrated_gradients")


def _as_batch(model, tokens) -> Tensor:
    """tokens: a list of ids, (seq,) or (1, seq) -> (1, seq) long tensor on the model's device."""
    device = model.embed.token.weight.device
    t = torch.as_tensor(tokens, dtype=torch.long, device=device)
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.shape[0] != 1 or t.shape[1] == 0:
        raise InputError(f"tokens must be one non-empty sequence, (seq,) or (1, seq); got shape {tuple(t.shape)}")
    vocab = model.config.vocab_size
    if int(t.min()) < 0 or int(t.max()) >= vocab:
        raise InputError(f"token ids must be in [0, {vocab}); got {int(t.min())}..{int(t.max())}")
    return t


def unembed(model, hidden: Tensor) -> Tensor:
    """The model's head on a residual-stream state: final norm (pre-norm stacks), then the output matrix."""
    norm = model.decoder.final_norm
    if norm is not None:
        hidden = norm(hidden)
    return F.linear(hidden, model.output_weight)


@torch.no_grad()
def logit_lens(model, tokens) -> Tensor:
    """(layers + 1, seq, vocab) float32: row 0 unembeds the embedding's output, row i + 1 the output
    of layer i; the last row equals ``model(tokens)[0]``."""
    tokens = _as_batch(model, tokens)
    states: list[Tensor] = []
    handles = [model.embed.register_forward_hook(lambda m, i, out: states.append(out))]
    handles += [layer.register_forward_hook(lambda m, i, out: states.append(out[0]))
                for layer in model.decoder.layers]
    try:
        model.hidden_states(tokens, use_fused=False)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([unembed(model, s[0]).float() for s in states])


def _layer(model, layer: int):
    layers = model.decoder.layers
    if not -len(layers) <= layer < len(layers):
        raise ConfigError(f"layer={layer} is invalid; the model has {len(layers)} layers (0..{len(layers) - 1})")
    return layers[layer]


@torch.no_grad()
def neuron_activations(model, tokens, layer: int) -> Tensor:
    """(seq, d_ff): the feed-forward's activations after its nonlinearity in ``layer`` (the input of
    its ``linear2``; for a gated feed-forward act(gate) ⊙ up)."""
    tokens = _as_batch(model, tokens)
    _layer(model, layer)                                         # -n..n-1, else ConfigError naming the range
    layers = model.decoder.layers
    return stack_neuron_activations(layers, layer % len(layers), lambda: model.hidden_states(tokens, use_fused=False))


@torch.no_grad()
def stack_neuron_activations(layers, layer: int, run) -> Tensor:
    """(seq, d_ff): as :func:`neuron_activations`, for any stack of layers with a ``feed_forward``:
    ``layers`` the stack's layers (``bert.encoder.layers``, ``vit.encoder.layers``), ``run`` a
    function of no arguments that runs the model once on one sequence (batch 1).  ``layer`` must be
    in 0..len(layers) - 1 (else :class:`InputError` naming the range)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(layers):
        raise InputError(f"feed-forward layer {layer} does not exist; the model has {len(layers)} layers "
                         f"(0..{len(layers) - 1})")
    seen: list[Tensor] = []
    handle = layers[layer].feed_forward.linear2.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        run()
    finally:
        handle.remove()
    if len(seen) != 1 or seen[0].shape[0] != 1:
        raise InputError("stack_neuron_activations needs one forward pass on one sequence (batch 1)")
    return seen[0][0].float()


def top_tokens(acts: Tensor, tokens, neuron: int, k: int = 5) -> list[tuple[int, int, float]]:
    """The ``k`` positions where ``neuron`` fires most, highest first: (position, token id, activation)."""
    if not 0 <= neuron < acts.shape[-1]:
        raise ConfigError(f"neuron={neuron} is invalid; the layer has {acts.shape[-1]} (0..{acts.shape[-1] - 1})")
    if k < 1:
        raise ConfigError(f"k={k} is invalid; it must be a positive integer")
    ids = torch.as_tensor(tokens).reshape(-1).tolist()
    column = acts[:, neuron]
    order = torch.sort(column, descending=True, stable=True).indices[:k]
    return [(int(p), int(ids[p]), float(column[p])) for p in order]


def _logit_with_embeddings(model, tokens: Tensor, embeddings: Tensor, position: int, token: int) -> Tensor:
    """The logit of ``token`` at ``position`` when the token embedding's output is replaced by
    ``embeddings`` (batch, seq, d_model); tokens broadcast over the batch.  Returns (batch,)."""
    handle = model.embed.token.register_forward_hook(lambda m, i, out: embeddings)
    try:
        hidden = model.hidden_states(tokens.expand(embeddings.shape[0], -1), use_fused=False).hidden
    finally:
        handle.remove()
    return F.linear(hidden[:, position], model.output_weight)[:, token]


def saliency(model, tokens, target_position: int, target_token: int, method: str = "grad_x_input",
             steps: int = 32) -> Tensor:
    """(seq,) float32: each input token's contribution to the logit of ``target_token`` at
    ``target_position``, summed over d_model.  ``method``: "grad_x_input" or
    "integrated_gradients" (``steps`` midpoint-rule points from a zero token embedding)."""
    if method not in SALIENCY_METHODS:
        raise ConfigError(f"method={method!r} is invalid; choose one of {', '.join(SALIENCY_METHODS)}")
    if steps < 1:
        raise ConfigError(f"steps={steps} is invalid; it must be a positive integer")
    tokens = _as_batch(model, tokens)
    seq = tokens.shape[1]
    if not -seq <= target_position < seq:
        raise InputError(f"target_position={target_position} is outside the {seq} input tokens")
    if not 0 <= target_token < model.config.vocab_size:
        raise InputError(f"target_token={target_token} is outside the vocabulary (0..{model.config.vocab_size - 1})")
    with torch.no_grad():
        x = model.embed.token(tokens).detach()                   # (1, seq, d_model)
    if method == "grad_x_input":
        e = x.clone().requires_grad_(True)
        logit = _logit_with_embeddings(model, tokens, e, target_position, target_token).sum()
        (grad,) = torch.autograd.grad(logit, e)
        return (grad * x)[0].sum(-1).float().detach()
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps      # midpoints
    total = torch.zeros_like(x)
    for chunk in alphas.split(16):
        e = (chunk[:, None, None] * x).requires_grad_(True)      # (chunk, seq, d_model)
        logit = _logit_with_embeddings(model, tokens, e, target_position, target_token).sum()
        (grad,) = torch.autograd.grad(logit, e)
        total += grad.sum(0, keepdim=True)
    return (total / steps * x)[0].sum(-1).float().detach()


@torch.no_grad()
def path_logits(model, tokens, target_position: int, target_token: int) -> Tensor:
    """(2,) float64: the logit of ``target_token`` at ``target_position`` at the two ends of the
    integrated-gradients path: [zero token embeddings (positions kept), the real input].  By
    completeness, integrated gradients sum to ``path_logits[1] - path_logits[0]``."""
    tokens = _as_batch(model, tokens)
    x = model.embed.token(tokens)                                # (1, seq, d_model)
    ends = torch.cat([torch.zeros_like(x), x])                   # (2, seq, d_model)
    return _logit_with_embeddings(model, tokens, ends, target_position, target_token).double()


__all__ = ["SALIENCY_METHODS", "logit_lens", "neuron_activations", "stack_neuron_activations", "top_tokens",
           "saliency", "path_logits", "unembed"]
