"""Training on several processes with PyTorch's own engines: DDP and FSDP2, launched by ``torchrun``.

    torchrun --nproc-per-node 8 -m glassformer train lm ... --distributed ddp          # one machine
    torchrun --nnodes 2 --node-rank R --nproc-per-node 8 --rdzv-endpoint HOST:29500 \\
        -m glassformer train lm ... --distributed fsdp                                  # two machines

* ``ddp``: every process holds the whole model; ``DistributedDataParallel`` averages the
  gradients across processes during the backward pass.
* ``fsdp``: ``torch.distributed.fsdp.fully_shard`` (FSDP2) on every block and on the model:
  each process holds a shard of every parameter, gradient and optimiser state; a block's
  parameters are gathered just before it runs.  A model built by :func:`built_on_meta` has no
  weights until it is sharded: then each process materialises only its own rows of each
  parameter (:func:`materialise`), so no process ever holds the whole model.  FSDP gathers
  parameters only around ``forward``: evaluation, which calls a model's other entry points
  (``encode``, ``start_decoding`` ...), runs inside :func:`whole_parameters`, as does RL's sampling
  from the model being trained (the trainer draws such a stream's batches in it).

What the trainer needs from here: the process's rank and the world size (:class:`World`), the
wrapped module, the gradient-synchronisation switch for accumulation (synchronise only on a
step's last micro-batch), a sum across processes, and whole (unsharded) state dicts to save
and load.  The backend is NCCL on CUDA and gloo on a CPU, which is how the tests run two
processes on one machine.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import ConfigError

KINDS = ("ddp", "fsdp")


@dataclass
class World:
    """This process's place among the training processes."""

    kind: str | None = None        # None (one process) | "ddp" | "fsdp"
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    joined: bool = False           # this program's training joined the process group (and leaves it)

    @property
    def main(self) -> bool:
        """The process that logs, evaluates aloud and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.kind is not None and dist.is_available() and dist.is_initialized()


def setup(kind: str | None, device: torch.device) -> tuple[World, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR, ...); returns the world and this process's device (``cuda:LOCAL_RANK`` on GPUs).
    Without ``kind`` (or outside torchrun with a world of one) training runs in this process."""
    if kind is None:
        return World(), device
    if kind not in KINDS:
        raise ConfigError(f"distributed={kind!r} is invalid; choose one of {list(KINDS)} (or none)")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError(f"--distributed {kind} runs under torchrun, which sets RANK and WORLD_SIZE: "
                          f"torchrun --nproc-per-node N -m glassformer train ... --distributed {kind}")
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    joined = not dist.is_initialized()            # a program that made its own group keeps it
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(kind, rank, size, local_rank, joined), device


def wrap(model: nn.Module, world: World, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Place ``model`` on ``device`` (materialising a model built by :func:`built_on_meta`) and return
    (the module to train through, the module that holds the parameters).  For FSDP both are the model
    itself (``fully_shard`` shards it in place; only the shards go to the device); for DDP the first
    is the wrapper."""
    on_meta = any(p.is_meta for p in model.parameters())
    if world.kind == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():               # each Transformer layer is one unit of gathering
            if type(module).__name__ == "TransformerLayer":
                fully_shard(module)
        fully_shard(model)
        if on_meta:
            materialise(model, device)
        return model, model
    if on_meta:
        materialise(model, torch.device("cpu"))      # (drawn on the CPU, as a model built there)
    model = model.to(device)
    if world.kind == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        # A parameter that takes no part in the loss (BERT's pooler under the masked-LM loss) gets no
        # gradient: for a model that says it has some (``unused_in_training``) DDP looks for them after
        # each forward (a walk of the autograd graph) and leaves their gradients empty, as one process
        # does; other models skip that walk.  (``static_graph``, which would look once, fails an
        # internal assertion with ``no_sync``, which accumulation needs.)
        unused = bool(getattr(model, "unused_in_training", False))
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused), model
    return model, model


# -- a model built without weights, then given only this process's shards ---------------------------
_aten = torch.ops.aten
RANDOM_FILLS = {_aten.uniform_, _aten.normal_, _aten.bernoulli_, _aten.random_, _aten.exponential_,
                _aten.log_normal_, _aten.cauchy_, _aten.geometric_}


def built_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device: the model's shapes without its weights, and in ``initial_writes``
    what building it wrote into each parameter (a random fill with the generator's state before it,
    ``zero_`` of a padding row ...), which :func:`materialise` writes again.  The random generator is
    left where building the model on the CPU leaves it."""
    with torch.device("meta"), _Recorded() as recorded:
        model = build()
    names = {p.untyped_storage()._cdata: name for name, p in model.named_parameters()}
    model.initial_writes = [(names[key], *write) for key, *write in recorded.writes if key in names]
    for name, *_, func, args, kwargs, _ in model.initial_writes:
        if any(isinstance(a, Tensor) for a in (*args, *kwargs.values())):
            raise NotImplementedError(f"building the model writes {name} with {func} from a tensor: it cannot "
                                      "be built on the meta device")
    return model


def materialise(model: nn.Module, device: torch.device) -> None:
    """Give a model of :func:`built_on_meta` (sharded or not) storage on ``device`` and the weights it
    has when built on the CPU, by writing again what building it wrote, one parameter at a time: a
    random fill is drawn whole on the CPU from the generator's recorded state, and a process whose
    parameters are shards (DTensors: rows of dimension 0) keeps its rows.  The generator is left as it was."""
    from torch.distributed.tensor import DTensor

    model.to_empty(device=device)
    if not isinstance(next(model.parameters()), DTensor) and hasattr(model, "tie_weights"):
        model.tie_weights()                          # (to_empty gives each module a parameter of its own)
    params = dict(model.named_parameters())
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for name, size, stride, offset, func, args, kwargs, rng in model.initial_writes:
            param = params[name]
            local, start = param, 0                  # local: this process's elements of ``param``, from ``start``
            if isinstance(param, DTensor):           # FSDP's rows: chunks of ceil(rows / processes)
                mesh, rows = param.device_mesh, param.shape[0]
                local = param._local_tensor
                start = mesh.get_local_rank() * -(-rows // mesh.size()) * (param.numel() // max(rows, 1))
            whole = size == param.shape and offset == 0 and stride == param.stride()
            if whole and rng is None:                # elementwise (ones_, zero_ ...): on this process's part
                func(local, *args, **kwargs)
                continue
            if rng is not None:                      # the fill drawn as the build drew it
                torch.set_rng_state(rng)
                values = torch.empty_strided(size, stride)
                func(values, *args, **kwargs)
                if whole:
                    local.view(-1).copy_(values.view(-1)[start:start + local.numel()])
                    continue
            # a part of the parameter (a padding row): the elements of it that this process holds
            where = torch.arange(param.numel()).as_strided(size, stride, offset) - start
            mine = (where >= 0) & (where < local.numel())
            if rng is None:
                values = torch.zeros(size, dtype=local.dtype)     # (the elements others hold: not kept)
                values[mine] = local.view(-1)[where[mine]].cpu()
                func(values, *args, **kwargs)
            local.view(-1)[where[mine]] = values[mine].to(local.device)
    for module in model.modules():                   # the tables computed, not saved (sinusoids, rotary)
        if hasattr(module, "reset_buffers"):
            module.reset_buffers(device)
    del model.initial_writes


class _Recorded(TorchDispatchMode):
    """While a model is built on the meta device: ``writes`` lists each in-place operation on a meta
    tensor as (its storage, the shape, strides and offset it writes, the operation and its other
    arguments, the CPU generator's state before a random fill, else None).  A random fill also draws as
    many numbers as the real fill would (into a scratch tensor), so that the generator ends where
    building on the CPU leaves it.  ``nn.init.trunc_normal_``, which does nothing to a meta tensor (on
    the CPU it draws until every number is in range), is recorded as one random fill."""

    def __init__(self):
        super().__init__()
        self.writes, self.storages = [], []

    def __enter__(self):
        self.trunc_normal = nn.init.trunc_normal_
        nn.init.trunc_normal_ = lambda tensor, *args, **kwargs: self.record(self.trunc_normal, tensor, args, kwargs)
        return super().__enter__()

    def __exit__(self, *exc):
        nn.init.trunc_normal_ = self.trunc_normal
        return super().__exit__(*exc)

    def record(self, fill, target: Tensor, args, kwargs, random: bool = True) -> Tensor:
        rng = None
        if random:
            rng = torch.get_rng_state()
            fill(torch.empty_strided(target.shape, target.stride(), device="cpu"), *args, **kwargs)
        self.storages.append(target.untyped_storage())    # (kept: no other storage takes its address)
        self.writes.append((target.untyped_storage()._cdata, target.shape, target.stride(), target.storage_offset(),
                            fill, args, kwargs, rng))
        return target

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else None
        if isinstance(target, Tensor) and target.is_meta and func.overloadpacket.__name__.endswith("_"):
            self.record(func, target, args[1:], kwargs, func.overloadpacket in RANDOM_FILLS)
        return func(*args, **kwargs)


@contextlib.contextmanager
def whole_parameters(model: nn.Module, world: World):
    """A context in which every parameter of ``model`` is whole on every process: under FSDP,
    gathered on entry and sharded again on exit (FSDP gathers a block's parameters only around its
    ``forward``; evaluation also calls ``encode``, ``start_decoding``, a layer's ``project_memory``).
    Every process enters it together."""
    if world.kind != "fsdp":
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    blocks = [m for m in units if m is not model]
    # FSDP settles which unit is the root at the model's first forward; before one (RL samples before its
    # first step), a block's forward would make that block a root of its own: settle it now.
    model._get_fsdp_state()._lazy_init()
    for unit in units:
        unit.unshard()
    for block in blocks:                             # (the model itself is never resharded after forward)
        block.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for block in blocks:
            block.set_reshard_after_forward(True, recurse=False)
        for unit in units:
            unit.reshard()


def gradient_sync(module: nn.Module, world: World, enabled: bool):
    """A context in which the backward pass does (``enabled``) or does not average gradients
    across processes: accumulation synchronises only on a step's last micro-batch."""
    if world.kind == "ddp" and not enabled:
        return module.no_sync()
    if world.kind == "fsdp":
        module.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def all_sum(tensor: Tensor, world: World) -> Tensor:
    """The sum of ``tensor`` over the processes (itself with one process); no host synchronisation."""
    if world.active:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def gather(obj, world: World) -> list:
    """``obj`` of every process, in rank order (picklable objects made by this program only)."""
    if not world.active:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def full_state_dict(model: nn.Module, world: World) -> dict[str, Tensor]:
    """The model's whole state dict on the CPU (gathered from the shards under FSDP; every
    process must call this together)."""
    if world.kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        # A tensor whose rows did not divide between the processes is a view of a padded buffer, which
        # safetensors refuses to write: it gets storage of its own.
        return {k: v if v.untyped_storage().nbytes() == v.nbytes else v.clone() for k, v in state.items()}
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, world: World) -> dict:
    """The optimiser's state to save (whole, keyed by parameter name under FSDP)."""
    if world.kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, world: World) -> None:
    if world.kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def shutdown(world: World) -> None:
    """Leave the process group that :func:`setup` joined (one the calling program made stays)."""
    if world.active and world.joined:
        dist.destroy_process_group()


__all__ = ["KINDS", "World", "setup", "wrap", "built_on_meta", "materialise", "whole_parameters", "gradient_sync", "all_sum", "barrier", "gather",
           "full_state_dict", "optimizer_state", "load_optimizer_state", "shutdown"]
