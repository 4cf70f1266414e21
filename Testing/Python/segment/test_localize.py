"""The liver box: block means, boxes from masks, the box from a coarse pass, the check that it cut no liver."""

from __future__ import annotations

import numpy as np
import pytest

from lvt.image import AIR_HU
from lvt.segment.localize import cuts_liver, downsample, liver_box, mask_box, pad_to_patch, shift


def test_downsample_takes_block_means_and_pads_the_far_edges_with_air() -> None:
    hu = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    coarse = downsample(hu, 2)
    assert coarse.shape == (2, 2, 3) and coarse.dtype == np.float32
    assert coarse[0, 0, 0] == pytest.approx(hu[:2, :2, :2].mean())
    assert coarse[1, 1, 1] == pytest.approx((hu[2, 2:4, 2:4].sum() + AIR_HU * 4) / 8)  # half the block is air
    assert coarse[1, 1, 2] == pytest.approx((hu[2, 2:4, 4].sum() + AIR_HU * 6) / 8)


def test_mask_box_grows_by_the_margin_inside_the_array_then_to_the_minimum_shape() -> None:
    mask = np.zeros((20, 30, 40), dtype=bool)
    mask[5:8, 2:4, 30:38] = True
    assert mask_box(mask, (1, 1, 1)) == (slice(5, 8), slice(2, 4), slice(30, 38))
    assert mask_box(mask, (1, 1, 1), (2, 3, 4)) == (slice(3, 10), slice(0, 7), slice(26, 40))
    # grown about the mask's centre where it can, never past the array
    assert mask_box(mask, (9, 10, 16), (0, 0, 0)) == (slice(2, 11), slice(0, 10), slice(24, 40))
    assert mask_box(np.zeros((4, 4, 4), dtype=bool), (1, 1, 1)) is None


def test_liver_box_maps_the_largest_coarse_liver_to_the_fine_grid_with_half_a_patch_of_margin() -> None:
    probabilities = np.zeros((3, 20, 25, 30), dtype=np.float32)
    probabilities[0, 6:10, 8:12, 10:15] = 0.9  # the liver
    probabilities[2, 9:11, 9:10, 14:16] = 0.8  # a tumor inside it: part of the whole liver
    probabilities[0, 1:2, 1:2, 1:2] = 0.9  # a speck: not the largest piece, ignored
    box = liver_box(probabilities, "ml", patch=(16, 16, 16), shape=(40, 50, 59), zoom=2)
    # coarse 6..11 x 8..12 x 10..16 -> fine 12..22 x 16..24 x 20..32, then 8 voxels of margin
    assert box == (slice(4, 30), slice(8, 32), slice(12, 40))
    # a patch larger than the box with margin: grown, and kept inside the (odd-sized) fine grid
    assert liver_box(probabilities, "ml", patch=(40, 16, 16), shape=(40, 50, 59), zoom=2)[0] == slice(0, 40)
    assert liver_box(np.zeros_like(probabilities), "ml", patch=(16, 16, 16), shape=(40, 50, 59), zoom=2) is None


def test_liver_box_decodes_as_the_model_was_trained() -> None:
    """A softmax (MC) model's liver is its argmax: 0.45 liver beats 0.2 background though below 0.5."""
    probabilities = np.zeros((3, 12, 12, 12), dtype=np.float32)
    probabilities[0, 4:8, 4:8, 4:8] = 0.45
    probabilities[2, 4:8, 4:8, 4:8] = 0.35
    assert liver_box(probabilities, "ml", (4, 4, 4), (12, 12, 12)) is None
    assert liver_box(probabilities, "mc", (4, 4, 4), (12, 12, 12)) == (slice(2, 10),) * 3


@pytest.mark.parametrize(("liver_slices", "cut"), [
    ((slice(10, 20), slice(10, 20), slice(10, 20)), False),  # well inside
    ((slice(0, 20), slice(10, 20), slice(10, 20)), False),  # at a face the box shares with the body
    ((slice(10, 20), slice(10, 20), slice(10, 30)), True),  # reaches the box's far x face inside the body
    ((slice(10, 20), slice(1, 20), slice(10, 20)), True),  # within the clearance (2 voxels) of the near y face
    ((slice(10, 20), slice(2, 20), slice(10, 20)), False),  # just clear of it
])
def test_a_liver_at_a_face_where_the_box_cut_the_body_was_cut(liver_slices: tuple[slice, ...], cut: bool) -> None:
    box = (slice(0, 30), slice(5, 35), slice(5, 35))  # shares its z faces with the body's box
    body = (slice(0, 30), slice(0, 40), slice(0, 40))
    liver = np.zeros((30, 30, 30), dtype=bool)
    liver[liver_slices] = True
    assert cuts_liver(liver, box, body, patch=(32, 32, 32)) is cut


def test_a_box_that_holds_no_liver_does_not_count_as_holding_it() -> None:
    box = (slice(0, 8),) * 3
    assert cuts_liver(np.zeros((8, 8, 8), dtype=bool), box, box, patch=(8, 8, 8))


def test_pad_to_patch_pads_with_air_and_gives_the_crop_back() -> None:
    hu = np.zeros((5, 20, 7), dtype=np.float32)
    padded, unpad = pad_to_patch(hu, (8, 8, 8))
    assert padded.shape == (8, 20, 8) and padded[0, 0, 0] == AIR_HU
    assert unpad == (slice(1, 6), slice(0, 20), slice(0, 7))
    np.testing.assert_array_equal(padded[unpad], hu)
    same, whole = pad_to_patch(hu, (4, 4, 4))
    assert same is hu and whole == (slice(0, 5), slice(0, 20), slice(0, 7))
    assert shift((slice(1, 3), slice(0, 2)), (slice(10, 20), slice(5, 9))) == (slice(11, 13), slice(5, 7))
