"""Validation scores: lesions found and false are counted on the cleaned-up labels and pooled over cases.

The networks here are real U-Nets whose output layer is set by hand, so that what they predict is known
without training: every body voxel tumor (one lesion covering everything), or no tumor at all.
"""

from __future__ import annotations

import pytest
import torch

from lvt.evaluate.lesions import LesionDetection
from lvt.labels import TUMOR, label_components
from lvt.segment.network import build_network
from lvt.train.config import training_config_from_dict
from lvt.train.data.prepare import prepare_cases
from lvt.train.loop import validate
from lvt.train.validation import lesion_summary

SPACING = 4.0


@pytest.fixture(scope="module")
def phantom_cases(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("validation")
    config = training_config_from_dict({
        "output_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"), "spacing_mm": [SPACING] * 3,
        "patch_size_zyx": [32, 32, 32], "network": {"features_per_stage": [8, 16, 32], "deep_supervision_levels": 2},
        "datasets": [{"name": "ph", "kind": "phantom", "annotated": [1, 1, 1],
                      "phantom": {"count": 1, "seed": 5, "spacing_mm": [SPACING] * 3}}],
        "validation": [{"name": "val", "kind": "phantom", "annotated": [1, 1, 1],
                        "phantom": {"count": 2, "seed": 21, "spacing_mm": [SPACING] * 3}}],
    }, tmp_path, source="test")
    cases, _ = prepare_cases(config.validation, config, skip_bad_cases=False)
    true_lesions = sum(label_components(case.masks()[TUMOR])[1] for case in cases)
    assert true_lesions >= 2  # the phantoms have tumors to find
    return config, cases, true_lesions


def _network_saying(config, liver: float, vessel: float, tumor: float) -> torch.nn.Module:
    """A U-Net whose every voxel gets these sigmoid probabilities."""
    network = build_network(config.network)
    with torch.no_grad():
        network.heads[0].weight.zero_()
        network.heads[0].bias.copy_(torch.logit(torch.tensor([liver, vessel, tumor])))
    return network


def test_one_lesion_over_everything_finds_every_lesion_and_is_one_false_lesion(phantom_cases, one_torch_thread) -> None:
    config, cases, true_lesions = phantom_cases
    scores = validate(_network_saying(config, 0.9, 0.01, 0.9), config, cases, torch.device("cpu"))
    lesions = scores["lesions"]
    assert (lesions["cases"], lesions["true"], lesions["detected"]) == (len(cases), true_lesions, true_lesions)
    assert (lesions["predicted"], lesions["false"]) == (len(cases), len(cases))  # one body-wide lesion per case
    assert (lesions["sensitivity"], lesions["precision"], lesions["f1"]) == (1.0, 0.0, 0.0)


def test_a_network_that_never_says_tumor_misses_every_lesion_and_invents_none(phantom_cases, one_torch_thread) -> None:
    config, cases, true_lesions = phantom_cases
    lesions = validate(_network_saying(config, 0.9, 0.01, 0.01), config, cases, torch.device("cpu"))["lesions"]
    assert (lesions["true"], lesions["detected"], lesions["predicted"], lesions["false"]) == (true_lesions, 0, 0, 0)
    assert (lesions["sensitivity"], lesions["precision"], lesions["f1"]) == (0.0, None, 0.0)


def test_cases_without_tumor_labels_are_left_out_of_the_lesion_counts(phantom_cases, one_torch_thread) -> None:
    config, cases, _ = phantom_cases
    without_tumor = [type(case)(case.name, case.dataset, case.image, case.bits, (True, True, False), case.foreground)
                     for case in cases]
    scores = validate(_network_saying(config, 0.9, 0.01, 0.9), config, without_tumor, torch.device("cpu"))
    assert "lesions" not in scores
    assert scores["cases_per_class"] == {"liver": len(cases), "vessel": len(cases), "tumor": 0}


def test_lesion_counts_are_pooled_over_cases_not_averaged() -> None:
    """Case a: 1 of 1 lesion found, nothing false; case b: 1 of 3 found, 3 of 4 predicted false. Averaging per
    case would give sensitivity (1 + 1/3) / 2 = 0.67; pooled it is 2 / 4."""
    summary = lesion_summary([LesionDetection(1, 1, 1, 1), LesionDetection(3, 1, 4, 1)])
    assert (summary["true"], summary["detected"], summary["predicted"], summary["false"]) == (4, 2, 5, 3)
    assert summary["sensitivity"] == pytest.approx(0.5)
    assert summary["precision"] == pytest.approx(0.4)
    assert summary["f1"] == pytest.approx(2 * 0.5 * 0.4 / 0.9)
