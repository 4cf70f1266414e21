"""Segmentation metrics: voxel overlap, boundary distances in mm, volume error.

Pure functions on boolean masks indexed ``[z, y, x]`` (the :class:`lvt.image.Image` array order).
Spacing arguments are named ``spacing_zyx_mm`` and follow that array order; an ``Image`` stores its
spacing in ``(i, j, k) = (x, y, z)`` order, so pass ``image.spacing_mm[::-1]``. Normalised surface
Dice is :mod:`lvt.evaluate.surface_dice` (surface elements with areas), lesion detection
:mod:`lvt.evaluate.lesions`.

Boundary representation of HD95 and ASSD (see docs/metrics.md): the boundary of a mask is its set
of *boundary voxels*, foreground voxels with at least one 6-neighbour outside the mask (voxels on
the array edge count as boundary). Distances between boundary voxel centres are Euclidean in
millimetres, so they are exact on anisotropic grids. This is MONAI's ``use_subvoxels=False``
definition, which the tests match to float precision.

Empty-mask conventions, shared by every function here:
- both masks empty: Dice, Jaccard, precision and recall are 1; HD95 and ASSD are 0 mm.
- exactly one mask empty: Dice, Jaccard, precision and recall are 0; HD95 and ASSD are ``inf``.
Voxel accuracy is always defined. Whether a class was annotated at all is not a property of the
masks: callers report a class the truth does not annotate as "not annotated" (``None``) and never
call these functions for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lvt.labels import boundary_voxels


def _both_empty(pred: np.ndarray, truth: np.ndarray) -> bool:
    return not pred.any() and not truth.any()


def _ratio_or_convention(numerator: int, denominator: int, pred: np.ndarray, truth: np.ndarray) -> float:
    """``numerator / denominator``; when the denominator is 0 apply the empty-mask conventions."""
    if denominator > 0:
        return numerator / denominator
    return 1.0 if _both_empty(pred, truth) else 0.0


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice similarity coefficient 2|P∩T| / (|P| + |T|).

    Args:
        pred: (Z, Y, X) bool predicted mask.
        truth: (Z, Y, X) bool reference mask, same shape.

    Returns:
        Dice in [0, 1]; 1.0 when both masks are empty.
    """
    overlap = int(np.count_nonzero(pred & truth))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    return _ratio_or_convention(2 * overlap, total, pred, truth)


def precision_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Voxel precision |P∩T| / |P|: 1.0 when both masks are empty, 0.0 when only ``pred`` is empty."""
    return _ratio_or_convention(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred)), pred, truth)


def recall_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Voxel recall |P∩T| / |T|: 1.0 when both masks are empty, 0.0 when only ``truth`` is empty."""
    return _ratio_or_convention(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(truth)), pred, truth)


def jaccard_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Jaccard index (IoU) |P∩T| / |P∪T|: 1.0 when both masks are empty, 0.0 when exactly one is."""
    return _ratio_or_convention(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred | truth)), pred, truth)


def accuracy_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Voxel accuracy: the share of all voxels of the array on which the two masks agree.

    Background dominates it, so it depends on the field of view and is close to 1 for any sensible
    prediction; compare it only between predictions on the same images.
    """
    return int(np.count_nonzero(pred == truth)) / pred.size


def relative_volume_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """Signed relative volume error (|P| - |T|) / |T| (spacing cancels out).

    Returns:
        The error as a fraction (0.05 = prediction 5 % too large); 0.0 when both masks are empty and
        ``inf`` when only the truth is empty.
    """
    pred_count, truth_count = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    if truth_count == 0:
        return 0.0 if pred_count == 0 else float("inf")
    return (pred_count - truth_count) / truth_count


@dataclass(frozen=True, eq=False)
class SurfaceDistances:
    """Nearest-boundary distances in mm between the boundary voxels of two masks.

    Attributes:
        pred_to_truth_mm: (Np,) float distance from each predicted boundary voxel to the nearest
            reference boundary voxel (``inf`` everywhere when the reference is empty).
        truth_to_pred_mm: (Nt,) float, the same from each reference boundary voxel.
    """

    pred_to_truth_mm: np.ndarray
    truth_to_pred_mm: np.ndarray

    @property
    def both_empty(self) -> bool:
        return self.pred_to_truth_mm.size == 0 and self.truth_to_pred_mm.size == 0


def _union_crop(pred: np.ndarray, truth: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``pred | truth`` grown by one voxel, so erosion sees the outside at every face."""
    coords = np.argwhere(pred | truth)
    low = np.maximum(coords.min(axis=0) - 1, 0)
    high = np.minimum(coords.max(axis=0) + 2, pred.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def distances_to_nearest(boundary: np.ndarray, at: np.ndarray, spacing_zyx_mm: tuple[float, ...]) -> np.ndarray:
    """Distance in mm from each ``at`` grid point to the nearest ``boundary`` point (``inf`` if none).

    Both masks live on one grid with spacing ``spacing_zyx_mm`` (voxels here, surfel cubes in
    :mod:`lvt.evaluate.surface_dice`).
    """
    if not boundary.any():
        return np.full(int(np.count_nonzero(at)), np.inf)
    return ndimage.distance_transform_edt(~boundary, sampling=spacing_zyx_mm)[at]


def surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing_zyx_mm: tuple[float, float, float]
) -> SurfaceDistances:
    """Symmetric boundary-voxel distances between two masks, in millimetres.

    The masks are cropped to their joint bounding box (plus one voxel) first; this does not change
    any distance because both boundaries lie inside it.

    Args:
        pred: (Z, Y, X) bool predicted mask.
        truth: (Z, Y, X) bool reference mask, same shape.
        spacing_zyx_mm: voxel size along the array axes (z, y, x) in mm.

    Returns:
        The distances both ways; both arrays are empty when both masks are.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    if _both_empty(pred, truth):
        return SurfaceDistances(np.zeros(0), np.zeros(0))
    crop = _union_crop(pred, truth)
    pred_edge, truth_edge = boundary_voxels(pred[crop]), boundary_voxels(truth[crop])
    spacing = tuple(float(s) for s in spacing_zyx_mm)
    return SurfaceDistances(
        pred_to_truth_mm=distances_to_nearest(truth_edge, pred_edge, spacing),
        truth_to_pred_mm=distances_to_nearest(pred_edge, truth_edge, spacing),
    )


def hausdorff_distance_95_mm(distances: SurfaceDistances) -> float:
    """95th-percentile Hausdorff distance: the larger of the two directed 95th percentiles (linear).

    Returns:
        HD95 in mm; 0.0 when both masks are empty, ``inf`` when one is.
    """
    if distances.both_empty:
        return 0.0
    if distances.pred_to_truth_mm.size == 0 or distances.truth_to_pred_mm.size == 0:
        return float("inf")
    return float(
        max(np.percentile(distances.pred_to_truth_mm, 95), np.percentile(distances.truth_to_pred_mm, 95))
    )


def average_symmetric_surface_distance_mm(distances: SurfaceDistances) -> float:
    """Mean of all boundary distances pooled over both directions (ASSD).

    Returns:
        ASSD in mm; 0.0 when both masks are empty, ``inf`` when one is.
    """
    if distances.both_empty:
        return 0.0
    pooled = np.concatenate([distances.pred_to_truth_mm, distances.truth_to_pred_mm])
    return float(pooled.mean())
