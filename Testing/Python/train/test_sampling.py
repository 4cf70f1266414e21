"""Patch sampling honours dataset weights and partial annotation; phantoms can be partially labelled."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lvt.labels import apply_hierarchy
from lvt.train.config import training_config_from_dict
from lvt.train.data.cache import CachedCase, pack_bits
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


def _partial_case(annotated: tuple[bool, bool, bool], seed: int) -> CachedCase:
    """A 40^3 case as the cache writes it: liver everywhere the hierarchy puts it, small vessel and tumor blobs."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 40, 40, 40), dtype=bool)
    masks[0, 5:35, 5:35, 5:35] = True
    for k in (1, 2):
        for centre in rng.integers(8, 32, size=(3, 3)):
            masks[(k, *tuple(slice(c - 1, c + 1) for c in centre))] = True
    bits = pack_bits(apply_hierarchy(masks))
    foreground = tuple(np.argwhere((bits >> k) & 1).astype(np.int32) for k in range(3))
    return CachedCase(f"case{seed}", "d", np.zeros((40, 40, 40), dtype=np.int16), bits, annotated, foreground)


@pytest.mark.parametrize("annotated", [(True, True, True), (False, True, True), (True, False, False),
                                       (False, False, True)])
def test_with_p_1_every_patch_is_centred_on_foreground_of_an_annotated_class(
    annotated: tuple[bool, bool, bool]
) -> None:
    cases = [_partial_case(annotated, seed) for seed in range(3)]
    context = (12, 12, 12)
    batch = PatchSampler(cases, context, 1.0, seed=1).sample(300)
    centre = tuple(c // 2 for c in context)  # the sampled voxel sits at size // 2 of its box
    wanted = sum(1 << k for k in range(3) if annotated[k])
    assert all(int(bits[centre]) & wanted for bits in batch.bits)
    for k in (1, 2):  # the small classes are hit only when they are the target: each annotated one is
        hits = np.mean([(int(bits[centre]) >> k) & 1 for bits in batch.bits])
        assert hits > 0.2 if annotated[k] else hits < 0.05


def test_an_unannotated_class_is_never_the_foreground_target() -> None:
    """Task08-like: liver bits come from the hierarchy but liver is not annotated; no centre lands on liver only."""
    case = _partial_case((False, True, True), seed=4)
    batch = PatchSampler([case], (6, 6, 6), 1.0, seed=2).sample(400)
    centre_bits = np.array([int(bits[3, 3, 3]) for bits in batch.bits])
    liver_only = int((case.bits == 0b001).sum())
    assert liver_only > 20 * int((case.bits > 0b001).sum())  # liver alone dominates: a liver target would show
    assert np.all(centre_bits & 0b110)
    assert not np.any(batch.class_weights[:, 0])


def test_a_case_without_annotated_foreground_falls_back_to_uniform_centres() -> None:
    case = _partial_case((False, False, False), seed=5)
    batch = PatchSampler([case], (4, 4, 4), 1.0, seed=3).sample(400)
    on_liver = np.mean([int(bits[2, 2, 2]) & 1 for bits in batch.bits])
    assert abs(on_liver - (case.bits & 1).mean()) < 0.08  # uniform: liver as often as it fills the volume
