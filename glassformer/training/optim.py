"""Optimisers: the paper's Adam (§5.3) and AdamW with weight decay only on matrices."""

from __future__ import annotations

import torch
from torch import nn


def paper_adam(model: nn.Module, lr: float = 1.0) -> torch.optim.Adam:
    """Adam with β1 = 0.9, β2 = 0.98, ε = 1e-9 (the learning rate comes from the schedule)."""
    return torch.optim.Adam(_unique(model.parameters()), lr=lr, betas=(0.9, 0.98), eps=1e-9, fused=_fused(model))


def decay_groups(model: nn.Module, weight_decay: float, *, decay_embeddings: bool = False) -> list[dict]:
    """Two parameter groups: matrices of linear layers decay; biases, norms and embeddings do not
    (``decay_embeddings``: embeddings do too, as in nanoGPT and GPT-2's training code, where every
    parameter of two or more dimensions decays)."""
    embeddings = set()
    if not decay_embeddings:
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        embeddings |= {id(p) for name, p in model.named_parameters() if "position" in name}
    decay, no_decay = [], []
    for p in _unique(model.parameters()):
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(model: nn.Module, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.95), *,
          decay_embeddings: bool = False) -> torch.optim.AdamW:
    """AdamW over :func:`decay_groups`; the fused kernel where the device supports it."""
    return torch.optim.AdamW(decay_groups(model, weight_decay, decay_embeddings=decay_embeddings), lr=lr,
                             betas=betas, fused=_fused(model))


def _fused(model: nn.Module) -> bool | None:
    """The fused kernel wherever PyTorch has one, CPU included: the update of every parameter in a few
    kernels rather than a loop over tensors, and a step that a non-finite gradient can skip on the
    device (see training.trainer).  Not for sharded (FSDP) parameters, which it does not take."""
    param = next(model.parameters())
    if type(param).__name__ == "DTensor" and param.device.type == "cpu":
        return None
    return param.device.type in ("cuda", "mps", "cpu") or None


def _unique(params):
    """Tied parameters appear once."""
    return list({id(p): p for p in params}.values())
