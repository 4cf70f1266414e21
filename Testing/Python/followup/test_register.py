"""Tests for lvt.followup.register: known rigid and affine motions recovered, unrelated volumes refused.

The follow-up study is the same phantom patient rendered on another grid (other spacing, flipped
axes), then *moved*: its grid is declared at ``R @ p + t`` (and scaled for the affine case), so the
true fixed-to-moving transform is known exactly while the voxels stay the rendered ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rotation

from lvt.followup.register import (
    Registration,
    RegistrationConfig,
    Residual,
    refusal_reasons,
    register_livers,
    warp_to_fixed,
)
from lvt.image import Image
from lvt.phantom import PhantomConfig, make_phantom

FIELD_OF_VIEW_MM = (240.0, 200.0, 190.0)
CENTRE_LPS_MM = (0.0, -8.0, -12.0)  # the phantom liver sits right of and below the abdomen's centre
FLIPPED_LR_AP = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))




MOTION_ROTATION = rotation(2, 8.0) @ rotation(0, -5.0)
MOTION_TRANSLATION_MM = np.array([12.0, -7.0, 9.0])


def _study(seed: int, spacing_mm, direction=None) -> tuple[Image, Image]:
    """(CT, exclusive labels) of a tumor-free phantom patient on a coarse grid."""
    phantom = make_phantom(PhantomConfig(seed=seed, spacing_mm=spacing_mm, field_of_view_mm=FIELD_OF_VIEW_MM,
                                         center_lps_mm=CENTRE_LPS_MM, direction=direction, n_tumors=(0, 0),
                                         noise_hu=12.0))
    return phantom.image, phantom.image.with_array(phantom.labels)


def _moved(image: Image, scale=(1.0, 1.0, 1.0)) -> Image:
    """The same voxels with the patient moved: rendered point p now lies at R (D S D^T) (p - o) + R o + t."""
    return Image(image.array, tuple(np.asarray(image.spacing_mm) * scale),
                 tuple(MOTION_ROTATION @ np.asarray(image.origin_lps_mm) + MOTION_TRANSLATION_MM),
                 MOTION_ROTATION @ image.direction)


def _true_motion(rendered: Image, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The 4x4 fixed-to-moving map of :func:`_moved` (fixed = the unmoved patient frame)."""
    matrix = MOTION_ROTATION @ rendered.direction @ np.diag(scale) @ rendered.direction.T
    origin = np.asarray(rendered.origin_lps_mm)
    result = np.eye(4)
    result[:3, :3] = matrix
    result[:3, 3] = MOTION_ROTATION @ origin + MOTION_TRANSLATION_MM - matrix @ origin
    return result


@pytest.fixture(scope="module")
def baseline() -> tuple[Image, Image]:
    return _study(3, (4.0, 4.0, 4.0))


@pytest.fixture(scope="module")
def other_grid() -> tuple[Image, Image]:
    """The same patient on a 3.5 x 3.5 x 5 mm grid with flipped L-R and A-P axes."""
    return _study(3, (3.5, 3.5, 5.0), FLIPPED_LR_AP)


def test_rigid_motion_on_another_grid_is_recovered(baseline, other_grid) -> None:
    ct, labels = other_grid
    registration = register_livers(baseline[1], _moved(labels), baseline[0], _moved(ct))
    assert registration.accepted, registration.refusal_reasons
    assert registration.driven_by == "liver masks and CT"
    truth = _true_motion(labels)
    assert np.abs(registration.fixed_to_moving[:3, :3] - truth[:3, :3]).max() < 0.01
    assert np.linalg.norm(registration.fixed_to_moving[:3, 3] - truth[:3, 3]) < 1.5  # well under a voxel
    assert registration.residual.liver_dice > 0.93
    assert registration.residual.mean_surface_distance_mm < 1.5
    assert registration.residual.ct_correlation > 0.3
    points = np.array([[-60.0, -20.0, -30.0], [10.0, 30.0, 40.0]])
    round_trip = registration.moving_to_fixed_points(registration.fixed_to_moving_points(points))
    np.testing.assert_allclose(round_trip, points, atol=1e-9)


def test_affine_motion_is_recovered_from_the_liver_masks_alone(baseline, other_grid) -> None:
    scale = (1.06, 0.95, 1.03)
    labels = other_grid[1]
    registration = register_livers(baseline[1], _moved(labels, scale))
    assert registration.accepted, registration.refusal_reasons
    assert registration.driven_by == "liver masks"
    assert registration.residual.ct_correlation is None
    truth = _true_motion(labels, scale)
    assert np.abs(registration.fixed_to_moving[:3, :3] - truth[:3, :3]).max() < 0.015
    liver_points = baseline[1].ijk_to_lps(np.argwhere(baseline[1].array > 0)[::50, ::-1])
    mapped = registration.fixed_to_moving_points(liver_points)
    expected = liver_points @ truth[:3, :3].T + truth[:3, 3]
    assert np.linalg.norm(mapped - expected, axis=1).max() < 3.5  # within one (coarsest in-plane) voxel
    np.testing.assert_allclose(sorted(registration.residual.scale_factors), sorted(scale), atol=0.01)


def test_another_patient_is_refused(baseline) -> None:
    ct, labels = _study(21, (4.0, 4.0, 4.0))
    registration = register_livers(baseline[1], labels, baseline[0], ct)
    assert not registration.accepted
    assert any("apart" in reason for reason in registration.refusal_reasons)
    assert registration.residual.ct_correlation < 0.3  # the vessels inside do not line up either


def test_an_organ_that_is_not_this_liver_is_refused(baseline) -> None:
    labels = baseline[1]
    liver = labels.array > 0
    centre = np.argwhere(liver).mean(axis=0)
    half_liver = liver & (np.indices(liver.shape)[2] < centre[2])  # as after a right hepatectomy
    registration = register_livers(labels, labels.with_array(half_liver.astype(np.uint8)))
    assert not registration.accepted
    assert registration.residual.liver_dice < 0.85
    assert len(registration.refusal_reasons) >= 2
    assert registration.to_dict()["accepted"] is False


def test_a_label_map_without_liver_is_an_error(baseline) -> None:
    labels = baseline[1]
    with pytest.raises(ValueError, match="no liver"):
        register_livers(labels, labels.with_array(np.zeros_like(labels.array)))


def test_warp_to_fixed_moves_labels_by_the_registration() -> None:
    fixed = Image(np.zeros((6, 8, 10), np.uint8), (2.0, 2.0, 3.0))
    moving = fixed.with_array(np.zeros((6, 8, 10), np.uint8))
    moving.array[3, 4, 5] = 7
    matrix = np.eye(4)
    matrix[:3, 3] = [4.0, -2.0, 3.0]  # moving = fixed + shift: two voxels in i, one back in j, one in k
    warped = warp_to_fixed(moving, fixed, matrix)
    assert warped.array.dtype == np.uint8
    assert np.argwhere(warped.array == 7).tolist() == [[2, 5, 3]]
    registration = Registration(matrix, Residual(1.0, 0.0, (1.0, 1.0, 1.0), None), "liver masks")
    np.testing.assert_allclose(registration.moving_to_fixed_points([[4.0, -2.0, 3.0]]), [[0.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("residual", "expected_words"),
    [
        (Residual(0.95, 1.0, (1.02, 1.0, 0.97), 0.7), []),
        (Residual(0.80, 1.0, (1.0, 1.0, 1.0), None), ["Dice"]),
        (Residual(0.95, 3.5, (1.0, 1.0, 1.0), None), ["apart"]),
        (Residual(0.95, 1.0, (1.3, 1.0, 1.0), None), ["scale"]),
        (Residual(0.95, 1.0, (1.0, 1.0, 0.75), 0.1), ["scale", "correlates"]),
    ],
)
def test_refusal_reasons_name_each_failed_criterion(residual: Residual, expected_words: list[str]) -> None:
    reasons = refusal_reasons(residual, RegistrationConfig())
    assert len(reasons) == len(expected_words)
    for reason, word in zip(reasons, expected_words, strict=True):
        assert word in reason


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RegistrationConfig(scale_range=(1.1, 1.3))
    with pytest.raises(ValueError):
        RegistrationConfig(min_liver_dice=1.5)
