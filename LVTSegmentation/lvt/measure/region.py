"""Where a label map's voxels are: the box of its nonzero voxels, to which every measurement is cropped.

A label map on a CT grid is mostly background: the liver fills a few percent of a 512 x 512 x 600
image. Everything outside the box of the nonzero voxels is background, so components, boundaries,
counts and distances computed inside it are those of the whole image, at a fraction of the memory
and time. Results keep whole-grid indices by adding the box's first voxel (``offset_kji``), so the
numbers are the same to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[slice, slice, slice]


def nonzero_box(array: np.ndarray) -> Box | None:
    """The smallest box (array order k, j, i) holding every nonzero voxel of ``array``; None when there is none.

    From per-axis projections, without index arrays (``np.argwhere`` costs 24 bytes per voxel):
    one pass over the whole array, then one over the slices that hold something.
    """
    slices_k = np.flatnonzero(array.any(axis=(1, 2)))
    if slices_k.size == 0:
        return None
    k = slice(int(slices_k[0]), int(slices_k[-1]) + 1)
    rows_columns = array[k].any(axis=0)
    rows, columns = np.flatnonzero(rows_columns.any(axis=1)), np.flatnonzero(rows_columns.any(axis=0))
    return k, slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)


def box_start(box: Box) -> np.ndarray:
    """(3,) whole-grid index (k, j, i) of a box's first voxel."""
    return np.array([s.start for s in box])


def shifted(box: Box, offset_kji: np.ndarray) -> Box:
    """A box given inside a region moved to whole-grid indices (``offset_kji``: the region's first voxel)."""
    return tuple(slice(s.start + int(o), s.stop + int(o)) for s, o in zip(box, offset_kji, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class LabelRegion:
    """The nonzero box of a label map: ``array`` is a view of the labels inside it, ``box`` where it lies.

    ``box`` is None (and ``array`` empty) for a map without a nonzero voxel.
    """

    array: np.ndarray
    box: Box | None

    @classmethod
    def of(cls, labels: np.ndarray) -> LabelRegion:
        box = nonzero_box(labels)
        return cls(labels[:0, :0, :0] if box is None else labels[box], box)

    @property
    def offset_kji(self) -> np.ndarray:
        """(3,) whole-grid index (k, j, i) of the region's first voxel."""
        return np.zeros(3, dtype=int) if self.box is None else box_start(self.box)

    def centroid_kji(self, mask: np.ndarray) -> np.ndarray:
        """Whole-grid mean index (k, j, i) of a non-empty mask on the region (as ``np.argwhere(...).mean(0)``).

        Exact integer sums from per-axis voxel counts, so the result equals the mean of the voxels'
        whole-grid indices to the last bit, without their index array.
        """
        total = np.count_nonzero(mask)
        means = []
        for axis, start in enumerate(self.offset_kji):
            counts = np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis)).astype(np.int64)
            means.append(int(counts @ (np.arange(counts.size, dtype=np.int64) + int(start))) / total)
        return np.array(means)
