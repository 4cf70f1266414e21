"""Tests for lvt.measure.planning: tumor-to-vessel distance against analytic shapes, branches, remnant volume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import rotation

from lvt.image import Image
from lvt.measure.planning import liver_remnant, planning_summary, vessel_branches, vessel_proximity
from lvt.measure.volumes_and_lesions import measure_labels

SPACING_MM = (0.8, 0.9, 2.0)  # anisotropic, and the grid is rotated about S below
TUMOR_RADIUS_MM = 10.0



def _grid(shape_kji: tuple[int, int, int], spacing_mm=SPACING_MM, degrees: float = 20.0) -> Image:
    """An empty grid whose centre voxel sits at the LPS origin."""
    direction = rotation(2, degrees)
    empty = Image(np.zeros(shape_kji, np.uint8), spacing_mm, (0.0, 0.0, 0.0), direction)
    origin = -empty.ijk_to_lps((np.array(shape_kji[::-1]) - 1) / 2.0)[0]
    return Image(empty.array, spacing_mm, tuple(origin), direction)


def _centres(grid: Image) -> np.ndarray:
    k, j, i = np.indices(grid.array.shape)
    return grid.ijk_to_lps(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*grid.array.shape, 3)


def _tube(points: np.ndarray, through: np.ndarray, axis: np.ndarray, radius_mm: float) -> np.ndarray:
    """Voxels whose centre lies within ``radius_mm`` of the infinite line through ``through`` along ``axis``."""
    axis = axis / np.linalg.norm(axis)
    offset = points - through
    return np.linalg.norm(offset - (offset @ axis)[..., None] * axis, axis=-1) <= radius_mm


# A vessel axis oblique to every grid axis, and the unit normal (in the axial plane) towards it.
VESSEL_AXIS = np.array([1.0, 1.0, 0.3]) / np.linalg.norm([1.0, 1.0, 0.3])
TOWARDS_VESSEL = np.cross(VESSEL_AXIS, [0.0, 0.0, 1.0]) / np.linalg.norm(np.cross(VESSEL_AXIS, [0.0, 0.0, 1.0]))


def _tumor_and_vessel(gap_mm: float, vessel_radius_mm: float = 3.0) -> Image:
    """Liver everywhere, a sphere tumor at the origin and a straight vessel whose surface is ``gap_mm`` away."""
    grid = _grid((36, 120, 120))
    points = _centres(grid)
    labels = np.ones(grid.array.shape, np.uint8)
    axis_point = TOWARDS_VESSEL * (TUMOR_RADIUS_MM + vessel_radius_mm + gap_mm)
    labels[_tube(points, axis_point, VESSEL_AXIS, vessel_radius_mm)] = 2
    labels[np.linalg.norm(points, axis=-1) <= TUMOR_RADIUS_MM] = 3
    return grid.with_array(labels)


def _in_plane_diagonal_mm(grid: Image) -> float:
    return float(np.hypot(grid.spacing_mm[0], grid.spacing_mm[1]))


@pytest.mark.parametrize("gap_mm", [3.0, 8.0, 14.0])
def test_distance_to_a_straight_vessel_matches_the_analytic_gap(gap_mm: float) -> None:
    labels = _tumor_and_vessel(gap_mm)
    (proximity,) = vessel_proximity(labels)
    voxel = _in_plane_diagonal_mm(labels)
    assert proximity.distance_mm == pytest.approx(gap_mm, abs=voxel)
    assert proximity.vessels_within_margin is (gap_mm <= 10.0)
    on_lesion = np.asarray(proximity.lesion_surface_point_lps_mm)
    on_vessel = np.asarray(proximity.nearest_vessel_point_lps_mm)
    # The end points are the closest points: their distance is the reported one; they lie on the two
    # analytic surfaces, on the sides that face each other (the gap is flat along the vessel, so the
    # pair may slide along it by a few mm).
    assert np.linalg.norm(on_vessel - on_lesion) == pytest.approx(proximity.distance_mm, abs=1e-9)
    assert np.linalg.norm(on_lesion) == pytest.approx(TUMOR_RADIUS_MM, abs=voxel)
    axis_point = TOWARDS_VESSEL * (TUMOR_RADIUS_MM + 3.0 + gap_mm)
    offset = on_vessel - axis_point
    assert np.linalg.norm(offset - (offset @ VESSEL_AXIS) * VESSEL_AXIS) == pytest.approx(3.0, abs=voxel)
    assert on_lesion @ TOWARDS_VESSEL > 0.9 * TUMOR_RADIUS_MM
    assert (on_vessel - axis_point) @ TOWARDS_VESSEL < 0


def test_a_vessel_running_into_the_tumor_has_zero_distance() -> None:
    labels = _tumor_and_vessel(-2.0)
    (proximity,) = vessel_proximity(labels)
    assert proximity.distance_mm == 0.0
    assert proximity.vessels_within_margin


def test_nearest_branch_is_the_closer_vessel_even_when_it_is_the_smaller_one() -> None:
    grid = _grid((36, 120, 120))
    points = _centres(grid)
    labels = np.ones(grid.array.shape, np.uint8)
    labels[_tube(points, TOWARDS_VESSEL * (TUMOR_RADIUS_MM + 4.0 + 15.0), VESSEL_AXIS, 4.0)] = 2  # big, 15 mm
    labels[_tube(points, -TOWARDS_VESSEL * (TUMOR_RADIUS_MM + 1.5 + 5.0), VESSEL_AXIS, 1.5)] = 2  # small, 5 mm
    labels[np.linalg.norm(points, axis=-1) <= TUMOR_RADIUS_MM] = 3
    labels = grid.with_array(labels)
    branches = vessel_branches(labels)
    assert len(branches.volumes_ml) == 2 and branches.volumes_ml[0] > branches.volumes_ml[1]
    (proximity,) = vessel_proximity(labels)
    assert proximity.nearest_branch_id == 2
    assert proximity.nearest_branch_volume_ml == branches.volumes_ml[1]
    assert proximity.distance_mm == pytest.approx(5.0, abs=_in_plane_diagonal_mm(labels))
    assert proximity.branches_within_margin == (2,)


def test_planning_summary_is_json_ready_and_null_without_vessels() -> None:
    grid = _grid((20, 60, 60))
    labels = np.ones(grid.array.shape, np.uint8)
    labels[np.linalg.norm(_centres(grid), axis=-1) <= 8.0] = 3
    summary = planning_summary(grid.with_array(labels))
    json.dumps(summary, allow_nan=False)
    (lesion,) = summary["lesions"]
    assert lesion["id"] == 1
    assert lesion["distance_to_vessels_mm"] is None and lesion["nearest_vessel_point_lps_mm"] is None
    assert lesion["vessels_within_10mm"] is False
    assert summary["branches"] == {"count": 0, "volumes_ml": []}


def test_planning_summary_lists_every_lesion_with_the_report_ids() -> None:
    labels = _tumor_and_vessel(6.0)
    array = labels.array.copy()
    array[np.linalg.norm(_centres(labels) - np.array([-8.0, 8.0, 24.0]), axis=-1) <= 5.0] = 3  # a small second lesion
    labels = labels.with_array(array)
    measurements = measure_labels(labels)
    summary = planning_summary(labels, measurements.lesions)
    assert [entry["id"] for entry in summary["lesions"]] == [lesion.id for lesion in measurements.lesions] == [1, 2]
    near, far = summary["lesions"]
    assert near["distance_to_vessels_mm"] == pytest.approx(6.0, abs=_in_plane_diagonal_mm(labels))
    assert far["distance_to_vessels_mm"] > near["distance_to_vessels_mm"]
    assert summary == planning_summary(labels)  # measuring again gives the same ids


def _sphere_cap_ml(radius_mm: float, height_mm: float) -> float:
    return np.pi * height_mm**2 * (3 * radius_mm - height_mm) / 3.0 / 1000.0


def test_remnant_volume_of_a_sphere_cut_by_a_plane() -> None:
    grid = _grid((40, 100, 110), spacing_mm=(1.0, 1.1, 2.5), degrees=-15.0)
    points = _centres(grid)
    radius, cut = 40.0, 10.0  # the resection removes the cap beyond 10 mm from the centre along n
    normal = np.array([0.6, 0.0, 0.8])
    labels = (np.linalg.norm(points, axis=-1) <= radius).astype(np.uint8)
    tumor_centre = normal * 25.0  # wholly inside the resected cap
    labels[np.linalg.norm(points - tumor_centre, axis=-1) <= 6.0] = 3
    labels[np.linalg.norm(points + normal * 20.0, axis=-1) <= 5.0] = 3  # stays in the remnant
    resection = grid.with_array((points @ normal > cut).astype(np.uint8))
    remnant = liver_remnant(grid.with_array(labels), resection)
    whole_ml = 4.0 / 3.0 * np.pi * radius**3 / 1000.0
    expected_ml = whole_ml - _sphere_cap_ml(radius, radius - cut)
    assert remnant.whole_liver_ml == pytest.approx(whole_ml, rel=0.01)
    assert remnant.remnant_ml == pytest.approx(expected_ml, rel=0.01)
    assert remnant.remnant_percent == pytest.approx(100.0 * expected_ml / whole_ml, abs=1.0)
    assert remnant.remnant_ml + remnant.resected_liver_ml == pytest.approx(remnant.whole_liver_ml)
    fractions = dict(remnant.lesion_fraction_resected)
    assert fractions == {1: 1.0, 2: 0.0}
    assert remnant.tumor_in_remnant_ml == pytest.approx(4.0 / 3.0 * np.pi * 5.0**3 / 1000.0, rel=0.1)


def test_remnant_accepts_a_resection_region_drawn_on_another_grid() -> None:
    grid = _grid((30, 80, 80), spacing_mm=(1.2, 1.2, 2.5), degrees=0.0)
    labels = grid.with_array((np.linalg.norm(_centres(grid), axis=-1) <= 30.0).astype(np.uint8))
    coarse = _grid((20, 40, 40), spacing_mm=(3.0, 3.0, 4.0), degrees=30.0)
    half = coarse.with_array((_centres(coarse)[..., 0] > 0.0).astype(np.uint8))  # patient-left half (+x)
    remnant = liver_remnant(labels, half)
    assert remnant.remnant_percent == pytest.approx(50.0, abs=3.0)  # split to within the coarse voxels
    assert remnant.lesion_fraction_resected == ()
