"""LoRA: low-rank adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

A frozen linear layer W (d_out × d_in) learns a change of rank r instead of a new W:

    y = x Wᵀ + b + scale · dropout(x) Aᵀ Bᵀ,      A: (r, d_in),  B: (d_out, r),  scale = α / r

A starts random and B at zero, so at initialisation the adapted model *is* the base model; only
A and B train (r · (d_in + d_out) numbers instead of d_in · d_out).  Afterwards B·A·scale can be
folded into W (:func:`merge_lora`), and the model costs nothing more to run than before.

Our attention projects queries, keys and values with ONE fused ``qkv_proj`` ([Q; K; V] along its
output) and a gated feed-forward's ``linear1`` holds [gate; up].  A target names a *part* of such a
layer ("q", "v", "gate" ...), and each part gets its own A and B that change only its rows of the
output — exactly what separate ``q_proj`` / ``v_proj`` LoRAs do in ``peft``.  In one layer the parts'
A matrices are stacked and their B matrices laid on a block diagonal, so the whole update is two
small matrix products:

    qkv_proj, targets q and v:     A = [A_q; A_v]  (2r, d_model)
                                   B = ⎡B_q  0 ⎤  rows of Q
                                       ⎢ 0   0 ⎥  rows of K (not adapted)
                                       ⎣ 0  B_v⎦  rows of V          (d_model + 2·d_kv, 2r)

Targets: "q", "k", "v" (parts of ``qkv_proj``, or cross-attention's ``q_proj`` and ``kv_proj``),
"out_proj", "linear1" and "linear2" (feed-forward; "gate" and "up" are the parts of a gated
``linear1``), a module name ("qkv_proj" = its every part), a glob over the full name
("decoder.layers.0.*"), or "all-linear": every linear layer but the output projection (``lm_head``),
as in ``peft``.

Defaults, and where they differ from ``peft``'s (r = 8, lora_alpha = 8, dropout 0; targets chosen
per architecture: q_proj and v_proj for Llama, but GPT-2's whole fused ``c_attn``, keys included):

* r = 8 and dropout 0, as there.
* targets q and v on every architecture, GPT-2 included: the query and value projections, which the
  LoRA paper found the best pair for a fixed number of parameters (§7.1); peft adapts GPT-2's keys
  too only because its c_attn is one layer, which ours need not be.
* α = 16, i.e. scale α/r = 2 instead of peft's 1.  B starts at zero, so the scale acts as a larger
  step size on the adapters alone; α = 2r is the common rule of thumb of LoRA fine-tuning recipes
  (the paper itself sets α to the first r it tries and does not tune it).  Set ``alpha = r`` for
  peft's behaviour.

``rslora`` (Kalajdzievski 2023) divides by √r instead of r, so that raising r does not shrink the update.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError
from .attention import MultiHeadAttention
from .feedforward import FeedForward

ALL_LINEAR = "all-linear"
OUTPUT_LAYERS = ("lm_head",)            # never adapted, also not by "all-linear" (as peft leaves the output alone)


@dataclass(frozen=True)
class LoRAConfig:
    """What to adapt and how: rank ``r``, ``alpha`` (scale α/r, or α/√r with ``rslora``), dropout on
    the adapter's input, and the target layers (see the module's docstring)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")
    rslora: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):               # "q,v" as a convenience
            object.__setattr__(self, "targets", tuple(t.strip() for t in self.targets.split(",")))
        else:
            object.__setattr__(self, "targets", tuple(self.targets))
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoRA rank r={self.r!r} is invalid; it must be a whole number ≥ 1 (e.g. 8)")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0 \
                or not math.isfinite(self.alpha):
            raise ConfigError(f"LoRA alpha={self.alpha!r} is invalid; it must be a number > 0 (e.g. 16)")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout={self.dropout!r} is invalid; it must be in [0, 1) (e.g. 0.05)")
        if not self.targets or not all(isinstance(t, str) and t.strip() for t in self.targets):
            raise ConfigError(f"LoRA targets={list(self.targets)!r} are invalid; name at least one layer "
                              f"(e.g. q,v) or {ALL_LINEAR}")
        if not isinstance(self.rslora, bool):
            raise ConfigError(f"LoRA rslora={self.rslora!r} is invalid; it must be true or false")

    @property
    def scale(self) -> float:
        """The factor on B·A: α / r, or α / √r with rsLoRA."""
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoRAConfig":
        """The inverse of :meth:`to_dict`; an unknown or bad field is a :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"LoRA settings must be a JSON object, not {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown LoRA setting(s) {unknown}; valid ones are {known}")
        return cls(**data)


# ------------------------------------------------------------------------------------------------
# the adapted layer


class LoRALinear(nn.Linear):
    """A linear layer (its own ``weight`` and ``bias``, the base's, frozen) with low-rank updates
    of some of its output rows: ``parts`` maps a name to the rows (first, end) it adapts, each with
    its own ``lora_A[name]`` (r, d_in) and ``lora_B[name]`` (rows, r).

    It *is* an ``nn.Linear`` with the base's parameters, so the model's state-dict keys of the base
    stay as they were (``...qkv_proj.weight``) and the adapters sit beside them
    (``...qkv_proj.lora_A.q``)."""

    def __init__(self, base: nn.Linear, parts: dict[str, tuple[int, int]], r: int, scale: float, dropout: float):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias          # the base's own Parameters, not copies
        self.parts, self.r, self.scale = dict(parts), r, scale
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.ParameterDict({name: nn.Parameter(torch.empty(r, self.in_features, **kw)) for name in parts})
        self.lora_B = nn.ParameterDict({name: nn.Parameter(torch.zeros(end - first, r, **kw))
                                        for name, (first, end) in parts.items()})
        for a in self.lora_A.values():                           # as peft (and nn.Linear) initialise a matrix
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.disabled = False

    def factors(self, first: int = 0, end: int | None = None) -> tuple[Tensor, Tensor]:
        """The update of rows [first, end) as one pair: A (k·r, d_in) of the k parts inside those rows
        stacked, B (end - first, k·r) their B matrices on a block diagonal (zero rows where no part
        adapts), so that B·A·scale is the change of ``weight[first:end]``."""
        end = self.out_features if end is None else end
        inside = sorted((rows, name) for name, rows in self.parts.items() if first <= rows[0] and rows[1] <= end)
        blocks, at = [], first
        for (start, stop), name in inside:
            if start > at:                                       # rows between parts: no update
                blocks.append(self.lora_B[name].new_zeros(start - at, 0))
            blocks.append(self.lora_B[name])
            at = stop
        if end > at and blocks:
            blocks.append(blocks[0].new_zeros(end - at, 0))
        names = [name for _, name in inside]
        if len(names) == 1 and len(blocks) == 1:                 # one part over all the rows: no copies
            return self.lora_A[names[0]], self.lora_B[names[0]]
        return torch.cat([self.lora_A[n] for n in names]), torch.block_diag(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., d_in) -> (..., d_out) = x Wᵀ + b + scale · dropout(x) Aᵀ Bᵀ."""
        y = F.linear(x, self.weight, self.bias)
        if self.disabled:
            return y
        a, b = self.factors()
        h = F.linear(self.lora_dropout(x), a)                                 # (..., k·r)
        # y + scale · h Bᵀ as one fused multiply-add over the flattened batch
        return torch.addmm(y.reshape(-1, y.shape[-1]), h.reshape(-1, h.shape[-1]), b.t(),
                           alpha=self.scale).view(y.shape)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight holds W + scale · B·A (the same Parameter, updated)."""
        with torch.no_grad():
            a, b = self.factors()
            self.weight += self.scale * (b @ a)
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        plain.weight, plain.bias = self.weight, self.bias
        return plain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lora r={self.r}, scale={self.scale:g}, parts={list(self.parts)}"


# ------------------------------------------------------------------------------------------------
# where adapters can go


@dataclass(frozen=True)
class Site:
    """One adaptable piece: the linear ``module`` (its full name), a part ``part`` of its rows."""

    module: str
    short: str          # the module's own name: "qkv_proj", "out_proj", "linear1" ...
    part: str           # the target that names it: "q", "out_proj", "gate" ...
    rows: tuple[int, int]

    @property
    def name(self) -> str:
        return self.module if self.part == self.short else f"{self.module}.{self.part}"


def _linear_parts(parent: nn.Module, short: str, linear: nn.Linear) -> list[tuple[str, tuple[int, int]]]:
    """The named row ranges of a linear layer: q/k/v of a fused attention projection, gate/up of a
    gated feed-forward's first layer, else the whole layer under its own name."""
    if isinstance(parent, MultiHeadAttention):
        d_q, d_kv = parent.d_model, parent.n_kv_heads * parent.d_head
        if short == "qkv_proj":
            return [("q", (0, d_q)), ("k", (d_q, d_q + d_kv)), ("v", (d_q + d_kv, d_q + 2 * d_kv))]
        if short == "q_proj":
            return [("q", (0, d_q))]
        if short == "kv_proj":
            return [("k", (0, d_kv)), ("v", (d_kv, 2 * d_kv))]
    if isinstance(parent, FeedForward) and parent.gated and short == "linear1":
        half = linear.out_features // 2
        return [("gate", (0, half)), ("up", (half, 2 * half))]
    return [(short, (0, linear.out_features))]


def adaptable(model: nn.Module) -> list[Site]:
    """Every adaptable piece of ``model``'s linear layers, in the model's order, the output layer left out."""
    modules = dict(model.named_modules())
    sites = []
    for name, module in modules.items():
        if not isinstance(module, nn.Linear) or name.rpartition(".")[2] in OUTPUT_LAYERS:
            continue
        parent_name, _, short = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        sites += [Site(name, short, part, rows) for part, rows in _linear_parts(parent, short, module)]
    return sites


def _matches(target: str, site: Site) -> bool:
    return target in (ALL_LINEAR, site.part, site.short) or fnmatch.fnmatchcase(site.name, target)


def _choices(sites: list[Site]) -> list[str]:
    return list(dict.fromkeys([s.part for s in sites] + [s.short for s in sites if s.short != s.part]))


def add_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap the linear layers that ``config.targets`` name in :class:`LoRALinear`, in place; freeze
    every base parameter, so only the adapters train.  Returns the adapted pieces' full names
    ("decoder.layers.0.self_attention.qkv_proj.q", ...).  A target that matches nothing is a
    :class:`ConfigError` naming it and the choices."""
    if has_lora(model):
        raise ConfigError("this model already has LoRA adapters; merge them (merge_lora) before adding new ones")
    sites = adaptable(model)
    family = getattr(getattr(model, "config", None), "family", type(model).__name__)
    if not sites:
        raise ConfigError(f"this {family} model has no linear layers for LoRA")
    for target in config.targets:
        if not any(_matches(target, s) for s in sites):
            raise ConfigError(f"LoRA target {target!r} (--lora-targets) matches no linear layer of this {family} "
                              f"model; choose among: {', '.join(_choices(sites))}, {ALL_LINEAR}, or a glob over "
                              f"the full names (e.g. {sites[0].name.rpartition('.')[0]}.*)")
    chosen = [s for s in sites if any(_matches(t, s) for t in config.targets)]
    for p in model.parameters():
        p.requires_grad_(False)
    modules = dict(model.named_modules())
    for module_name in dict.fromkeys(s.module for s in chosen):
        parent_name, _, short = module_name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        parts = {s.part: s.rows for s in chosen if s.module == module_name}
        setattr(parent, short, LoRALinear(modules[module_name], parts, config.r, config.scale, config.dropout))
    return [s.name for s in chosen]


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """(full name, layer) of every adapted linear layer of ``model``."""
    return ((name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear))


def has_lora(model: nn.Module) -> bool:
    return any(True for _ in lora_layers(model))


@contextlib.contextmanager
def adapters_disabled(model: nn.Module):
    """Inside, ``model`` computes exactly what its base computes (the adapters skipped, nothing copied):
    the reference model of DPO and of RL's KL penalty at no extra memory."""
    layers = [m for _, m in lora_layers(model)]
    before = [m.disabled for m in layers]
    for m in layers:
        m.disabled = True
    try:
        yield model
    finally:
        for m, was in zip(layers, before):
            m.disabled = was


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W += scale · B·A), put plain ``nn.Linear`` layers back
    and make every parameter trainable again: a model like any other, as fast as the base.  Returns
    ``model`` (changed in place)."""
    for name, layer in list(lora_layers(model)):
        parent_name, _, short = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, short, layer.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapters' tensors alone, by their names in ``model.state_dict()`` (``...lora_A.q``)."""
    return {f"{name}.{kind}.{part}": p.detach() for name, layer in lora_layers(model)
            for kind in ("lora_A", "lora_B") for part, p in getattr(layer, kind).items()}


def load_lora_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy ``state`` (from :func:`lora_state_dict`) into ``model``'s adapters: every adapter tensor
    present with its shape, nothing else, or a :class:`CheckpointError` naming the first difference."""
    own = dict(lora_state_dict(model).items())
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"the LoRA weights do not match this model's adapters: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise CheckpointError(f"LoRA tensor {name!r} has shape {list(tensor.shape)} but this model's adapter "
                                  f"has {list(own[name].shape)}; the adapter belongs to another base model")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameters, shared (tied) tensors counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


__all__ = ["LoRAConfig", "LoRALinear", "Site", "adaptable", "add_lora", "adapters_disabled", "merge_lora", "has_lora",
           "lora_layers", "lora_state_dict", "load_lora_state_dict", "trainable_parameters", "ALL_LINEAR"]
