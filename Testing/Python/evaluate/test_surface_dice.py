"""Tests of lvt.evaluate.surface_dice: surfel areas by hand, empty masks, and MONAI's surfel NSD.

MONAI's ``compute_surface_dice(..., use_subvoxels=True)`` is an independent implementation of the
same definition (DeepMind's surface-distance table, convolution codes, torch), so agreement with it
on anisotropic grids checks the areas, the codes and the distances together.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from lvt.evaluate import metrics, surface_dice

CT_SPACING_ZYX_MM = (2.5, 0.7, 0.7)


def _one_hot(mask: np.ndarray):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))


def _monai_nsd(pred: np.ndarray, truth: np.ndarray, spacing, tolerance_mm: float) -> float:
    monai_metrics = pytest.importorskip("monai.metrics")
    return monai_metrics.compute_surface_dice(
        _one_hot(pred), _one_hot(truth), [tolerance_mm], spacing=spacing, use_subvoxels=True).item()


def _ellipsoid(shape, centre_mm, radii_mm, spacing_zyx_mm) -> np.ndarray:
    """Voxels whose centre (index × spacing, in mm) lies inside the ellipsoid."""
    grid = np.indices(shape).astype(float)
    return sum(((grid[a] * spacing_zyx_mm[a] - centre_mm[a]) / radii_mm[a]) ** 2 for a in range(3)) <= 1.0


def _voxel_count_nsd(pred: np.ndarray, truth: np.ndarray, spacing, tolerance_mm: float) -> float:
    """The definition lvt used before: every boundary voxel one element, whatever its area."""
    d = metrics.surface_distances(pred, truth, spacing)
    within = np.count_nonzero(d.pred_to_truth_mm <= tolerance_mm) + np.count_nonzero(d.truth_to_pred_mm <= tolerance_mm)
    return within / (d.pred_to_truth_mm.size + d.truth_to_pred_mm.size)


def test_one_corner_and_flat_configurations_have_their_area_by_hand():
    sz, sy, sx = spacing = (2.5, 0.7, 0.6)
    table = surface_dice.surfel_area_table(spacing)
    # One voxel inside: a triangle through the three edge midpoints next to it.
    corner = 0.5 * math.sqrt((sy * sx / 4) ** 2 + (sz * sx / 4) ** 2 + (sz * sy / 4) ** 2)
    assert table[int(surface_dice.CORNER_BITS[0, 0, 0])] == pytest.approx(corner)
    # The four voxels of one z-layer inside: a flat square facing the thick-slice axis, sy x sx.
    assert table[int(surface_dice.CORNER_BITS[0].sum())] == pytest.approx(sy * sx)
    assert table[int(surface_dice.CORNER_BITS[:, :, 0].sum())] == pytest.approx(sz * sy)
    assert table[0] == table[255] == 0.0


def test_a_configuration_and_its_complement_bound_the_same_surface():
    table = surface_dice.surfel_area_table(CT_SPACING_ZYX_MM)
    np.testing.assert_allclose(table, table[::-1])
    assert np.count_nonzero(table) == 254


def test_area_table_equals_the_surface_distance_librarys_for_all_256_configurations():
    """MONAI ships DeepMind's table of surfel normals and its own bit order for the 2 x 2 x 2 block."""
    monai_utils = pytest.importorskip("monai.metrics.utils")
    theirs, kernel = monai_utils.create_table_neighbour_code_to_surface_area(CT_SPACING_ZYX_MM)
    their_bits = kernel.numpy().reshape(2, 2, 2)  # [dz, dy, dx], like CORNER_BITS
    ours = surface_dice.surfel_area_table(CT_SPACING_ZYX_MM)
    for code in range(256):
        their_code = int(their_bits[(code & surface_dice.CORNER_BITS) > 0].sum())
        assert ours[code] == pytest.approx(float(theirs[their_code]), rel=1e-5), code


def test_box_area_is_faces_plus_chamfered_edges_and_corners():
    """Marching cubes on a box of voxels: flat faces, edges cut at half a voxel, corner triangles."""
    sz, sy, sx = spacing = (2.5, 0.7, 0.6)
    a, b, c = 5, 7, 4
    box = np.zeros((a + 4, b + 4, c + 4), dtype=bool)
    box[2:2 + a, 2:2 + b, 2:2 + c] = True
    faces = 2 * ((a - 1) * sz * (b - 1) * sy + (a - 1) * sz * (c - 1) * sx + (b - 1) * sy * (c - 1) * sx)
    edges = 4 * ((a - 1) * sz * math.hypot(sy / 2, sx / 2) + (b - 1) * sy * math.hypot(sz / 2, sx / 2)
                 + (c - 1) * sx * math.hypot(sz / 2, sy / 2))
    corners = 8 * 0.5 * math.sqrt((sy * sx / 4) ** 2 + (sz * sx / 4) ** 2 + (sz * sy / 4) ** 2)
    surfels = surface_dice.surfel_distances(box, box, spacing)
    assert surfels.truth_areas_mm2.sum() == pytest.approx(faces + edges + corners)
    assert surface_dice.normalized_surface_dice(surfels, 0.0) == 1.0
    # The array edge counts as outside: the same box filling the whole array has the same area.
    whole = surface_dice.surfel_distances(box[2:-2, 2:-2, 2:-2], box[2:-2, 2:-2, 2:-2], spacing)
    assert whole.pred_areas_mm2.sum() == pytest.approx(faces + edges + corners)


def test_empty_masks_follow_the_conventions():
    empty = np.zeros((6, 6, 6), dtype=bool)
    blob = empty.copy()
    blob[2:4, 2:4, 2:4] = True
    assert surface_dice.normalized_surface_dice(surface_dice.surfel_distances(empty, empty, (1, 1, 1)), 3.0) == 1.0
    for pred, truth in ((empty, blob), (blob, empty)):
        surfels = surface_dice.surfel_distances(pred, truth, (2.0, 1.0, 1.0))
        assert surface_dice.normalized_surface_dice(surfels, 100.0) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        surface_dice.surfel_distances(empty, empty[:5], (1, 1, 1))


# Two offset ellipsoids on a CT grid (0.7 x 0.7 mm in-plane, 2.5 mm slices): shifted by three slices
# along z, and shifted obliquely with other radii.
ELLIPSOID_PAIRS = {
    "shift_z": (((45, 28, 28), (30, 18, 14)), ((52.5, 28, 28), (30, 18, 14))),
    "oblique": (((45, 28, 28), (30, 18, 14)), ((50, 31, 30), (25, 20, 14))),
}


def _ellipsoid_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    (truth_centre, truth_radii), (pred_centre, pred_radii) = ELLIPSOID_PAIRS[name]
    shape = (36, 80, 80)
    return (_ellipsoid(shape, pred_centre, pred_radii, CT_SPACING_ZYX_MM),
            _ellipsoid(shape, truth_centre, truth_radii, CT_SPACING_ZYX_MM))


@pytest.mark.parametrize("tolerance_mm", [1.0, 3.0, 7.0])
@pytest.mark.parametrize("pair", sorted(ELLIPSOID_PAIRS))
def test_matches_monai_surfels_on_offset_ellipsoids(pair, tolerance_mm):
    pred, truth = _ellipsoid_pair(pair)
    ours = surface_dice.normalized_surface_dice(
        surface_dice.surfel_distances(pred, truth, CT_SPACING_ZYX_MM), tolerance_mm)
    assert 0.2 < ours < 1.0  # neither trivial nor empty at any tolerance
    assert ours == pytest.approx(_monai_nsd(pred, truth, CT_SPACING_ZYX_MM, tolerance_mm), abs=0.01)


def test_counting_boundary_voxels_gave_a_different_nsd_on_a_ct_grid():
    """The definition used before this module differs by more than 0.05 from the surfel one here."""
    pred, truth = _ellipsoid_pair("shift_z")
    surfels = surface_dice.surfel_distances(pred, truth, CT_SPACING_ZYX_MM)
    gaps = [abs(surface_dice.normalized_surface_dice(surfels, tolerance)
                - _voxel_count_nsd(pred, truth, CT_SPACING_ZYX_MM, tolerance)) for tolerance in (1.0, 3.0)]
    assert min(gaps) > 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_monai_surfels_on_ragged_shapes(seed):
    """Noisy shapes hold every ambiguous block configuration; each must get the library's area."""
    rng = np.random.default_rng(seed)
    spacing = tuple(float(s) for s in rng.uniform(0.5, 3.0, 3))
    pred, truth = (ndimage.gaussian_filter(rng.random((30, 30, 30)), 1.0) > 0.5 for _ in range(2))
    pred[0, :5, :5] = True  # on the array border
    tolerance = 2.0 * min(spacing)
    ours = surface_dice.normalized_surface_dice(surface_dice.surfel_distances(pred, truth, spacing), tolerance)
    assert ours == pytest.approx(_monai_nsd(pred, truth, spacing, tolerance), abs=1e-4)
