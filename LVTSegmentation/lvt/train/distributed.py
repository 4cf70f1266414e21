"""Which process of a ``torchrun`` job this is (the training loop and the cache builder both need to know),
and the network as DDP runs it.

Only rank 0 writes files; the others wait at a barrier until the cache (or the final model) exists.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lvt.segment.network import UNet

logger = logging.getLogger(__name__)


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


def synchronise_batch_norm(network: UNet, distributed: bool, device: torch.device) -> UNet:
    """Batch norm with the statistics of the global batch (SyncBatchNorm) when the run is distributed.

    Each process sees only its share of the batch; without this, N processes would normalise by
    N different small-batch statistics and no longer follow the one-process run. The state dict
    keeps its keys, so the saved weights load into a plain batch-norm network. PyTorch synchronises
    only GPU tensors: on CPU (gloo) batch norm stays per process, with a warning.
    """
    if not distributed or network.config.norm != "batch":
        return network
    if device.type != "cuda":
        logger.warning("batch norm cannot be synchronised across CPU processes: each keeps its own statistics")
        return network
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)


def prepare_for_ddp(network: UNet, ddp: DistributedRun, device: torch.device) -> tuple[UNet, torch.nn.Module]:
    """The network (for its weights) and the module the training step calls: DDP's wrapper in a torchrun job."""
    if ddp.world_size <= 1:
        return network, network
    network = synchronise_batch_norm(network, True, device)
    return network, torch.nn.parallel.DistributedDataParallel(
        network, device_ids=[device.index] if device.type == "cuda" else None)
