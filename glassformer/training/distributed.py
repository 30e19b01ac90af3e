"""Training on several processes with PyTorch's own engines: DDP and FSDP2, launched by ``torchrun``.

    torchrun --nproc-per-node 8 -m glassformer train lm ... --distributed ddp          # one machine
    torchrun --nnodes 2 --node-rank R --nproc-per-node 8 --rdzv-endpoint HOST:29500 \\
        -m glassformer train lm ... --distributed fsdp                                  # two machines

* ``ddp``: every process holds the whole model; ``DistributedDataParallel`` averages the
  gradients across processes during the backward pass.
* ``fsdp``: ``torch.distributed.fsdp.fully_shard`` (FSDP2) on every block and on the model:
  each process holds a shard of every parameter, gradient and optimiser state; a block's
  parameters are gathered just before it runs.  The model is sharded where it was built (the
  CPU) and only the shards go to the device, one block at a time, so no process ever holds the
  whole model on its device.  FSDP gathers parameters only around ``forward``: evaluation, which
  calls a model's other entry points (``encode``, ``start_decoding`` ...), runs inside
  :func:`whole_parameters`.

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

import torch
import torch.distributed as dist
from torch import Tensor, nn

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
    """Place ``model`` on ``device`` and return (the module to train through, the module that holds
    the parameters).  For FSDP both are the model itself (``fully_shard`` shards it in place and
    moves only the shards to the device); for DDP the first is the wrapper."""
    if world.kind == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():               # each Transformer layer is one unit of gathering
            if type(module).__name__ == "TransformerLayer":
                fully_shard(module)
        fully_shard(model)
        return model, model
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


__all__ = ["KINDS", "World", "setup", "wrap", "whole_parameters", "gradient_sync", "all_sum", "barrier", "gather",
           "full_state_dict", "optimizer_state", "load_optimizer_state", "shutdown"]
