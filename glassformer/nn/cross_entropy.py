"""The language-model loss: the final linear layer and cross-entropy, fused and chunked.

The decoder's last step (§3.4) maps each position's output ``h`` (d_model) to
logits over the vocabulary with the output projection ``W`` (vocab, d_model),
often the token embedding itself (tied weights), and training minimises the
cross-entropy of ``softmax(z)`` against the next token ``y`` with label
smoothing ε (§5.4, ε = 0.1 in the paper). Per row, with ``z = h Wᵀ + b`` and ``V``
the vocabulary size::

    loss = logsumexp(z) − (1 − ε) z_y − (ε / V) Σ_v z_v
    ∂loss/∂z = softmax(z) − (1 − ε) onehot(y) − ε / V

(the smoothed target puts 1 − ε + ε/V on ``y`` and ε/V on every other token, and
its weights sum to 1, which is why the logsumexp has coefficient 1). Rows whose
target is ``ignore_index`` (padding) contribute 0 to the loss and to every
gradient. This is exactly ``F.cross_entropy(..., label_smoothing=ε,
reduction="sum")`` applied to ``F.linear(h, W, b)``.

Why fuse. With ``rows = batch × seq`` the plain expression keeps the logits
(rows, V), their float32 copy, the log-softmax and, in the backward pass, the
gradient of each: several rows × V float32 tensors at once, which for a 50k
vocabulary dominate a small model's memory. Because ∂loss/∂z has the closed form
above, the forward pass can compute, a chunk of rows at a time, the logits, the
loss, ∂loss/∂z and from it the chunk's ∂loss/∂h (= ∂loss/∂z · W) and its share of
∂loss/∂W (+= ∂loss/∂zᵀ · h) and ∂loss/∂b, then drop the chunk. At most one
chunk of logits is alive; nothing is recomputed; the backward pass only scales
the stored gradients by the incoming gradient of the (scalar) loss. The price is
that those gradients are computed even if backward is never called, so under
``torch.no_grad()`` (evaluation) they are not computed at all.

Per token (``reduction="none"``: DPO's and RL's log-probabilities, one per response token). The
loss of each row is returned, so its gradient is a different factor per row and the trick above
(∂loss/∂W summed in the forward pass) no longer applies; the forward pass keeps only each row's
logsumexp and the backward pass recomputes the chunk's logits: one more matmul than the sum, but
only at the counted rows — the ignored ones (a prompt, padding) never reach the output layer.

Mixed precision: the matmuls run in the dtype of the inputs (or the autocast
dtype, bf16 say); logsumexp and softmax always run in float32 (float64 for
float64 inputs), and the returned gradients come back in each input's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..errors import ConfigError

# One chunk of float32 logits is at most this many bytes (unless a single row is larger),
# so a small problem runs as one chunk and does not pay for the loop.
CHUNK_BYTES = 64 * 2**20


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    chunk_rows: int | None = None,
    reduction: str = "sum",
) -> Tensor:
    """The summed cross-entropy of ``softmax(hidden @ weight.T + bias)`` against ``target``
    (``reduction="mean"``: divided by the number of counted tokens, at least 1; ``reduction="none"``:
    each row's, shaped like ``target``, 0 where ignored — computed at the counted rows only).

    hidden (..., d_model), weight (vocab, d_model), bias (vocab,) or None, target (...) of
    token ids -> a scalar, float32 (float64 if ``hidden`` is float64). Rows whose target is
    ``ignore_index`` contribute 0; ``label_smoothing`` has PyTorch's meaning. Divide by the
    number of counted tokens for the mean (``reduction="mean"`` does). ``chunk_rows`` rows of logits are formed at a
    time (default: about 64 MB of float32 logits per chunk). ``weight`` may be a tied
    embedding matrix or a slice of one (``embedding.weight[:vocab]``)."""
    if hidden.shape[-1:] != weight.shape[1:] or weight.dim() != 2:
        raise ValueError(
            f"hidden (..., d_model) {tuple(hidden.shape)} and weight (vocab, d_model) "
            f"{tuple(weight.shape)} do not agree on d_model"
        )
    if target.shape != hidden.shape[:-1]:
        raise ValueError(f"target {tuple(target.shape)} must have hidden's shape without d_model: {tuple(hidden.shape[:-1])}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias {tuple(bias.shape)} must be (vocab,) = {tuple(weight.shape[:1])}")
    if reduction not in ("sum", "mean", "none"):
        raise ConfigError(f"reduction={reduction!r} is invalid; choose 'sum', 'mean' or 'none'")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ConfigError(f"label_smoothing={label_smoothing!r} must lie in [0, 1]")
    if chunk_rows is None:
        chunk_rows = max(1, CHUNK_BYTES // (4 * max(1, weight.shape[0])))
    elif chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows!r} must be a positive number of rows (or None)")

    # Autocast does not reach inside an autograd.Function, so cast here, where autograd
    # records the casts and hands each gradient back in its input's own dtype.
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    elif weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise ValueError(
            f"hidden ({hidden.dtype}), weight ({weight.dtype}) and bias must share a dtype outside autocast"
        )
    if reduction == "none":
        with torch.autocast(device_type, enabled=False):
            return _per_row(hidden, weight, bias, target, ignore_index, float(label_smoothing), int(chunk_rows))
    with torch.autocast(device_type, enabled=False):
        total = _LinearCrossEntropy.apply(
            hidden.reshape(-1, hidden.shape[-1]),
            weight,
            bias,
            target.reshape(-1),
            ignore_index,
            float(label_smoothing),
            int(chunk_rows),
            torch.is_grad_enabled(),
        )
    return total if reduction == "sum" else total / (target != ignore_index).sum().clamp_min(1)


class _LinearCrossEntropy(torch.autograd.Function):
    """hidden (rows, d_model), weight (vocab, d_model), bias (vocab,) | None, target (rows,) -> loss ()."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, ignore_index, smoothing, chunk_rows, grad_enabled):
        # Inside forward grad mode is always off and needs_input_grad ignores torch.no_grad(),
        # so the caller says whether gradients can be asked for.
        need_h, need_w, need_b = (grad_enabled and n for n in ctx.needs_input_grad[:3])
        need_b = need_b and bias is not None
        vocab = weight.shape[0]
        # softmax and logsumexp in float32, or float64 for float64 inputs
        acc_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32

        loss = hidden.new_zeros((), dtype=acc_dtype)
        grad_hidden = hidden.new_empty(hidden.shape) if need_h else None   # contiguous
        # accumulate ∂loss/∂W over chunks in at least float32, not in bf16
        grad_weight = torch.zeros(weight.shape, dtype=torch.promote_types(weight.dtype, acc_dtype),
                                  device=weight.device) if need_w else None
        grad_bias = torch.zeros(vocab, dtype=acc_dtype, device=weight.device) if need_b else None

        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows]                    # (n, d_model)
            y = target[start:start + chunk_rows]                    # (n,)
            z = F.linear(h, weight, bias).to(acc_dtype)             # (n, vocab)
            counted = y != ignore_index                             # (n,)
            y = y.masked_fill(~counted, 0)[:, None]                 # (n, 1), ignored rows point at token 0
            row_loss = -(1.0 - smoothing) * z.gather(1, y).squeeze(1)
            if smoothing:
                row_loss -= (smoothing / vocab) * z.sum(dim=-1)
            # logsumexp by hand, leaving exp(z − max) in z: one pass of exp serves loss and gradient
            top = z.amax(dim=-1, keepdim=True)                      # (n, 1)
            z.sub_(top).exp_()
            total = z.sum(dim=-1, keepdim=True)                     # (n, 1)
            row_loss += (top + total.log()).squeeze(1)              # + logsumexp(z)
            loss += row_loss.masked_fill(~counted, 0).sum()
            if not (need_h or need_w or need_b):
                continue
            # ∂loss/∂z = softmax(z) − (1 − ε) onehot(y) − ε/V, times 0 on ignored rows; in place in z
            keep = counted[:, None].to(z.dtype)                     # (n, 1)
            dz = z.mul_(keep / total)
            if smoothing:
                dz.sub_(keep * (smoothing / vocab))
            dz.scatter_add_(1, y, keep * (smoothing - 1.0))
            if need_b:
                grad_bias += dz.sum(dim=0)
            _add_chunk_gradients(dz, h, weight, grad_hidden, grad_weight, slice(start, start + chunk_rows))
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        # out of place, so that a second backward (retain_graph=True) sees the same stored gradients
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_loss).to(weight_dtype)
        if grad_bias is not None:
            grad_bias = (grad_bias * grad_loss).to(bias_dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def _add_chunk_gradients(dz: Tensor, h: Tensor, weight: Tensor, grad_hidden: Tensor | None,
                         grad_weight: Tensor | None, rows: slice) -> None:
    """One chunk's share of the input gradients from dz = ∂loss/∂z (n, vocab) of its rows h (n, d_model),
    dz brought back to the matmul dtype: ``grad_hidden[rows]`` = dz W, and ``grad_weight`` += dzᵀ h,
    accumulated in grad_weight's own dtype (at least float32).  A gradient that is None is not wanted."""
    dz = dz.to(h.dtype)
    if grad_hidden is not None:
        torch.mm(dz, weight, out=grad_hidden[rows])
    if grad_weight is not None:
        if grad_weight.dtype == dz.dtype:
            grad_weight.addmm_(dz.t(), h)
        else:
            grad_weight += torch.mm(dz.t(), h)


def _per_row(hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, ignore_index: int,
             smoothing: float, chunk_rows: int) -> Tensor:
    """hidden (..., d_model), target (...) -> each row's loss (...), 0 where ``target`` is ignored: the
    counted rows are gathered, and only they go through the output layer."""
    flat = target.reshape(-1)
    counted = (flat != ignore_index).nonzero().squeeze(1)                       # (n,)
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, counted)        # (n, d_model)
    losses = _LinearCrossEntropyPerRow.apply(rows, weight, bias, flat.index_select(0, counted), smoothing,
                                             chunk_rows)                        # (n,)
    return losses.new_zeros(flat.shape).index_copy(0, counted, losses).reshape(target.shape)


class _LinearCrossEntropyPerRow(torch.autograd.Function):
    """hidden (rows, d_model), weight (vocab, d_model), bias (vocab,) | None, target (rows,) -> losses (rows,).
    Every row is counted (the caller drops the ignored ones)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, smoothing, chunk_rows):
        acc_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        vocab = weight.shape[0]
        losses = hidden.new_empty(hidden.shape[0], dtype=acc_dtype)
        lse = hidden.new_empty(hidden.shape[0], dtype=acc_dtype)                # logsumexp of each row's logits
        for start in range(0, hidden.shape[0], chunk_rows):
            z = F.linear(hidden[start:start + chunk_rows], weight, bias).to(acc_dtype)   # (n, vocab)
            y = target[start:start + chunk_rows, None]                                  # (n, 1)
            top = torch.logsumexp(z, dim=-1)                                            # (n,)
            lse[start:start + chunk_rows] = top
            loss = top - (1.0 - smoothing) * z.gather(1, y).squeeze(1)
            if smoothing:
                loss -= (smoothing / vocab) * z.sum(dim=-1)
            losses[start:start + chunk_rows] = loss
        ctx.save_for_backward(hidden, weight, bias, target, lse)
        ctx.smoothing, ctx.chunk_rows = smoothing, chunk_rows
        return losses

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_losses):
        hidden, weight, bias, target, lse = ctx.saved_tensors
        smoothing, chunk_rows, vocab = ctx.smoothing, ctx.chunk_rows, weight.shape[0]
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.promote_types(weight.dtype, lse.dtype),
                                  device=weight.device) if need_w else None
        grad_bias = torch.zeros(vocab, dtype=lse.dtype, device=weight.device) if need_b and bias is not None else None
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows]                                        # (n, d_model)
            g = grad_losses[start:start + chunk_rows, None].to(lse.dtype)               # (n, 1)
            # ∂loss/∂z = softmax(z) − (1 − ε) onehot(y) − ε/V, times each row's incoming gradient
            dz = F.linear(h, weight, bias).to(lse.dtype).sub_(lse[start:start + chunk_rows, None]).exp_()
            if smoothing:
                dz.sub_(smoothing / vocab)
            dz.scatter_add_(1, target[start:start + chunk_rows, None], dz.new_full((h.shape[0], 1), smoothing - 1.0))
            dz.mul_(g)
            if grad_bias is not None:
                grad_bias += dz.sum(dim=0)
            _add_chunk_gradients(dz, h, weight, grad_hidden, grad_weight, slice(start, start + chunk_rows))
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None


__all__ = ["linear_cross_entropy", "CHUNK_BYTES"]
