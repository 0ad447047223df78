"""Process-group helpers for ``torchrun``: which share of the work this process takes."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Rank:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 when run alone)."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Rank:
    """Read RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them."""
    env = os.environ
    return Rank(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init(device: str) -> Rank:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    r = current()
    if r.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return r


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str, r: Rank) -> str:
    """``cuda`` becomes ``cuda:<local rank>`` so each process drives its own GPU."""
    return f"cuda:{r.local_rank}" if device == "cuda" else device
