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
    dark, dark_mask = insert_synthetic_tumors(ct, liver, np.random.default_rng(0), (3, 3), kinds=("metastasis",))
    assert dark.same_grid(ct) and dark.array.dtype == np.float32
    assert dark_mask.any() and not (dark_mask & ~liver).any()
    assert float(np.median(dark.array[dark_mask])) < liver_hu - 15.0
    assert np.array_equal(dark.array[~ndimage.binary_dilation(dark_mask, iterations=2)],
                          ct.array[~ndimage.binary_dilation(dark_mask, iterations=2)])
    bright, bright_mask = insert_synthetic_tumors(ct, liver, np.random.default_rng(0), (3, 3), kinds=("hcc",),
                                                  phase="arterial")
    assert float(np.median(bright.array[bright_mask])) > liver_hu + 15.0
    again, again_mask = insert_synthetic_tumors(ct, liver, np.random.default_rng(0), (3, 3), kinds=("metastasis",))
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
