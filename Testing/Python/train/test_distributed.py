"""The network as a torchrun job runs it: batch norm synchronised across processes on GPUs."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from lvt.segment.network import NetworkConfig, build_network
from lvt.train.distributed import DistributedRun, prepare_for_ddp, synchronise_batch_norm


def _network(norm: str) -> nn.Module:
    return build_network(NetworkConfig(features_per_stage=(4, 8), deep_supervision_levels=1, norm=norm))


def test_a_distributed_gpu_run_synchronises_batch_norm_and_keeps_the_weight_names() -> None:
    network = _network("batch")
    names = set(network.state_dict())
    converted = synchronise_batch_norm(network, True, torch.device("cuda"))
    norms = [m for m in converted.modules() if isinstance(m, (nn.BatchNorm3d, nn.SyncBatchNorm))]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert set(converted.state_dict()) == names
    _network("batch").load_state_dict(converted.state_dict())  # a saved model loads without DDP


@pytest.mark.parametrize(("distributed", "norm", "device"), [(False, "batch", "cuda"), (True, "instance", "cuda"),
                                                             (True, "batch", "cpu")])
def test_no_synchronisation_in_one_process_with_instance_norm_or_on_cpu(
        distributed: bool, norm: str, device: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        converted = synchronise_batch_norm(_network(norm), distributed, torch.device(device))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in converted.modules())
    assert ("cannot be synchronised" in caplog.text) == (device == "cpu")


def test_one_process_trains_the_network_itself() -> None:
    network = _network("batch")
    assert prepare_for_ddp(network, DistributedRun(), torch.device("cpu")) == (network, network)
