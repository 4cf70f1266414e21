"""Segmentation metrics: voxel overlap, surface distances in mm, lesion detection, volume error.

Pure functions on boolean masks indexed ``[z, y, x]`` (the :class:`lvt.image.Image` array order).
Spacing arguments are named ``spacing_zyx_mm`` and follow that array order; an ``Image`` stores its
spacing in ``(i, j, k) = (x, y, z)`` order, so pass ``image.spacing_mm[::-1]``.

Surface representation (see docs/metrics.md): the boundary of a mask is its set of *boundary
voxels*, foreground voxels with at least one 6-neighbour outside the mask (voxels on the array edge
count as boundary). Distances between boundary voxel centres are Euclidean in millimetres, so they
are exact on anisotropic grids; each boundary voxel counts as one surface element. This is MONAI's
``use_subvoxels=False`` definition, which the tests match to float precision.

Empty-mask conventions, shared by every function here:
- both masks empty: Dice, precision, recall and NSD are 1; HD95 and ASSD are 0 mm.
- exactly one mask empty: Dice, precision, recall and NSD are 0; HD95 and ASSD are ``inf``.
Whether a class was annotated at all is not a property of the masks: callers report a class the
truth does not annotate as "not annotated" (``None``) and never call these functions for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lvt.labels import boundary_voxels, label_components

LESION_MIN_OVERLAP_FRACTION = 0.1


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


def _distances_to(boundary: np.ndarray, at: np.ndarray, spacing_zyx_mm: tuple[float, ...]) -> np.ndarray:
    """Distance in mm from each ``at`` voxel to the nearest ``boundary`` voxel (``inf`` if none)."""
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
        pred_to_truth_mm=_distances_to(truth_edge, pred_edge, spacing),
        truth_to_pred_mm=_distances_to(pred_edge, truth_edge, spacing),
    )


def normalized_surface_dice(distances: SurfaceDistances, tolerance_mm: float) -> float:
    """Normalised surface Dice (Nikolov et al. 2021) at a tolerance in mm.

    The fraction of the boundary elements of both masks that lie within ``tolerance_mm`` of the
    other mask's boundary: (|{d_P <= tau}| + |{d_T <= tau}|) / (|d_P| + |d_T|).

    Args:
        distances: output of :func:`surface_distances`.
        tolerance_mm: accepted boundary deviation tau in mm (METHOD.md: 7 liver, 3 vessel and tumor).

    Returns:
        NSD in [0, 1]; 1.0 when both masks are empty, 0.0 when one is.
    """
    if distances.both_empty:
        return 1.0
    within = np.count_nonzero(distances.pred_to_truth_mm <= tolerance_mm) + np.count_nonzero(
        distances.truth_to_pred_mm <= tolerance_mm
    )
    return float(within) / (distances.pred_to_truth_mm.size + distances.truth_to_pred_mm.size)


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


@dataclass(frozen=True)
class LesionDetection:
    """Lesion-level counts for one case (26-connected components).

    Attributes:
        true_lesions: number of components of the reference tumor mask.
        detected_lesions: true lesions with more than 10 % of their voxels predicted as tumor.
        predicted_lesions: number of components of the predicted tumor mask.
        correct_predicted_lesions: predicted components with more than 10 % of their voxels in the
            reference tumor mask (the same rule as detection, from the other side).
    """

    true_lesions: int
    detected_lesions: int
    predicted_lesions: int
    correct_predicted_lesions: int

    @property
    def sensitivity(self) -> float | None:
        """Detected / true lesions; ``None`` when the case has no true lesion (undefined, not zero)."""
        return None if self.true_lesions == 0 else self.detected_lesions / self.true_lesions

    @property
    def precision(self) -> float | None:
        """Correct / predicted lesions; ``None`` when nothing was predicted (undefined, not zero)."""
        return None if self.predicted_lesions == 0 else self.correct_predicted_lesions / self.predicted_lesions


def _count_overlapping_components(
    mask: np.ndarray, other: np.ndarray, min_fraction: float
) -> tuple[int, int]:
    """(components of ``mask``, those with more than ``min_fraction`` of their voxels in ``other``)."""
    components, count = label_components(mask)
    if count == 0:
        return 0, 0
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    inside = np.bincount(components[other], minlength=count + 1)[1:]
    return count, int(np.count_nonzero(inside > min_fraction * sizes))


def lesion_detection(
    pred_tumor: np.ndarray, truth_tumor: np.ndarray, min_overlap_fraction: float = LESION_MIN_OVERLAP_FRACTION
) -> LesionDetection:
    """Count detected and correctly predicted lesions (METHOD.md, Evaluation).

    A true lesion (26-connected component of ``truth_tumor``) is detected when predicted tumor voxels
    cover more than ``min_overlap_fraction`` of it. A predicted lesion is correct when more than the
    same fraction of it lies in true tumor, so one blob spilling over the whole liver does not count
    as a correct lesion merely by touching one.

    Args:
        pred_tumor: (Z, Y, X) bool predicted tumor mask.
        truth_tumor: (Z, Y, X) bool reference tumor mask.
        min_overlap_fraction: the overlap that must be exceeded, 0.1 in the paper.

    Returns:
        The lesion counts; sensitivity and precision are properties of the result.
    """
    true_count, detected = _count_overlapping_components(truth_tumor, pred_tumor, min_overlap_fraction)
    pred_count, correct = _count_overlapping_components(pred_tumor, truth_tumor, min_overlap_fraction)
    return LesionDetection(true_count, detected, pred_count, correct)
