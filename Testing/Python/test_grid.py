"""Grid maths and resampling: hand-worked matrices, round trips on oblique / flipped / anisotropic grids."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rotation

from lvt.grid import (
    bounding_box_in,
    canonical_grid,
    crop,
    image_from_sitk,
    image_to_sitk,
    resample_channels_like,
    resample_like,
    resample_to_spacing,
)
from lvt.image import Image, ijk_to_ras_matrix

COS30 = np.sqrt(3.0) / 2.0



def oblique_flipped_direction() -> np.ndarray:
    """Rotated about two axes, and with the j axis flipped (determinant -1)."""
    return rotation(2, 20.0) @ rotation(0, 15.0) @ np.diag([1.0, -1.0, 1.0])


def voxel_centres_lps(image: Image) -> np.ndarray:
    """(Z, Y, X, 3) LPS position of every voxel centre."""
    k, j, i = np.indices(image.array.shape)
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3)
    return image.ijk_to_lps(ijk).reshape(*image.array.shape, 3)


def sphere_image(grid: Image, centre_lps: np.ndarray, radius_mm: float) -> Image:
    """CT-like sphere (+1000 HU in -1000 HU) with a one-millimetre partial-volume rim."""
    distance = np.linalg.norm(voxel_centres_lps(grid) - centre_lps, axis=-1)
    inside = np.clip(radius_mm - distance + 0.5, 0.0, 1.0)
    return grid.with_array((-1000.0 + 2000.0 * inside).astype(np.float32))


def centroid_lps(image: Image, mask: np.ndarray) -> np.ndarray:
    return voxel_centres_lps(image)[mask].mean(axis=0)


@pytest.fixture
def oblique_grid() -> Image:
    array = np.zeros((24, 36, 40), dtype=np.float32)
    return Image(array, (0.9, 1.3, 2.1), (-30.0, 12.0, 250.0), oblique_flipped_direction())


def test_ijk_to_ras_matrix_hand_worked_oblique_example() -> None:
    # i along (cos30, sin30, 0) LPS, j along (-sin30, cos30, 0), k flipped to -S.
    direction = np.array([[COS30, -0.5, 0.0], [0.5, COS30, 0.0], [0.0, 0.0, -1.0]])
    image = Image(np.zeros((6, 7, 8)), (0.5, 0.8, 2.5), (-100.0, 50.0, 20.0), direction)
    # Columns are direction * spacing; RAS negates the first two rows of the LPS matrix.
    expected_ras = np.array(
        [
            [-0.4330127019, 0.4, 0.0, 100.0],
            [-0.25, -0.6928203230, 0.0, -50.0],
            [0.0, 0.0, -2.5, 20.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(ijk_to_ras_matrix(image), expected_ras, atol=1e-9)
    # Voxel (2, 5, 4): x = -100 + 2*0.4330 - 5*0.4, y = 50 + 2*0.25 + 5*0.6928, z = 20 - 4*2.5.
    point_lps = np.array([-101.1339745962, 53.9641016151, 10.0])
    np.testing.assert_allclose(image.ijk_to_lps([2, 5, 4])[0], point_lps, atol=1e-9)
    np.testing.assert_allclose(image.lps_to_ijk(point_lps)[0], [2.0, 5.0, 4.0], atol=1e-9)
    np.testing.assert_allclose(ijk_to_ras_matrix(image) @ [2, 5, 4, 1], [101.1339745962, -53.9641016151, 10, 1])
    # SimpleITK (LPS, independent code) agrees on the same point.
    physical = image_to_sitk(image).TransformContinuousIndexToPhysicalPoint([2.0, 5.0, 4.0])
    np.testing.assert_allclose(physical, point_lps, atol=1e-6)


def test_sitk_conversion_keeps_grid_and_voxel_order(oblique_grid: Image) -> None:
    array = np.arange(np.prod(oblique_grid.array.shape), dtype=np.int16).reshape(oblique_grid.array.shape)
    image = oblique_grid.with_array(array)
    sitk_image = image_to_sitk(image)
    assert sitk_image.GetSize() == image.size_ijk
    assert sitk_image.GetPixel(3, 2, 1) == array[1, 2, 3]
    back = image_from_sitk(sitk_image)
    assert back.same_grid(image, tolerance_mm=1e-9)
    np.testing.assert_array_equal(back.array, array)


def test_canonical_grid_covers_oblique_extent(oblique_grid: Image) -> None:
    grid = canonical_grid(oblique_grid, (1.5, 1.5, 1.5))
    np.testing.assert_array_equal(grid.direction, np.eye(3))
    corners = grid.lps_to_ijk(oblique_grid.physical_corners_lps())
    assert np.all(corners >= -0.5)
    assert np.all(corners <= np.asarray(grid.size_ijk) - 0.5)


def test_canonical_grid_of_axis_aligned_image_at_its_spacing_is_itself() -> None:
    image = Image(np.zeros((5, 6, 7)), (0.7, 0.7, 2.0), (10.0, -20.0, 30.0))
    assert canonical_grid(image, (0.7, 0.7, 2.0)).same_grid(image, tolerance_mm=1e-9)


def test_resample_to_spacing_flipped_axes_is_a_pure_flip() -> None:
    array = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    image = Image(array, (2.0, 2.0, 3.0), (50.0, 40.0, -10.0), np.diag([-1.0, -1.0, 1.0]))
    result = resample_to_spacing(image, (2.0, 2.0, 3.0))
    np.testing.assert_allclose(result.array, array[:, ::-1, ::-1], atol=1e-5)
    np.testing.assert_allclose(result.origin_lps_mm, [40.0, 32.0, -10.0], atol=1e-9)


def test_sphere_stays_at_its_lps_centre_through_canonical_grid_and_back(oblique_grid: Image) -> None:
    centre = oblique_grid.ijk_to_lps([14.0, 21.0, 10.0])[0]  # off-centre, so a flip would move it
    image = sphere_image(oblique_grid, centre, radius_mm=8.0)
    canonical = resample_to_spacing(image, (1.5, 1.5, 1.5))
    assert canonical.array.dtype == np.float32
    assert np.linalg.norm(centroid_lps(canonical, canonical.array > 0) - centre) < 1.5
    back = resample_like(canonical, oblique_grid, default_value=-1024.0)
    assert back.same_grid(oblique_grid)
    assert np.linalg.norm(centroid_lps(back, back.array > 0) - centre) < 0.9
    original, returned = image.array > 0, back.array > 0
    dice = 2 * np.sum(original & returned) / (original.sum() + returned.sum())
    assert dice > 0.9


def test_resample_outside_input_gets_default_value(oblique_grid: Image) -> None:
    canonical = resample_to_spacing(oblique_grid.with_array(oblique_grid.array + 5.0), (2.0, 2.0, 2.0))
    # The axis-aligned box of a rotated grid has corners outside the input: default -1024 there.
    assert canonical.array[0, 0, 0] == -1024.0
    assert np.any(canonical.array == 5.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.bool_])
def test_nearest_keeps_label_values_and_dtype(oblique_grid: Image, dtype: type) -> None:
    values = np.array([0, 1, 2, 3, 7]) if dtype is not np.bool_ else np.array([0, 1])
    labels = np.random.default_rng(1).choice(values, size=oblique_grid.array.shape).astype(dtype)
    result = resample_to_spacing(
        oblique_grid.with_array(labels), (1.1, 1.7, 1.3), interpolation="nearest", default_value=0
    )
    assert result.array.dtype == dtype
    assert set(np.unique(result.array)) <= set(values.astype(dtype))
    assert len(np.unique(result.array)) == len(values)


def test_resample_channels_like_reproduces_a_linear_field(oblique_grid: Image) -> None:
    lps = voxel_centres_lps(oblique_grid)
    channels = np.stack([lps[..., 0], np.full(oblique_grid.array.shape, 0.25)]).astype(np.float32)
    reference = canonical_grid(oblique_grid, (2.0, 2.0, 2.0))
    result = resample_channels_like(channels, oblique_grid, reference, default_value=-7.0)
    assert result.dtype == np.float32
    assert result.shape == (2, *reference.array.shape)
    inside = result[1] == 0.25
    assert inside.sum() > 1000 and np.all(result[1][~inside] == -7.0)
    # Linear interpolation is exact on a linear function between source voxel centres (ITK clamps
    # in the outer half voxel).
    reference_lps = voxel_centres_lps(reference)
    source_ijk = oblique_grid.lps_to_ijk(reference_lps.reshape(-1, 3)).reshape(reference_lps.shape)
    between = np.all((source_ijk >= 0) & (source_ijk <= np.asarray(oblique_grid.size_ijk) - 1), axis=-1)
    assert between.sum() > 1000
    np.testing.assert_allclose(result[0][between], reference_lps[..., 0][between], atol=1e-3)


def test_resample_channels_like_rejects_wrong_shape(oblique_grid: Image) -> None:
    with pytest.raises(ValueError, match="do not match"):
        resample_channels_like(np.zeros((2, 3, 3, 3), np.float32), oblique_grid, oblique_grid)


def test_crop_keeps_physical_positions(oblique_grid: Image) -> None:
    array = np.random.default_rng(2).normal(size=oblique_grid.array.shape).astype(np.float32)
    image = oblique_grid.with_array(array)
    box = (slice(3, 11), slice(5, None), slice(-9, -2))
    cropped = crop(image, box)
    np.testing.assert_array_equal(cropped.array, array[box])
    # Voxel (i, j, k) of the crop is voxel (i + 31, j + 5, k + 3) of the image.
    np.testing.assert_allclose(
        cropped.ijk_to_lps([[0, 0, 0], [2, 4, 6]]), image.ijk_to_lps([[31, 5, 3], [33, 9, 9]]), atol=1e-9
    )
    resampled = resample_like(cropped, image, default_value=np.nan)
    np.testing.assert_allclose(resampled.array[box], array[box], atol=1e-4)


def test_crop_rejects_empty_box(oblique_grid: Image) -> None:
    with pytest.raises(ValueError, match="selects no voxels"):
        crop(oblique_grid, (slice(4, 4), slice(None), slice(None)))


def test_bounding_box_in_covers_the_mask_with_margin(oblique_grid: Image) -> None:
    mask = np.zeros(oblique_grid.array.shape, dtype=bool)
    mask[8:12, 10:18, 15:22] = True
    target = canonical_grid(oblique_grid, (1.0, 1.0, 1.0))
    tight = bounding_box_in(target, oblique_grid, mask, margin_mm=0.0)
    wide = bounding_box_in(target, oblique_grid, mask, margin_mm=4.0)
    assert tight is not None and wide is not None
    on_target = resample_like(oblique_grid.with_array(mask), target, interpolation="nearest").array
    covered = np.zeros_like(on_target)
    covered[tight] = True
    assert on_target.sum() > 100 and not np.any(on_target & ~covered)
    for axis in range(3):
        grown_low = tight[axis].start - wide[axis].start
        grown_high = wide[axis].stop - tight[axis].stop
        assert 3 <= grown_low <= 8 and 3 <= grown_high <= 8
        assert wide[axis].stop - wide[axis].start < target.array.shape[axis]


def test_bounding_box_in_clips_and_handles_empty_masks(oblique_grid: Image) -> None:
    mask = np.zeros(oblique_grid.array.shape, dtype=bool)
    assert bounding_box_in(oblique_grid, oblique_grid, mask, margin_mm=5.0) is None
    mask[0, 0, 0] = True
    box = bounding_box_in(oblique_grid, oblique_grid, mask, margin_mm=2.0)
    # The box reaches 0.5 voxel + 2 mm past voxel 0: it touches voxels up to ceil(2 mm / spacing).
    assert box == (slice(0, 2), slice(0, 3), slice(0, 4))
    far_away = Image(np.zeros((4, 4, 4)), (1.0, 1.0, 1.0), (1000.0, 1000.0, 1000.0))
    assert bounding_box_in(far_away, oblique_grid, mask, margin_mm=2.0) is None
