"""Which process of a ``torchrun`` job this is: the training loop and the cache builder both need to know.

Only rank 0 writes files; the others wait at a barrier until the cache (or the final model) exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedRun:
    """This process's place in the job: a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process of the job (nothing to wait for in a single process)."""
        if self.world_size > 1:
            dist.barrier()


def init_distributed(device_name: str) -> tuple[DistributedRun, torch.device]:
    """Join a torchrun process group when WORLD_SIZE > 1 (NCCL on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if world_size <= 1:
        return DistributedRun(), torch.device("cuda" if use_cuda else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistributedRun(dist.get_rank(), world_size), torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
