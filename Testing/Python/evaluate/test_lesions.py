"""Tests of lvt.evaluate.lesions: the 10 % rule on both sides, F1, whole-image and split predictions, sizes."""

from __future__ import annotations

import numpy as np
import pytest

from lvt.evaluate.lesions import LESION_SIZE_BINS, f1_score, lesion_detection, size_bin
from lvt.image import Image


def _grid(shape, spacing_xyz_mm=(1.0, 1.0, 1.0)) -> Image:
    return Image(np.zeros(shape, dtype=np.uint8), spacing_xyz_mm)


def _detect(pred: np.ndarray, truth: np.ndarray, spacing_xyz_mm=(1.0, 1.0, 1.0)):
    return lesion_detection(pred, truth, _grid(truth.shape, spacing_xyz_mm))


def test_lesion_detection_counts_by_the_ten_percent_rule():
    truth = np.zeros((20, 20, 20), dtype=bool)
    truth[0:2, 0:5, 0] = True  # lesion A, 10 voxels
    truth[10:12, 10:15, 10] = True  # lesion B, 10 voxels
    truth[2, 5, 1] = True  # touches A by a corner only: 26-connected, so A has 11 voxels
    pred = np.zeros_like(truth)
    pred[0, 0:2, 0] = True  # 2 of A's 11 voxels (18 %): detected; the whole component is in truth
    pred[10, 10, 10] = True
    pred[10, 10, 11:20] = True  # 1 of B's 10 voxels (10 %, not more): missed; 1 of 10 in truth
    detection = _detect(pred, truth)
    assert (detection.true_lesions, detection.detected_lesions) == (2, 1)
    assert (detection.predicted_lesions, detection.correct_predicted_lesions) == (2, 1)
    assert detection.sensitivity == 0.5 and detection.precision == 0.5 and detection.f1 == 0.5


def test_whole_image_prediction_detects_everything_but_has_no_precision():
    truth = np.zeros((30, 30, 30), dtype=bool)
    truth[2:5, 2:5, 2:5] = True
    truth[20:24, 20:24, 20:24] = True
    detection = _detect(np.ones_like(truth), truth)
    assert detection.sensitivity == 1.0
    assert (detection.predicted_lesions, detection.correct_predicted_lesions) == (1, 0)
    assert detection.precision == 0.0 and detection.f1 == 0.0


def test_a_lesion_predicted_in_two_pieces_counts_once():
    truth = np.zeros((10, 20, 20), dtype=bool)
    truth[2:7, 2:12, 2:12] = True  # 500 voxels
    pred = np.zeros_like(truth)
    pred[4, 2:6, 2:12] = True  # 40 voxels (8 %): alone it would not detect the lesion
    pred[4, 8:12, 2:12] = True  # another 40, not touching the first
    detection = _detect(pred, truth)
    assert (detection.true_lesions, detection.detected_lesions) == (1, 1)  # 80 voxels together: 16 %
    assert (detection.predicted_lesions, detection.correct_predicted_lesions) == (2, 2)
    assert (detection.sensitivity, detection.precision, detection.f1) == (1.0, 1.0, 1.0)


def test_rates_are_undefined_without_lesions():
    empty = np.zeros((4, 4, 4), dtype=bool)
    blob = empty.copy()
    blob[1, 1, 1] = True
    both_empty = _detect(empty, empty)
    assert (both_empty.sensitivity, both_empty.precision, both_empty.f1) == (None, None, None)
    only_truth = _detect(empty, blob)
    assert (only_truth.sensitivity, only_truth.precision, only_truth.f1) == (0.0, None, 0.0)
    only_pred = _detect(blob, empty)
    assert (only_pred.sensitivity, only_pred.precision, only_pred.f1) == (None, 0.0, 0.0)


def test_f1_is_the_harmonic_mean():
    assert f1_score(0.5, 1.0) == pytest.approx(2 / 3)
    assert f1_score(0.0, 0.0) == 0.0


@pytest.mark.parametrize(("diameter_mm", "expected"), [(9.99, 0), (10.0, 1), (20.0, 1), (20.01, 2)])
def test_size_bin_limits(diameter_mm, expected):
    assert size_bin(diameter_mm) == expected


def test_sensitivity_by_longest_axial_diameter():
    """Squares in an axial slice on a 0.8 x 0.8 x 2.5 mm grid: the diameter is the corner-to-corner diagonal."""
    spacing_xyz = (0.8, 0.8, 2.5)
    truth = np.zeros((6, 80, 80), dtype=bool)
    truth[1:3, 2:10, 2:10] = True  # 8 x 0.8 mm square: diagonal 9.05 mm, under 10 mm
    truth[1:4, 20:35, 2:17] = True  # 15 pixels: 16.97 mm
    truth[1:5, 45:70, 45:70] = True  # 25 pixels: 28.3 mm
    pred = np.zeros_like(truth)
    pred[1:3, 2:10, 2:10] = True  # the small one found
    pred[1:5, 45:70, 45:70] = True  # and the large one; the middle one missed
    detection = _detect(pred, truth, spacing_xyz)
    assert LESION_SIZE_BINS == ("under_10mm", "10_to_20mm", "over_20mm")
    assert detection.true_by_size == (1, 1, 1) and detection.detected_by_size == (1, 0, 1)
    assert detection.sensitivity_by_size == (1.0, 0.0, 1.0)
    only_small = _detect(pred[:, :40, :40], truth[:, :40, :40], spacing_xyz)
    assert only_small.sensitivity_by_size == (1.0, 0.0, None)  # the middle one is missed; no large lesion
