"""Decoding by the model's target kind (ML / MLx sigmoid 0.5, MC argmax) and the clean-up that follows."""

from __future__ import annotations

import numpy as np
import pytest

from lvt.image import Image
from lvt.labels import BACKGROUND_LABEL, LIVER_LABEL, TUMOR_LABEL, VESSEL_LABEL
from lvt.segment.postprocess import (
    PostprocessConfig,
    decode_masks,
    liver_region,
    postprocess,
    whole_liver_mask,
)


def _foreground(*voxels: tuple[float, float, float]) -> np.ndarray:
    """(3, 1, 1, N) float32 (liver, vessel, tumor) probabilities, one tuple per voxel."""
    return np.asarray(voxels, dtype=np.float32).T[:, None, None, :]


def test_mc_decodes_by_argmax_over_background_and_the_classes() -> None:
    # softmax (background, liver, vessel, tumor) per voxel; the predictor hands over the last three
    probabilities = _foreground(
        (0.45, 0.00, 0.35),  # background 0.20: liver wins, although no class reaches 0.5
        (0.30, 0.10, 0.10),  # background 0.50: background
        (0.30, 0.34, 0.26),  # background 0.10: vessel
        (0.05, 0.05, 0.60),  # background 0.30: tumor
    )
    masks = decode_masks(probabilities, "mc")
    assert masks[:, 0, 0].T.tolist() == [[True, False, False], [False, False, False],
                                         [False, True, False], [False, False, True]]
    assert not decode_masks(probabilities, "ml")[:, 0, 0, :3].any()  # a 0.5 threshold would see nothing there


def test_ml_and_mlx_threshold_each_class_at_one_half() -> None:
    probabilities = _foreground((0.9, 0.8, 0.7), (0.6, 0.4, 0.2), (0.2, 0.51, 0.0))
    for target in ("ml", "mlx"):
        assert decode_masks(probabilities, target)[:, 0, 0].T.tolist() == [
            [True, True, True], [True, False, False], [False, True, False]]


def test_whole_liver_is_liver_or_tumor_for_ml_and_the_union_for_exclusive_targets() -> None:
    masks = decode_masks(_foreground((0.9, 0.0, 0.0), (0.0, 0.9, 0.0), (0.0, 0.0, 0.9), (0.0, 0.0, 0.0)))
    assert whole_liver_mask(masks, "ml")[0, 0].tolist() == [True, False, True, False]
    assert whole_liver_mask(masks, "mlx")[0, 0].tolist() == [True, True, True, False]
    assert whole_liver_mask(masks, "mc")[0, 0].tolist() == [True, True, True, False]


def test_postprocess_labels_an_mc_liver_that_no_class_makes_above_one_half() -> None:
    probabilities = np.zeros((3, 6, 6, 6), dtype=np.float32)
    probabilities[:, 1:5, 1:5, 1:5] = np.array([0.45, 0.0, 0.35], dtype=np.float32)[:, None, None, None]
    probabilities[:, 2:4, 2:4, 2:4] = np.array([0.2, 0.1, 0.6], dtype=np.float32)[:, None, None, None]
    grid = Image(np.zeros((6, 6, 6), dtype=np.float32), (10.0, 10.0, 10.0))
    assert liver_region(probabilities, "mc").sum() == 4**3
    assert liver_region(probabilities, "ml").sum() == 2**3  # a 0.5 threshold would see only the tumor's core
    labels = postprocess(probabilities, grid, PostprocessConfig(), target="mc").labels
    assert (labels[1:5, 1:5, 1:5] != BACKGROUND_LABEL).all() and (labels == BACKGROUND_LABEL).sum() == 6**3 - 4**3
    assert (labels[2:4, 2:4, 2:4] == TUMOR_LABEL).all()
    assert (labels == LIVER_LABEL).sum() == 4**3 - 2**3


def _liver_halves_joined_by_a_vessel() -> np.ndarray:
    """Exclusive-target probabilities: a big and a small liver piece touching only through a vessel."""
    probabilities = np.zeros((3, 5, 5, 16), dtype=np.float32)
    probabilities[0, 1:4, 1:4, 0:8] = 0.9  # big piece: 72 voxels
    probabilities[1, 2, 2, 8:10] = 0.9  # the vessel between them
    probabilities[0, 1:4, 1:4, 10:13] = 0.9  # small piece: 27 voxels
    return probabilities


@pytest.mark.parametrize(("target", "small_piece"), [("mlx", LIVER_LABEL), ("ml", BACKGROUND_LABEL)])
def test_largest_liver_component_counts_vessels_as_liver_for_exclusive_targets(target: str, small_piece: int) -> None:
    grid = Image(np.zeros((5, 5, 16), dtype=np.float32), (2.0, 2.0, 2.0))
    labels = postprocess(_liver_halves_joined_by_a_vessel(), grid, PostprocessConfig(), target=target).labels
    assert (labels[1:4, 1:4, 10:13] == small_piece).all()
    assert (labels[1:4, 1:4, 0:8] == LIVER_LABEL).all() and labels[2, 2, 8] == VESSEL_LABEL
