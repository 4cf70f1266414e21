"""The fast mask operations of lvt.labels give scipy.ndimage's results exactly (they replace them in the clean-up)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lvt.labels import CONNECTIVITY_26, dilate_26, fill_holes


def _blobs(seed: int, shape: tuple[int, ...], fraction: float) -> np.ndarray:
    """A random mask of smoothed noise: blobs with holes, tunnels and pieces touching the array's edge."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 1.5)
    return noise > np.quantile(noise, 1.0 - fraction)


@pytest.mark.parametrize(("seed", "fraction"), [(0, 0.8), (1, 0.9), (2, 0.85)])
def test_fill_holes_equals_scipy(seed: int, fraction: float) -> None:
    mask = _blobs(seed, (24, 40, 36), fraction)
    expected = ndimage.binary_fill_holes(mask)
    assert expected.sum() > mask.sum()  # the masks have holes to fill
    np.testing.assert_array_equal(fill_holes(mask), expected)


def test_fill_holes_fills_a_closed_cavity_but_not_one_open_to_the_edge() -> None:
    shell = np.zeros((9, 9, 9), dtype=bool)
    shell[1:8, 1:8, 1:8] = True
    shell[3:6, 3:6, 3:6] = False  # closed cavity
    open_box = shell.copy()
    open_box[0:8, 4, 4] = False  # a tunnel from the cavity to the edge
    assert fill_holes(shell).sum() == 7**3
    np.testing.assert_array_equal(fill_holes(open_box), open_box)


@pytest.mark.parametrize("voxels", [0, 1, 2])
def test_dilate_26_equals_scipy_iterated_26_connected_dilation(voxels: int) -> None:
    mask = _blobs(3, (20, 30, 26), 0.05)
    expected = ndimage.binary_dilation(mask, CONNECTIVITY_26, iterations=voxels) if voxels else mask
    result = dilate_26(mask, voxels)
    assert result.dtype == bool and result is not mask
    np.testing.assert_array_equal(result, expected)
