"""Distributed setup from the environment ``torchrun`` sets, or by spawning.

* Under ``torchrun`` (``--nproc_per_node``, ``--nnodes``, any rendezvous) the
  variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
  ``MASTER_PORT`` are set and every process calls :func:`init_distributed`.
* ``train.py --gpus=0,1`` (or ``--ngpus=2``) on one machine, without torchrun,
  spawns one process per GPU with :func:`spawn` and sets the same variables.
* NCCL on GPUs, gloo on CPUs. Collectives time out after ``timeout`` so that a
  dead peer makes the others fail with an error instead of hanging forever.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init_distributed(device_type: str, timeout_minutes: float = 10.0, cuda_index: int | None = None) -> DistInfo:
    """Join the process group described by the environment (no-op for one process).

    On CUDA the process uses device ``cuda_index`` (default: its local rank), selected with
    ``torch.cuda.set_device``; ``CUDA_VISIBLE_DEVICES`` is left as the launcher or scheduler set it."""
    if device_type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA device is available; use --device cpu")
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device_type == "cuda":
        device = torch.device("cuda", local_rank if cuda_index is None else cuda_index)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                timeout=timedelta(minutes=timeout_minutes),
                                device_id=device if device_type == "cuda" else None)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` for one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers on every rank, in place. DDP broadcasts the parameters at construction but, with
    ``broadcast_buffers=False``, not the buffers; a buffer the initialisation draws at random (DucoNet's and
    iSSAM's official init turns the attention's blur kernel into noise) would otherwise differ per rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def average_buffers(module: torch.nn.Module) -> None:
    """Replace every floating-point buffer (BatchNorm running statistics) by its mean over the ranks, in place.

    DDP runs with ``broadcast_buffers=False``, so each rank's running statistics follow its own data;
    averaging them before validating and saving makes every rank validate exactly the weights that are
    saved. (Training forwards use batch statistics, so this changes no training step.)"""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world)


def any_rank(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise "is this flag set on any rank" (one small all-reduce)."""
    if dist.is_available() and dist.is_initialized():
        flags = flags.clone()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned_entry(local_rank: int, world_size: int, port: int, fn: Callable[..., None], args: tuple) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    fn(*args)


def spawn(world_size: int, fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(*args)`` in ``world_size`` local processes with the torchrun environment set.

    If one process fails, the others are terminated and the error is re-raised.
    """
    mp.spawn(_spawned_entry, args=(world_size, _free_port(), fn, args), nprocs=world_size, join=True)
