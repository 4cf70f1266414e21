"""Tests for lvt.measure.volumes_and_lesions: volumes, lesion split and order, and RECIST-style axial diameters."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA, rotation

from lvt.errors import InputError
from lvt.image import Image
from lvt.measure.volumes_and_lesions import measure_labels

ANISOTROPIC_MM = (0.7, 0.9, 2.5)




def _grid(shape_kji: tuple[int, int, int], spacing_mm, direction=None, centre_lps=(0.0, 0.0, 0.0)) -> Image:
    """An empty label grid whose centre voxel sits at ``centre_lps``."""
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    empty = Image(np.zeros(shape_kji, np.uint8), spacing_mm, (0.0, 0.0, 0.0), direction)
    middle_ijk = (np.array(shape_kji[::-1]) - 1) / 2.0
    origin = np.asarray(centre_lps) - empty.ijk_to_lps(middle_ijk)[0]
    return Image(empty.array, spacing_mm, tuple(origin), direction)


def _voxel_centres_lps(grid: Image) -> np.ndarray:
    """(Z, Y, X, 3) LPS centres of all voxels."""
    k, j, i = np.indices(grid.array.shape)
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3)
    return grid.ijk_to_lps(ijk).reshape(*grid.array.shape, 3)


def _ellipsoid(grid: Image, centre_lps, semi_axes_mm, in_plane_degrees: float = 0.0) -> np.ndarray:
    """Bool (Z, Y, X) mask of an ellipsoid whose first two axes are rotated about S by the angle."""
    offset = _voxel_centres_lps(grid) - np.asarray(centre_lps)
    local = offset @ rotation(2, in_plane_degrees)  # rows are points: p @ R = R^T p
    return (np.square(local / np.asarray(semi_axes_mm)).sum(axis=-1)) <= 1.0


def _in_plane_voxel_mm(grid: Image) -> float:
    """One voxel in the axial plane, measured across its diagonal (the 'within one voxel' tolerance)."""
    axis = grid.axial_axis()
    return float(np.hypot(*[s for n, s in enumerate(grid.spacing_mm) if n != axis]))


def _assert_on_lesion(labels: Image, point_lps, slice_index: int) -> None:
    """The point lies in the lesion's slice, inside or on the boundary of one of its tumor voxels."""
    ijk = labels.lps_to_ijk(point_lps)[0]
    axis = labels.axial_axis()
    assert ijk[axis] == pytest.approx(slice_index, abs=1e-6)
    tumor_ijk = np.argwhere(labels.array == 3)[:, ::-1]
    in_slice = tumor_ijk[tumor_ijk[:, axis] == slice_index]
    distance = np.abs(in_slice - ijk).max(axis=1)
    assert distance.min() <= 0.5 + 1e-6


@pytest.mark.parametrize("spacing_mm", [ANISOTROPIC_MM, (1.0, 1.0, 1.0), (0.8, 0.6, 1.25)])
def test_sphere_volume_within_two_percent(spacing_mm):
    grid = _grid((32, 60, 60), spacing_mm)
    radius = 18.0
    labels = grid.with_array(_ellipsoid(grid, (0.3, -0.2, 0.4), (radius,) * 3).astype(np.uint8) * 3)
    measurements = measure_labels(labels)
    expected_ml = 4.0 / 3.0 * np.pi * radius**3 / 1000.0
    assert measurements.tumor_count == 1
    assert measurements.lesions[0].volume_ml == pytest.approx(expected_ml, rel=0.02)
    assert measurements.tumor_volume_ml == pytest.approx(expected_ml, rel=0.02)
    assert np.allclose(measurements.lesions[0].centroid_lps_mm, (0.3, -0.2, 0.4), atol=0.5)


@pytest.mark.parametrize("degrees", [0.0, 17.0, 30.0, 45.0, 73.0, 120.0])
def test_rotated_ellipse_diameters_within_one_voxel(degrees):
    grid = _grid((20, 80, 90), ANISOTROPIC_MM)
    semi_long, semi_short = 20.0, 10.0
    labels = grid.with_array(_ellipsoid(grid, (0.2, 0.1, 0.0), (semi_long, semi_short, 12.0), degrees) * 3)
    lesion = measure_labels(labels).lesions[0]
    tolerance = _in_plane_voxel_mm(grid)
    diameters = lesion.diameters
    assert abs(diameters.longest_mm - 2 * semi_long) <= tolerance
    assert abs(diameters.short_axis_mm - 2 * semi_short) <= tolerance
    long_axis = np.subtract(*diameters.long_axis_endpoints_lps_mm)
    short_axis = np.subtract(*diameters.short_axis_endpoints_lps_mm)
    assert np.linalg.norm(long_axis) == pytest.approx(diameters.longest_mm)
    assert np.linalg.norm(short_axis) == pytest.approx(diameters.short_axis_mm)
    assert abs(np.dot(long_axis, short_axis)) < 1e-6 * diameters.longest_mm * diameters.short_axis_mm
    expected_direction = rotation(2, degrees)[:, 0]
    assert abs(np.dot(long_axis / np.linalg.norm(long_axis), expected_direction)) > np.cos(np.deg2rad(6))
    assert abs(lesion.centroid_lps_mm[2]) < ANISOTROPIC_MM[2]  # the widest slice is the middle one


def test_endpoints_lie_on_a_non_convex_lesion():
    grid = _grid((5, 40, 40), (0.8, 0.8, 3.0))
    crescent = _ellipsoid(grid, (0, 0, 0), (12, 12, 5)) & ~_ellipsoid(grid, (5, 0, 0), (10, 10, 5))
    labels = grid.with_array(crescent.astype(np.uint8) * 3)
    diameters = measure_labels(labels).lesions[0].diameters
    points = diameters.long_axis_endpoints_lps_mm + diameters.short_axis_endpoints_lps_mm
    for point in points:
        _assert_on_lesion(labels, point, diameters.slice_index)


@pytest.mark.parametrize(
    "direction",
    [
        np.diag([-1.0, 1.0, -1.0]),  # flipped L and S
        rotation(2, 35.0) @ np.diag([1.0, -1.0, -1.0]),  # oblique in-plane, flipped
        rotation(0, 15.0) @ np.diag([-1.0, 1.0, 1.0]),  # gantry tilt, flipped
    ],
)
def test_flipped_and_oblique_grids_give_the_same_diameters(direction):
    semi_axes, degrees, centre = (16.0, 9.0, 9.0), 25.0, (1.0, -2.0, 3.0)
    reference_grid = _grid((40, 70, 70), (0.7, 0.9, 1.5))
    reference = measure_labels(
        reference_grid.with_array(_ellipsoid(reference_grid, centre, semi_axes, degrees) * 3)
    ).lesions[0]
    grid = _grid((40, 70, 70), (0.7, 0.9, 1.5), direction, centre_lps=centre)
    labels = grid.with_array(_ellipsoid(grid, centre, semi_axes, degrees).astype(np.uint8) * 3)
    lesion = measure_labels(labels).lesions[0]
    tolerance = _in_plane_voxel_mm(grid)
    assert abs(lesion.diameters.longest_mm - reference.diameters.longest_mm) <= tolerance
    assert abs(lesion.diameters.short_axis_mm - reference.diameters.short_axis_mm) <= tolerance
    assert abs(lesion.diameters.longest_mm - 2 * semi_axes[0]) <= tolerance
    assert lesion.volume_ml == pytest.approx(reference.volume_ml, rel=0.03)
    assert np.allclose(lesion.centroid_lps_mm, centre, atol=0.6)
    for point in lesion.diameters.long_axis_endpoints_lps_mm + lesion.diameters.short_axis_endpoints_lps_mm:
        _assert_on_lesion(labels, point, lesion.diameters.slice_index)


def test_single_voxel_lesion_measures_its_voxel_extent():
    spacing = (0.7, 0.9, 2.5)
    array = np.zeros((3, 4, 5), np.uint8)
    array[1, 2, 3] = 3
    lesion = measure_labels(Image(array, spacing)).lesions[0]
    diagonal = float(np.hypot(0.7, 0.9))
    assert lesion.diameters.longest_mm == pytest.approx(diagonal)
    # the longest chord across the diagonal runs through the centre and ends on the long (0.9 mm) sides
    assert lesion.diameters.short_axis_mm == pytest.approx(0.7 * diagonal / 0.9)
    assert lesion.diameters.slice_index == 1
    assert lesion.bbox_min_ijk == lesion.bbox_max_ijk == (3, 2, 1)
    assert lesion.volume_ml == pytest.approx(0.7 * 0.9 * 2.5 / 1000)


def test_two_lesions_are_numbered_by_decreasing_volume():
    grid = _grid((24, 60, 80), (1.0, 1.0, 2.0))
    small = _ellipsoid(grid, (-20.0, 0.0, 0.0), (5.0, 5.0, 5.0))
    large = _ellipsoid(grid, (18.0, 5.0, 4.0), (12.0, 9.0, 10.0))
    labels = np.where(_ellipsoid(grid, (0, 0, 0), (38, 28, 22)), 1, 0).astype(np.uint8)
    labels[small | large] = 3
    measurements = measure_labels(grid.with_array(labels))
    assert measurements.tumor_count == 2
    first, second = measurements.lesions
    assert (first.id, second.id) == (1, 2)
    assert first.volume_ml > second.volume_ml
    assert first.centroid_lps_mm[0] > 0 > second.centroid_lps_mm[0]
    assert first.volume_ml + second.volume_ml == pytest.approx(measurements.tumor_volume_ml)
    ratio = measurements.tumor_volume_ml / measurements.whole_liver_volume_ml
    assert measurements.tumor_to_liver_volume_ratio == pytest.approx(ratio)


def test_lesions_touching_at_a_corner_are_one_lesion():
    array = np.zeros((4, 4, 4), np.uint8)
    array[1, 1, 1] = array[2, 2, 2] = 3
    measurements = measure_labels(Image(array, (1.0, 1.0, 1.0)))
    assert measurements.tumor_count == 1
    assert measurements.lesions[0].bbox_min_ijk == (1, 1, 1)
    assert measurements.lesions[0].bbox_max_ijk == (2, 2, 2)


def test_volumes_follow_the_label_hierarchy():
    array = np.zeros((10, 10, 10), np.uint8)
    array[2:8, 2:8, 2:8] = 1  # 216 voxels of liver, of which:
    array[3:5, 3:5, 3:5] = 2  # 8 vessel
    array[6, 6, 6] = 3  # 1 tumor
    measurements = measure_labels(Image(array, (0.5, 0.5, 2.0)))
    voxel_ml = 0.5 * 0.5 * 2.0 / 1000
    assert measurements.whole_liver_volume_ml == pytest.approx(216 * voxel_ml)
    assert measurements.parenchyma_volume_ml == pytest.approx(207 * voxel_ml)
    assert measurements.vessel_volume_ml == pytest.approx(8 * voxel_ml)
    assert measurements.tumor_to_liver_volume_ratio == pytest.approx(1 / 216)


def test_empty_tumor_gives_zero_count_and_ratio():
    array = np.zeros((6, 6, 6), np.uint8)
    array[1:5, 1:5, 1:5] = 1
    report = measure_labels(Image(array, (1.0, 1.0, 1.0))).to_dict()
    assert report["tumors"]["count"] == 0
    assert report["tumors"]["total_volume_ml"] == 0.0
    assert report["tumors"]["tumor_to_liver_volume_ratio"] == 0.0
    assert report["lesions"] == []
    assert measure_labels(Image(np.zeros((3, 3, 3), np.uint8), (1, 1, 1))).tumor_to_liver_volume_ratio == 0.0


def test_to_dict_matches_the_report_schema():
    array = np.zeros((6, 8, 8), np.uint8)
    array[1:5, 1:7, 1:7] = 1
    array[2:4, 2:4, 2:4] = 3
    dropped = [{"volume_ml": 0.01, "centroid_lps_mm": np.array([1.0, 2.0, 3.0])}]
    part = measure_labels(Image(array, (1.0, 1.0, 1.0))).to_dict(dropped=dropped, min_volume_ml=0.05)
    assert set(part) == {"liver", "liver_cut_by_image_edge", "vessels", "tumors", "lesions"}
    assert part["liver_cut_by_image_edge"] == []  # the liver stops one voxel short of every face
    assert set(part["tumors"]) == {
        "count", "total_volume_ml", "tumor_to_liver_volume_ratio", "dropped", "min_volume_ml",
    }
    assert part["tumors"]["dropped"] == [{"volume_ml": 0.01, "centroid_lps_mm": [1.0, 2.0, 3.0]}]
    assert part["tumors"]["min_volume_ml"] == 0.05
    lesion = part["lesions"][0]
    assert set(lesion) == {
        "id", "volume_ml", "centroid_lps_mm", "longest_axial_diameter_mm", "axial_slice_index",
        "long_axis_endpoints_lps_mm", "short_axis_diameter_mm", "short_axis_endpoints_lps_mm", "bounding_box_ijk",
    }
    assert lesion["bounding_box_ijk"] == {"min": [2, 2, 2], "max": [3, 3, 3]}
    assert np.array(lesion["long_axis_endpoints_lps_mm"]).shape == (2, 3)


@pytest.mark.parametrize("bad", [np.full((2, 2, 2), 4, np.int16), np.full((2, 2, 2), -1, np.int16),
                                 np.full((2, 2, 2), 1.5)])
def test_bad_label_values_raise_input_error(bad):
    with pytest.raises(InputError, match=r"labels 0\.\.3"):
        measure_labels(Image(bad, (1.0, 1.0, 1.0)))


IRCADB = SHARED_DATA / "ircadb01_17"


def test_expert_tumor_masks_of_a_real_ct_are_measured_consistently():
    if not (IRCADB / "ircadb01_17_livertumor1.nii.gz").exists():
        pytest.skip(f"real CT data not found in {IRCADB}")
    from lvt.grid import image_from_sitk, sitk_module

    sitk = sitk_module()
    masks = {n: image_from_sitk(sitk.ReadImage(str(IRCADB / f"ircadb01_17_{n}.nii.gz")))
             for n in ("liver", "livertumor1", "livertumor2")}
    liver = masks["liver"]
    labels = (liver.array > 0).astype(np.uint8)
    labels[(masks["livertumor1"].array > 0) | (masks["livertumor2"].array > 0)] = 3
    measurements = measure_labels(liver.with_array(labels))
    # PROVENANCE.md: liver 1861 mL, tumor 1 85.6 mL, tumor 2 78.6 mL (voxel counts x 0.743 x 0.743 x 1.6 mm)
    assert measurements.whole_liver_volume_ml == pytest.approx(1861, abs=1)
    assert [round(lesion.volume_ml, 1) for lesion in measurements.lesions] == [85.6, 78.6]
    for lesion in measurements.lesions:
        low, high = np.array(lesion.bbox_min_ijk), np.array(lesion.bbox_max_ijk)
        in_plane_extent_mm = np.hypot(*((high - low + 1)[:2] * liver.spacing_mm[:2]))
        assert 0.5 * in_plane_extent_mm < lesion.diameters.longest_mm <= in_plane_extent_mm + 1e-6
        assert lesion.diameters.short_axis_mm <= lesion.diameters.longest_mm
        assert low[2] <= lesion.diameters.slice_index <= high[2]
