"""Patch sampling honours dataset weights and partial annotation; phantoms can be partially labelled."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from lvt.train.config import training_config_from_dict
from lvt.train.data.cache import CachedCase
from lvt.train.data.discovery import discover_cases
from lvt.train.data.loading import load_case
from lvt.train.data.prepare import dataset_weights
from lvt.train.data.specs import DatasetSpec
from lvt.train.sampling import PatchSampler


def _case(name: str, dataset: str, annotated: tuple[bool, bool, bool]) -> CachedCase:
    image = np.full((8, 8, 8), 50, dtype=np.int16)
    bits = np.zeros((8, 8, 8), dtype=np.uint8)
    bits[2:6, 2:6, 2:6] = 0b011
    foreground = tuple(np.argwhere((bits >> k) & 1).astype(np.int32) for k in range(3))
    return CachedCase(name, dataset, image, bits, annotated, foreground)


def test_datasets_are_drawn_by_weight_spread_over_their_cases() -> None:
    cases = [_case(f"a{i}", "a", (True, True, True)) for i in range(3)] + [_case("b0", "b", (True, False, False))]
    sampler = PatchSampler(cases, (4, 4, 4), 0.0, seed=0, dataset_weights={"a": 1.0, "b": 3.0})
    counts = Counter(name[0] for _ in range(400) for name in sampler.sample(5).case_names)
    assert abs(counts["b"] / 2000 - 0.75) < 0.04  # weight 3 of 4, although "a" has three times the cases
    batch = sampler.sample(4)
    assert batch.hu.shape == (4, 1, 4, 4, 4) and batch.class_weights.shape == (4, 3)


def test_training_config_weights_reach_the_sampler(tmp_path: Path) -> None:
    config = training_config_from_dict({
        "output_dir": str(tmp_path),
        "datasets": [
            {"name": "ph", "kind": "phantom", "annotated": [1, 1, 1], "weight": 3.0, "phantom": {"count": 1}},
            {"name": "liver_only", "kind": "phantom", "annotated": [1, 0, 0], "phantom": {"count": 1},
             "synthetic_tumor_variants": 2},
        ],
    }, tmp_path, source="test")
    assert dataset_weights(config.datasets) == {"ph": 3.0, "ph+tumors": 3.0, "liver_only": 1.0,
                                                        "liver_only+tumors": 1.0}


def test_a_partially_annotated_phantom_has_empty_unannotated_classes() -> None:
    spec = DatasetSpec.from_dict({"name": "vessels_only", "kind": "phantom", "annotated": [0, 1, 0],
                                  "phantom": {"count": 1, "seed": 4, "spacing_mm": [6.0, 6.0, 6.0]}}, source="test")
    case = load_case(discover_cases(spec)[0])
    assert case.annotated == (False, True, False)
    assert not case.masks[0].any() and not case.masks[2].any() and case.masks[1].any()
