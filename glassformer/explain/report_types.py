"""The explain report as data: a :class:`Report` of :class:`AttentionModule` entries and, for a
feed-forward layer, :class:`Neurons` (see :mod:`glassformer.explain.report` for what each part holds).
``to_dict()`` gives the report as plain data; ``report[key]`` reads it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

__all__ = ["AttentionModule", "Neurons", "Report"]


@dataclass
class AttentionModule:
    """One captured attention module: ``weights`` (heads, q_len, k_len) float32, row i of a head the
    attention of ``q_tokens[i]`` over ``k_tokens``."""

    name: str                     # module path, e.g. "decoder.layers.0.cross_attention"
    kind: str                     # "self" | "cross"
    layer: int
    heads: list[int]              # the captured heads' indices
    q_tokens: list[str]
    k_tokens: list[str]
    weights: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Neurons:
    """The most active feed-forward neurons of one layer: ``top``, highest first, each a dict of
    ``neuron``, ``max``, ``values`` / ``normalised`` (one per token) and ``top_tokens``."""

    layer: int
    d_ff: int
    top: list[dict]
    stack: str | None = None      # "encoder": a translator's (the stack over the text given)

    def to_dict(self) -> dict[str, Any]:
        out = {"layer": self.layer, "d_ff": self.d_ff, "top": self.top}
        return {**out, "stack": self.stack} if self.stack is not None else out


@dataclass
class Report:
    """What a model did with one input (see the module doc); the optional parts are None when they
    do not apply to the family."""

    family: str
    text: str
    tokens: dict[str, list[str]]
    prediction: dict | None
    attention: list[AttentionModule]
    logit_lens: list[dict] | None = None
    saliency: dict | None = None
    integrated_gradients: dict | None = None
    neurons: Neurons | None = None
    patch_grid: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (attention weights stay tensors): the parts that apply, in this order."""
        out: dict[str, Any] = {"tokens": self.tokens, "prediction": self.prediction,
                               "attention": [m.to_dict() for m in self.attention]}
        for key in ("logit_lens", "saliency", "integrated_gradients", "neurons", "patch_grid"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_dict() if isinstance(value, Neurons) else value
        return {**out, "family": self.family, "text": self.text}

    def __getitem__(self, key: str) -> Any:
        """``report["tokens"]``: ``report.to_dict()[key]``."""
        return self.to_dict()[key]
