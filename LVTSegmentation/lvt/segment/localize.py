"""The liver box: where the overlapping sliding window has to run for the labels that matter.

A first pass of the model on the image at twice its spacing (a 96-voxel window of a 2 mm model then
spans 384 mm, one window for most abdomens; no TTA, the first member of an ensemble) finds the liver
roughly: its largest liver component, decoded as the model was trained. The liver box is that
component's box grown by half a patch on every side, inside the body's box: the coarse pass misses
up to ~40 voxels of a liver's edge on real CT, so a smaller margin would cut livers
(Testing/Benchmarks/inference/liver_box_windows.md). The liver found by the pass over the box must
then keep clear of every face where the box cut the body (:func:`cuts_liver`), else the caller runs
the full sliding window. A finer liver-region stage can reuse :func:`liver_box` as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lvt.image import AIR_HU
from lvt.segment.network_config import TargetKind
from lvt.segment.postprocess import liver_region

Box = tuple[slice, ...]

LOCALIZE_ZOOM = 2  # the first pass runs at this many times the model spacing
MARGIN_PATCH_FRACTION = 0.5  # the liver box's margin around the coarse liver, as a fraction of the patch
CLEARANCE_PATCH_FRACTION = 1 / 16  # a liver closer than this to a face that cut the body was cut by the box


def downsample(hu: np.ndarray, zoom: int) -> np.ndarray:
    """The mean of each ``zoom``^3 block (far edges padded with air): the image at ``zoom`` times the spacing."""
    blocks = np.pad(hu, [(0, -s % zoom) for s in hu.shape], constant_values=AIR_HU)
    z, y, x = (s // zoom for s in blocks.shape)
    return blocks.reshape(z, zoom, y, zoom, x, zoom).mean(axis=(1, 3, 5), dtype=np.float32)


def pad_to_patch(hu: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, Box]:
    """Pad with air where the image is smaller than the patch; return the crop that undoes it."""
    pads = [max(0, p - s) for s, p in zip(hu.shape, patch, strict=True)]
    if not any(pads):
        return hu, tuple(slice(0, s) for s in hu.shape)
    widths = [(p // 2, p - p // 2) for p in pads]
    padded = np.pad(hu, widths, constant_values=AIR_HU)
    return padded, tuple(slice(lo, lo + s) for (lo, _), s in zip(widths, hu.shape, strict=True))


def _extent(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """Per axis, the first and one past the last index holding a voxel of ``mask``; None when it is empty."""
    extent = []
    for axis in range(mask.ndim):
        occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if occupied.size == 0:
            return None
        extent.append((int(occupied[0]), int(occupied[-1]) + 1))
    return extent


def mask_box(mask: np.ndarray, min_shape: Sequence[int], margin: Sequence[int] | None = None) -> Box | None:
    """The index box of a mask's voxels, grown by ``margin`` on each side, then to at least ``min_shape``.

    The box stays inside the array (which must be at least ``min_shape``); growing to ``min_shape``
    keeps it centred on the mask where it can. None when the mask is empty.
    """
    extent = _extent(mask)
    if extent is None:
        return None
    box = []
    for (low, high), size, minimum, grow in zip(extent, mask.shape, min_shape, margin or [0] * mask.ndim,
                                                strict=True):
        low, high = max(0, low - grow), min(size, high + grow)
        width = max(minimum, high - low)
        first = min(max(0, low - (width - (high - low)) // 2), size - width)
        box.append(slice(first, first + width))
    return tuple(box)


def body_box(hu: np.ndarray, threshold_hu: float, min_shape: tuple[int, ...]) -> Box | None:
    """The smallest index box holding every voxel above ``threshold_hu``, grown to at least ``min_shape``.

    A cheap body mask: the patient (and the table) are above -500 HU, air is not. Growing keeps the
    box inside the image, centred on the body where it can; the image must be at least ``min_shape``.

    Args:
        hu: (Z, Y, X) HU image.
        threshold_hu: voxels above it count as body.
        min_shape: the patch size: the box is never smaller.

    Returns:
        One slice per axis, or None when no voxel is above the threshold.
    """
    return mask_box(hu > threshold_hu, min_shape)


def liver_box(probabilities: np.ndarray, target: TargetKind, patch: Sequence[int], shape: Sequence[int],
              zoom: int = 1) -> Box | None:
    """The liver box on a grid of ``shape`` from probabilities on a grid ``zoom`` times coarser.

    Args:
        probabilities: (3, z, y, x) class probabilities whose voxel 0 covers the first ``zoom``^3
            voxels of the fine grid.
        target: the manifest's target kind (how the probabilities decode).
        patch: the model's patch: the box is at least a patch and has half a patch of margin.
        shape: the fine grid's shape.

    Returns:
        The box on the fine grid, or None when the probabilities hold no liver.
    """
    liver = liver_region(probabilities, target)
    if not liver.any():
        return None
    for axis in range(liver.ndim):
        liver = liver.repeat(zoom, axis=axis)
    margin = [round(p * MARGIN_PATCH_FRACTION) for p in patch]
    return mask_box(liver[tuple(slice(0, s) for s in shape)], patch, margin)


def cuts_liver(liver: np.ndarray, box: Box, within: Box, patch: Sequence[int]) -> bool:
    """Whether ``box`` cut the liver, or missed it: the pass over it found none.

    Args:
        liver: the liver found by the pass over ``box`` (a mask of the box's shape).
        box: the liver box, inside ``within``.
        within: the box of the body: a face of ``box`` that is also a face of ``within`` cuts no liver.
        patch: the clearance a liver must keep from the other faces is a fraction of it.
    """
    extent = _extent(liver)
    if extent is None:
        return True
    for (low, high), inner, outer, size in zip(extent, box, within, patch, strict=True):
        clearance = max(1, round(size * CLEARANCE_PATCH_FRACTION))
        if (inner.start > outer.start and low < clearance) or \
                (inner.stop < outer.stop and high > inner.stop - inner.start - clearance):
            return True
    return False


def shift(box: Box, origin: Box) -> Box:
    """A box given inside ``origin`` in the coordinates ``origin`` is given in."""
    return tuple(slice(o.start + b.start, o.start + b.stop) for b, o in zip(box, origin, strict=True))
