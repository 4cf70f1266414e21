"""Tests of lvt.train.data.synthetic_tumors: lesions painted into a real CT (a lesion-free phantom here)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lvt.image import Image
from lvt.labels import LIVER
from lvt.phantom import PhantomConfig, make_phantom
from lvt.train.data.synthetic_tumors import insert_synthetic_tumors


@pytest.fixture(scope="module")
def plain_phantom():
    """A phantom without lesions, used as the 'real CT' for insert_synthetic_tumors."""
    return make_phantom(PhantomConfig(seed=6, spacing_mm=(3.0, 3.0, 3.0), noise_hu=12.0, n_tumors=(0, 0)))


def test_insert_synthetic_tumors_paints_inside_the_liver(plain_phantom):
    ct, liver = plain_phantom.image, plain_phantom.truth[LIVER]
    liver_hu = float(np.median(ct.array[liver]))
    dark, dark_mask = insert_synthetic_tumors(ct, liver, np.random.default_rng(0), (3, 3), kinds=("metastasis",),
                                               contrast_scale=(1.0, 1.0))
    assert dark.same_grid(ct) and dark.array.dtype == np.float32
    assert dark_mask.any() and not (dark_mask & ~liver).any()
    assert float(np.median(dark.array[dark_mask])) < liver_hu - 15.0
    assert np.array_equal(dark.array[~ndimage.binary_dilation(dark_mask, iterations=2)],
                          ct.array[~ndimage.binary_dilation(dark_mask, iterations=2)])
    bright, bright_mask = insert_synthetic_tumors(ct, liver, np.random.default_rng(0), (3, 3), kinds=("hcc",),
                                                  phase="arterial", contrast_scale=(1.0, 1.0))
    assert float(np.median(bright.array[bright_mask])) > liver_hu + 15.0
    again, again_mask = insert_synthetic_tumors(ct, liver, np.random.default_rng(0), (3, 3), kinds=("metastasis",),
                                                contrast_scale=(1.0, 1.0))
    assert np.array_equal(again.array, dark.array) and np.array_equal(again_mask, dark_mask)


def test_insert_synthetic_tumors_rejects_bad_input(plain_phantom):
    ct = plain_phantom.image
    with pytest.raises(ValueError, match="does not match"):
        insert_synthetic_tumors(ct, np.ones((2, 2, 2), bool), np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty"):
        insert_synthetic_tumors(ct, np.zeros(ct.array.shape, bool), np.random.default_rng(0))
    small = Image(np.zeros((4, 4, 4), np.float32), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="kinds"):
        insert_synthetic_tumors(small, np.ones((4, 4, 4), bool), np.random.default_rng(0), kinds=("polyp",))


def _on_liver_border(tumor: np.ndarray, liver: np.ndarray) -> int:
    """Tumor voxels with a non-liver neighbour: lesions cut by the liver's surface."""
    return int((tumor & ndimage.binary_dilation(~liver)).sum())


def test_lesions_may_reach_the_liver_surface_and_be_cut_there(plain_phantom):
    ct, liver = plain_phantom.image, plain_phantom.truth[LIVER]
    border = {}
    for min_inside in (1.0, 0.6):
        masks = [insert_synthetic_tumors(ct, liver, np.random.default_rng(seed), (4, 4), min_inside=min_inside)[1]
                 for seed in range(6)]
        assert all(not (mask & ~liver).any() for mask in masks)
        border[min_inside] = sum(_on_liver_border(mask, liver) for mask in masks)
    assert border[0.6] > 3 * max(border[1.0], 10)


def test_very_large_lesions_fit_when_they_may_reach_the_border(plain_phantom):
    ct, liver = plain_phantom.image, plain_phantom.truth[LIVER]
    _, tumor = insert_synthetic_tumors(ct, liver, np.random.default_rng(2), (1, 1), diameter_mm=(110.0, 150.0))
    assert tumor.sum() * 27.0 / 1000.0 > 150.0  # mL; a 110 mm sphere holds about 700 mL


def test_contrast_scale_sets_how_far_lesions_differ_from_the_liver(plain_phantom):
    ct, liver = plain_phantom.image, plain_phantom.truth[LIVER]
    liver_hu = float(np.median(ct.array[liver]))
    differences = {}
    for scale in (0.35, 1.3):
        painted, tumor = insert_synthetic_tumors(ct, liver, np.random.default_rng(4), (3, 3), kinds=("metastasis",),
                                                 contrast_scale=(scale, scale))
        core = ndimage.binary_erosion(tumor, iterations=1)
        differences[scale] = abs(float(np.mean(painted.array[core])) - liver_hu)
    assert 0.15 < differences[0.35] / differences[1.3] < 0.45
