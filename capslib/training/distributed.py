"""Training on several processes with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

    torchrun --standalone --nproc_per_node=4 -m capslib.train --dataset multimnist ...     # one machine, 4 GPUs
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 -m capslib.train ...                              # on each of 2 machines

``torchrun`` starts one process per GPU (or per CPU slot) and tells each its ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` through the environment; :func:`world_from_env` reads them, and
:func:`capslib.training.fit` then:

* joins the process group: NCCL on GPUs, gloo on CPUs;
* cuts every global batch of ``batch_size`` images into ``WORLD_SIZE`` equal shares, one per
  process (so ``batch_size`` must be a multiple of ``WORLD_SIZE``: a ``ValueError`` otherwise).
  Every process draws the same epoch order and the same augmentation for the whole batch from the
  run's seeded generator and keeps its own share, so a run on N processes sees exactly the
  batches of a run on one (the last, incomplete batch of an epoch is dropped);
* wraps the model in ``DistributedDataParallel``, which averages the gradients: the step is the
  global batch's, as on one process, to float rounding;
* agrees every few steps (:data:`capslib.training.hooks.AGREE_EVERY`, not every step: each
  agreement waits for the device) on whether to stop (Ctrl-C, SIGTERM, ``stop_after_batches``)
  or to write a mid-epoch checkpoint, so no process waits for one that left;
* writes checkpoints, ``history.json``, TensorBoard logs and progress from rank 0 only. A
  checkpoint is the plain model's (no ``module.`` prefixes): :func:`capslib.load_checkpoint` and
  ``--resume`` read it as they read any other (every process resumes from the same ``last.pt``,
  so the output folder must be on a file system all processes see).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "world_from_env", "join", "leave", "device_for", "share", "agree", "sum_across"]


@dataclass(frozen=True)
class World:
    """Where this process stands among the processes ``torchrun`` started (one process: the defaults)."""

    rank: int = 0  # this process, 0 .. size - 1; rank 0 writes the files
    size: int = 1  # WORLD_SIZE: processes in all
    local_rank: int = 0  # this process on its machine: the GPU it uses

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    """The :class:`World` that ``torchrun``'s ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` describe."""
    try:
        world = World(
            rank=int(os.environ.get("RANK", 0)),
            size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as err:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them): {err}") from None
    if world.size < 1 or not 0 <= world.rank < world.size:
        raise ValueError(f"expected 0 <= RANK < WORLD_SIZE, got RANK={world.rank}, WORLD_SIZE={world.size}")
    return world


def device_for(world: World, requested: str) -> torch.device:
    """The device of this process: its own GPU (``cuda:LOCAL_RANK``) where CUDA is asked for or
    ``auto`` finds it, else the CPU."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", world.local_rank)
    if requested == "cuda":
        raise ValueError("device 'cuda' asked for, but CUDA is not available")
    return torch.device("cpu")


def join(world: World, device: torch.device) -> bool:
    """Join the process group (NCCL on GPUs, gloo on CPUs) unless already in one; True if joined here."""
    if not world.distributed or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def leave() -> None:
    """Wait for every process, then leave the process group."""
    dist.barrier()
    dist.destroy_process_group()


def share(count: int, world: World) -> slice:
    """This process's share of a global batch of ``count`` images (``count`` a multiple of the world size)."""
    each = count // world.size
    return slice(world.rank * each, (world.rank + 1) * each)


def agree(flags: list[bool], world: World, device: torch.device) -> list[bool]:
    """Each flag True on every process if it is True on any (one all-reduce of ``len(flags)`` numbers)."""
    if not world.distributed:
        return flags
    values = torch.tensor([float(f) for f in flags], device=device)  # (F,)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def sum_across(totals: dict, world: World, device: torch.device) -> dict:
    """``totals`` (numbers by name) summed over all processes."""
    if not world.distributed:
        return totals
    names = sorted(totals)
    values = torch.tensor([float(totals[n]) for n in names], dtype=torch.float64, device=device)  # (K,)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return dict(zip(names, values.tolist(), strict=True))
