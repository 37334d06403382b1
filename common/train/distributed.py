"""Processes started by ``torchrun``: setup, gradient reduction, gathering results."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils._pytree import tree_map

from common.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``rank`` of ``world`` processes, computing on ``device``."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 writes files, logs and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun), before any setup."""
    return int(os.environ.get("RANK", "0"))


#: what gloo's and NCCL's errors say when the process at the other end has gone
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "gloo/transport", "NCCL")


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process of the torchrun
    job died (killed, crashed, out of memory): this process cannot go on, but is not at
    fault itself."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or not isinstance(error, RuntimeError):
        return False
    return isinstance(error, dist.DistError) or any(s in str(error) for s in _PEER_GONE)


def lost_peer_message() -> str:
    """The one line a surviving process says when another died under it."""
    return (
        f"rank {launched_rank()} stopped: another process of this torchrun job died (torchrun's "
        "report after this line says which and why); the run directory keeps its last "
        "checkpoint: rerun the same torchrun command to resume"
    )


def setup(device: str = "auto") -> DistInfo:
    """Reads torchrun's environment; joins the process group (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = launched_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, dev)


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``train.device`` as a device: ``auto`` is CUDA when one is visible, else the CPU."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def teardown() -> None:
    """Leaves the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(global_batch: int, world: int) -> int:
    """The per-process share of ``train.batch_size``; it must divide evenly."""
    if global_batch % world:
        raise UserError(
            f"train.batch_size={global_batch} does not split evenly over {world} processes: "
            f"use a multiple of {world}"
        )
    return global_batch // world


def clip_(grads: list[Tensor], max_norm: float | None) -> None:
    """Scales ``grads`` so their joint 2-norm is at most ``max_norm`` (no host sync)."""
    if not grads or max_norm is None:
        return
    norm = torch.nn.utils.get_total_norm(grads)
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef.to(grads[0].device))


def all_reduce_mean_(tensors: list[Tensor], world: int) -> None:
    """Averages ``tensors`` over processes in one all-reduce of a flat buffer."""
    if world <= 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    parts = flat.split([t.numel() for t in tensors])
    torch._foreach_copy_(tensors, [p.view_as(t) for p, t in zip(parts, tensors, strict=True)])


def grad_hook(world: int):
    """The hook a sharpness-aware optimizer calls before its base step (see
    ``SharpnessAwareOptimizer.grad_hook``): one all-reduce of everything the update uses.
    The optimizer's own ``max_grad_norm`` then clips the reduced gradient."""

    def hook(grads: list[Tensor], extra: list[Tensor]) -> None:
        all_reduce_mean_(grads + extra, world)

    return hook


def gather(obj: Any, world: int) -> list[Any]:
    """Every process's ``obj`` (tensors moved to CPU), in rank order, on every process."""
    obj = tree_map(lambda t: t.detach().cpu() if isinstance(t, Tensor) else t, obj)
    if world <= 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every process."""
    if world <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module: torch.nn.Module, world: int) -> None:
    """Copies rank 0's parameters and buffers to every process."""
    if world > 1:
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
