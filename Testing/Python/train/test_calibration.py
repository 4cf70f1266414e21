"""A decision threshold moved into the output bias: the shifted network's 0.5 is the old network's threshold."""

from __future__ import annotations

import pytest
import torch

from lvt.segment.network import build_network
from lvt.segment.network_config import NetworkConfig
from lvt.train.calibration import logit, shift_decision_threshold

CONFIG = NetworkConfig(features_per_stage=(4, 8, 16), deep_supervision_levels=2)


def _pair(head: str = "sigmoid"):
    torch.manual_seed(0)
    original = build_network(NetworkConfig(**{**CONFIG.to_dict(), "head": head})).eval()
    shifted = build_network(original.config).eval()
    shifted.load_state_dict(original.state_dict())
    return original, shifted


@pytest.mark.parametrize("quantile", [0.1, 0.5, 0.9])
def test_the_shifted_network_calls_tumor_where_the_original_was_above_the_threshold(quantile, one_torch_thread):
    """The threshold is a quantile of the original's tumor probabilities, so that it splits the voxels."""
    original, shifted = _pair()
    x = torch.randn(1, 1, 16, 16, 16) * 3.0
    with torch.no_grad():
        before = torch.sigmoid(original(x))
    threshold = float(torch.quantile(before[0, 2].flatten(), quantile))
    shift_decision_threshold(shifted, "tumor", threshold)
    with torch.no_grad():
        after = torch.sigmoid(shifted(x))
    tumor_before, tumor_after = before[0, 2], after[0, 2]
    assert 0 < int((tumor_before > threshold).sum()) < tumor_before.numel()
    assert torch.equal(tumor_after > 0.5, tumor_before > threshold)
    assert torch.equal(after[0, :2], before[0, :2])  # liver and vessel untouched


def test_a_threshold_of_one_half_changes_nothing_and_bad_thresholds_are_refused() -> None:
    original, shifted = _pair()
    shift_decision_threshold(shifted, "vessel", 0.5)
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), shifted.state_dict().values(),
                                                  strict=True))
    assert logit(0.75) == pytest.approx(1.0986, abs=1e-4)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            shift_decision_threshold(shifted, "tumor", bad)
    with pytest.raises(ValueError, match="unknown class"):
        shift_decision_threshold(shifted, "spleen", 0.7)


def test_a_softmax_network_has_no_per_class_threshold() -> None:
    _, softmax = _pair("softmax")
    with pytest.raises(ValueError, match="sigmoid"):
        shift_decision_threshold(softmax, "tumor", 0.7)
