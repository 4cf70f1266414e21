"""Tests for lvt.measure.region and the measurements that read a label map through it.

A label map on a CT grid is mostly background. Measuring it must cost memory in proportion to the
liver, not to the image (a 512 x 512 x 600 CT once peaked at 3.9 GB in the planning numbers), and
give exactly what a brute-force computation on the whole image gives.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import rotation
from scipy import ndimage

from lvt.grid import crop
from lvt.image import Image
from lvt.labels import CONNECTIVITY_26
from lvt.measure.planning import planning_summary
from lvt.measure.region import LabelRegion, nonzero_box
from lvt.measure.surfaces import extract_surfaces
from lvt.measure.views import liver_centre_lps
from lvt.measure.volumes_and_lesions import measure_labels

SHAPE_KJI = (48, 400, 400)  # 7.7 M voxels, of which the liver below fills under 1 %
SPACING_MM = (0.8, 0.8, 1.5)


def _small_liver_in_a_large_image() -> Image:
    """An oblique grid, mostly empty: an ellipsoid liver off-centre, two lesions, a vessel crossing the liver."""
    grid = Image(np.zeros(SHAPE_KJI, np.uint8), SPACING_MM, (-100.0, -80.0, 40.0), rotation(2, 20.0))
    k, j, i = (np.arange(n, dtype=np.float32) for n in SHAPE_KJI)
    k, j, i = k[:, None, None], j[None, :, None], i[None, None, :]
    centre = np.array([200.0, 90.0, 22.0])  # (i, j, k): right of, above and behind the image centre
    radius = (((i - centre[0]) * 0.8 / 24.0) ** 2 + ((j - centre[1]) * 0.8 / 18.0) ** 2
              + ((k - centre[2]) * 1.5 / 14.0) ** 2)
    labels = np.where(radius <= 1.0, 1, 0).astype(np.uint8)
    labels[(np.abs(j - 95) <= 1) & (np.abs(k - 20) <= 1) & (radius <= 1.0)] = 2
    labels[((i - 188) ** 2 + (j - 84) ** 2) * 0.64 + ((k - 24) * 1.5) ** 2 <= 36.0] = 3
    labels[((i - 214) ** 2 + (j - 80) ** 2) * 0.64 + ((k - 18) * 1.5) ** 2 <= 9.0] = 3
    return grid.with_array(labels)


@pytest.fixture(scope="module")
def labels() -> Image:
    return _small_liver_in_a_large_image()


def test_nonzero_box_and_centroid_match_the_voxel_indices():
    rng = np.random.default_rng(3)
    array = np.zeros((9, 30, 25), np.uint8)
    array[2:7, 4:19, 11:24] = rng.integers(0, 4, (5, 15, 13))
    array[2, 4, 11] = array[6, 18, 23] = 1
    indices = np.argwhere(array)
    box = nonzero_box(array)
    assert [(s.start, s.stop) for s in box] == list(zip(indices.min(axis=0), indices.max(axis=0) + 1, strict=True))
    region = LabelRegion.of(array)
    assert np.array_equal(region.array, array[box]) and np.array_equal(region.offset_kji, [2, 4, 11])
    mask = region.array == 3
    assert np.array_equal(region.centroid_kji(mask), np.argwhere(array == 3).mean(axis=0))  # to the last bit
    assert nonzero_box(np.zeros((3, 4, 5))) is None
    assert LabelRegion.of(np.zeros((3, 4, 5))).array.size == 0


def test_volumes_and_lesions_match_brute_force_on_the_whole_image(labels):
    array = labels.array
    measured = measure_labels(labels)
    voxel_ml = labels.voxel_volume_ml
    assert measured.whole_liver_volume_ml == np.count_nonzero(array) * voxel_ml
    assert measured.parenchyma_volume_ml == np.count_nonzero(array == 1) * voxel_ml
    assert measured.vessel_volume_ml == np.count_nonzero(array == 2) * voxel_ml
    assert measured.tumor_volume_ml == np.count_nonzero(array == 3) * voxel_ml
    components, count = ndimage.label(array == 3, structure=CONNECTIVITY_26)
    sizes = np.bincount(components.ravel())[1:]
    assert count == len(measured.lesions) == 2 and sizes[0] != sizes[1]
    for lesion, index in zip(measured.lesions, np.argsort(-sizes) + 1, strict=True):
        voxels = np.argwhere(components == index)
        assert lesion.volume_ml == len(voxels) * voxel_ml
        assert list(voxels.min(axis=0)[::-1]) == list(lesion.bbox_min_ijk)
        assert list(voxels.max(axis=0)[::-1]) == list(lesion.bbox_max_ijk)
        centroid = labels.ijk_to_lps(voxels.mean(axis=0)[::-1])[0]
        assert np.allclose(lesion.centroid_lps_mm, centroid, atol=1e-9)
    assert measured.liver_cut_sides == ()


def test_numbers_do_not_depend_on_the_empty_image_around_the_liver(labels):
    """The same labels cropped to a small grid give the same numbers, the indices shifted by the crop.

    (End points are not compared: a round lesion has several longest chords, and rounding on another
    origin may pick another one of the same length.)
    """
    box = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in nonzero_box(labels.array))
    small = crop(labels, box)
    offset_ijk = np.array([s.start for s in box])[::-1]
    large_lesions, small_lesions = measure_labels(labels).lesions, measure_labels(small).lesions
    for a, b in zip(large_lesions, small_lesions, strict=True):
        assert np.array_equal(np.array(a.bbox_min_ijk) - offset_ijk, b.bbox_min_ijk)
        assert a.diameters.slice_index - offset_ijk[2] == b.diameters.slice_index
        assert a.diameters.longest_mm == pytest.approx(b.diameters.longest_mm, abs=1e-9)
        assert a.diameters.short_axis_mm == pytest.approx(b.diameters.short_axis_mm, abs=1e-9)
    large, small_summary = planning_summary(labels), planning_summary(small)
    assert large["branches"] == small_summary["branches"]
    for a, b in zip(large["lesions"], small_summary["lesions"], strict=True):
        assert a["distance_to_vessels_mm"] == pytest.approx(b["distance_to_vessels_mm"], abs=1e-9)
        assert a["nearest_branch_id"] == b["nearest_branch_id"]
        assert a["branches_within_10mm"] == b["branches_within_10mm"]
    centre = labels.ijk_to_lps(np.argwhere(labels.array).mean(axis=0)[::-1])[0]
    assert np.array_equal(liver_centre_lps(labels)[0], centre)
    assert np.allclose(liver_centre_lps(small)[0], centre, atol=1e-9)


def _traced_peak_bytes(action) -> int:
    """Peak bytes numpy and Python allocate in ``action`` (run once before, so imports are not counted)."""
    action()
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("stage", ["measure_labels", "planning_summary", "extract_surfaces", "liver_centre_lps"])
def test_memory_follows_the_liver_not_the_image(labels, stage):
    """Every step of the tail allocates well under one byte per image voxel (whole-image steps took 1 to 20)."""
    lesions = measure_labels(labels).lesions
    actions = {"measure_labels": lambda: measure_labels(labels),
               "planning_summary": lambda: planning_summary(labels, lesions),
               "extract_surfaces": lambda: extract_surfaces(labels),
               "liver_centre_lps": lambda: liver_centre_lps(labels)}
    assert _traced_peak_bytes(actions[stage]) < 0.5 * labels.array.size
