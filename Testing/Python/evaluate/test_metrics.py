"""Tests of lvt.evaluate.metrics: hand-computed tiny cases, the empty-mask conventions, and MONAI cross-checks.

NSD is tested in test_surface_dice.py, lesion detection in test_lesions.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from lvt.evaluate import metrics


def _line(length: int, start: int, stop: int, axis: int) -> np.ndarray:
    """A one-voxel-thick line along ``axis``: every voxel of it is a boundary voxel."""
    shape = [1, 1, 1]
    shape[axis] = length
    mask = np.zeros(shape, dtype=bool)
    index = [0, 0, 0]
    index[axis] = slice(start, stop)
    mask[tuple(index)] = True
    return mask


def test_overlap_scores_by_hand():
    truth = np.zeros((3, 3, 3), dtype=bool)
    pred = np.zeros_like(truth)
    truth[0, 0, :3] = truth[1, 0, :3] = True  # 6 voxels
    pred[0, 0, :3] = True
    pred[2, 2, 2] = True  # 4 voxels, 3 of them in truth
    assert metrics.dice_score(pred, truth) == pytest.approx(6 / 10)
    assert metrics.precision_score(pred, truth) == pytest.approx(3 / 4)
    assert metrics.recall_score(pred, truth) == pytest.approx(3 / 6)
    assert metrics.jaccard_score(pred, truth) == pytest.approx(3 / 7)  # union: 6 + 4 - 3
    assert metrics.accuracy_score(pred, truth) == pytest.approx(1 - 4 / 27)  # 3 truth-only + 1 pred-only voxels


@pytest.mark.parametrize(
    ("axis", "spacing_zyx_mm", "step_mm"),
    [(2, (1.0, 1.0, 2.0), 2.0), (0, (2.0, 1.0, 1.0), 2.0), (2, (2.0, 1.0, 1.0), 1.0)],
)
def test_surface_metrics_by_hand_follow_spacing_axis(axis, spacing_zyx_mm, step_mm):
    # truth covers voxels 2..5 and pred 3..6 of a line: distances pred->truth (0, 0, 0, 1 step),
    # truth->pred (1 step, 0, 0, 0); HD95 = linear 95th percentile of (0, 0, 0, step) = 0.85 step.
    truth, pred = _line(10, 2, 6, axis), _line(10, 3, 7, axis)
    distances = metrics.surface_distances(pred, truth, spacing_zyx_mm)
    assert sorted(distances.pred_to_truth_mm) == pytest.approx([0, 0, 0, step_mm])
    assert metrics.hausdorff_distance_95_mm(distances) == pytest.approx(0.85 * step_mm)
    assert metrics.average_symmetric_surface_distance_mm(distances) == pytest.approx(2 * step_mm / 8)
    assert metrics.dice_score(pred, truth) == pytest.approx(0.75)


def test_distance_is_euclidean_in_mm_on_an_anisotropic_grid():
    truth = np.zeros((4, 4, 4), dtype=bool)
    pred = np.zeros_like(truth)
    truth[0, 0, 0] = True
    pred[1, 0, 2] = True  # one slice (3 mm) and two columns (2 x 0.5 mm) away
    distances = metrics.surface_distances(pred, truth, (3.0, 0.7, 0.5))
    assert metrics.hausdorff_distance_95_mm(distances) == pytest.approx(math.sqrt(3.0**2 + 1.0**2))


def test_boundary_voxels_exclude_the_interior_only():
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1:4, 1:4, 1:4] = True
    edge = metrics.boundary_voxels(mask)
    assert edge.sum() == 27 - 1 and not edge[2, 2, 2]
    assert metrics.boundary_voxels(np.ones((3, 3, 3), dtype=bool)).sum() == 26  # the array edge is outside


def _empty_and_blob():
    empty = np.zeros((6, 6, 6), dtype=bool)
    blob = empty.copy()
    blob[2:4, 2:4, 2:4] = True
    return empty, blob


def test_both_empty_is_a_perfect_score():
    empty, _ = _empty_and_blob()
    distances = metrics.surface_distances(empty, empty, (1.0, 1.0, 1.0))
    scores = (metrics.dice_score(empty, empty), metrics.precision_score(empty, empty),
              metrics.recall_score(empty, empty), metrics.jaccard_score(empty, empty),
              metrics.accuracy_score(empty, empty))
    assert scores == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert metrics.hausdorff_distance_95_mm(distances) == 0.0
    assert metrics.average_symmetric_surface_distance_mm(distances) == 0.0
    assert metrics.relative_volume_error(empty, empty) == 0.0


@pytest.mark.parametrize("empty_side", ["pred", "truth"])
def test_one_empty_mask_scores_zero_and_infinite_distance(empty_side):
    empty, blob = _empty_and_blob()
    pred, truth = (empty, blob) if empty_side == "pred" else (blob, empty)
    distances = metrics.surface_distances(pred, truth, (2.0, 1.0, 1.0))
    scores = (metrics.dice_score(pred, truth), metrics.precision_score(pred, truth),
              metrics.recall_score(pred, truth), metrics.jaccard_score(pred, truth))
    assert scores == (0.0, 0.0, 0.0, 0.0)
    assert metrics.accuracy_score(pred, truth) == pytest.approx(1 - 8 / 216)
    assert metrics.hausdorff_distance_95_mm(distances) == math.inf
    assert metrics.average_symmetric_surface_distance_mm(distances) == math.inf


def test_relative_volume_error():
    truth = np.zeros((10, 10, 10), dtype=bool)
    truth[:1] = True  # 100 voxels
    pred = np.zeros_like(truth)
    pred[:1, :, :9] = True  # 90 voxels
    assert metrics.relative_volume_error(pred, truth) == pytest.approx(-0.1)
    assert metrics.relative_volume_error(truth, np.zeros_like(truth)) == math.inf


# ------------------------------------------------------------------------------------------- MONAI


def _random_blob(rng: np.random.Generator, shape=(40, 40, 40)) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.random(shape), 2.5)
    return field > np.quantile(field, 0.8)


def _one_hot(mask: np.ndarray):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_monai_on_random_shapes_and_anisotropic_spacing(seed):
    """Dice, IoU, HD95 and ASSD (boundary voxels) against MONAI; NSD's check is in test_surface_dice.py."""
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(seed)
    spacing = tuple(float(s) for s in rng.uniform(0.5, 3.0, 3))
    pred, truth = _random_blob(rng), _random_blob(rng)
    pred[0, :5, :5] = True  # a piece on the array border, where the crop must not change anything
    p, t = _one_hot(pred), _one_hot(truth)
    distances = metrics.surface_distances(pred, truth, spacing)
    # MONAI computes in float32: agreement to 1e-5 relative is exact up to its rounding.
    monai_dice = monai_metrics.compute_dice(p, t, include_background=False).item()
    assert metrics.dice_score(pred, truth) == pytest.approx(monai_dice, rel=1e-5)
    assert metrics.hausdorff_distance_95_mm(distances) == pytest.approx(
        monai_metrics.compute_hausdorff_distance(p, t, percentile=95, spacing=spacing).item(), rel=1e-5)
    assert metrics.average_symmetric_surface_distance_mm(distances) == pytest.approx(
        monai_metrics.compute_average_surface_distance(p, t, symmetric=True, spacing=spacing).item(), rel=1e-5)
    monai_iou = monai_metrics.compute_iou(p, t, include_background=False).item()
    assert metrics.jaccard_score(pred, truth) == pytest.approx(monai_iou, rel=1e-5)
