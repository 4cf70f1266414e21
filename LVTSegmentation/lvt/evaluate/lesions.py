"""Lesion-level detection: which true lesions a prediction finds, which predicted lesions are real, by size.

Lesions are the 26-connected components of a tumor mask (:func:`lvt.labels.label_components`).
Components are matched to components by the voxels they share, with one rule on both sides:

- a *true lesion is detected* when the predicted tumor voxels inside it are more than 10 % of its
  voxels. Every predicted component overlapping it contributes its share, so a lesion predicted in
  two pieces is detected (and counted) once when the pieces together cover more than 10 %;
- a *predicted lesion is correct* when more than 10 % of its voxels are true tumor.

Sensitivity alone rewards over-segmentation: one component covering the whole image detects every
lesion. That component is one predicted lesion with a tiny share of tumor, so lesion precision is 0
and F1 = 2 · sensitivity · precision / (sensitivity + precision) is 0; both are always reported
beside sensitivity. Sensitivity is also split by lesion size, the RECIST-style longest axial
diameter of the true lesion (:func:`lvt.measure.volumes_and_lesions.axial_diameters`, the number
the report shows): under 10 mm, 10 to 20 mm, over 20 mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lvt.image import Image
from lvt.labels import label_components
from lvt.measure.volumes_and_lesions import axial_diameters

LESION_MIN_OVERLAP_FRACTION = 0.1
# Size classes of true lesions by longest axial diameter d: d < 10 mm, 10 mm <= d <= 20 mm, d > 20 mm.
LESION_SIZE_BINS: tuple[str, str, str] = ("under_10mm", "10_to_20mm", "over_20mm")
LESION_SIZE_LIMITS_MM: tuple[float, float] = (10.0, 20.0)


def size_bin(diameter_mm: float) -> int:
    """Index into :data:`LESION_SIZE_BINS` of a lesion with this longest axial diameter."""
    small, large = LESION_SIZE_LIMITS_MM
    return 0 if diameter_mm < small else 1 if diameter_mm <= large else 2


def f1_score(sensitivity: float | None, precision: float | None) -> float | None:
    """Harmonic mean of lesion sensitivity and precision.

    ``None`` when both are undefined (no true and no predicted lesion); 0 when only one is, because
    then one side has lesions and the other none (every lesion missed, or every prediction wrong).
    """
    if sensitivity is None and precision is None:
        return None
    if sensitivity is None or precision is None or sensitivity + precision == 0:
        return 0.0
    return 2 * sensitivity * precision / (sensitivity + precision)


@dataclass(frozen=True)
class LesionDetection:
    """Lesion-level counts of one case.

    Attributes:
        true_lesions: components of the reference tumor mask.
        detected_lesions: true lesions with more than 10 % of their voxels predicted as tumor.
        predicted_lesions: components of the predicted tumor mask.
        correct_predicted_lesions: predicted components with more than 10 % of their voxels true tumor.
        true_by_size, detected_by_size: the first two counts per :data:`LESION_SIZE_BINS`.
    """

    true_lesions: int
    detected_lesions: int
    predicted_lesions: int
    correct_predicted_lesions: int
    true_by_size: tuple[int, int, int] = (0, 0, 0)
    detected_by_size: tuple[int, int, int] = (0, 0, 0)

    @property
    def sensitivity(self) -> float | None:
        """Detected / true lesions; ``None`` when the case has no true lesion (undefined, not zero)."""
        return None if self.true_lesions == 0 else self.detected_lesions / self.true_lesions

    @property
    def precision(self) -> float | None:
        """Correct / predicted lesions; ``None`` when nothing was predicted (undefined, not zero)."""
        return None if self.predicted_lesions == 0 else self.correct_predicted_lesions / self.predicted_lesions

    @property
    def f1(self) -> float | None:
        """Lesion F1 (:func:`f1_score`)."""
        return f1_score(self.sensitivity, self.precision)

    @property
    def sensitivity_by_size(self) -> tuple[float | None, ...]:
        """Sensitivity per :data:`LESION_SIZE_BINS`; ``None`` for a size with no true lesion."""
        return tuple(None if n == 0 else d / n for n, d in zip(self.true_by_size, self.detected_by_size, strict=True))


def _matched_components(mask: np.ndarray, other: np.ndarray, min_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Components of ``mask`` and, per component, whether more than ``min_fraction`` of it lies in ``other``."""
    components, count = label_components(mask)
    sizes = np.bincount(components[mask], minlength=count + 1)[1:]
    inside = np.bincount(components[other], minlength=count + 1)[1:]
    return components, inside > min_fraction * sizes


def _longest_axial_diameters_mm(components: np.ndarray, grid: Image, origin_zyx: np.ndarray) -> np.ndarray:
    """(N,) longest axial diameter in mm of components 1..N of a crop whose first voxel is ``origin_zyx``."""
    diameters = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        offset_ijk = (origin_zyx + [s.start for s in box])[::-1]
        diameters.append(axial_diameters(grid, components[box] == index, offset_ijk).longest_mm)
    return np.array(diameters, dtype=float)


def lesion_detection(
    pred_tumor: np.ndarray, truth_tumor: np.ndarray, grid: Image,
    min_overlap_fraction: float = LESION_MIN_OVERLAP_FRACTION,
) -> LesionDetection:
    """Count detected, predicted and correct lesions, and detected lesions per size (module docstring).

    Args:
        pred_tumor: (Z, Y, X) bool predicted tumor mask.
        truth_tumor: (Z, Y, X) bool reference tumor mask.
        grid: the image both masks lie on; its spacing and orientation give the lesion diameters.
        min_overlap_fraction: the share that must be exceeded, 0.1 in the paper.

    Returns:
        The counts; sensitivity, precision and F1 are properties of the result.
    """
    union = pred_tumor | truth_tumor
    if not union.any():
        return LesionDetection(0, 0, 0, 0)
    crop = ndimage.find_objects(union.astype(np.uint8))[0]  # labelling the lesions' box is enough
    pred, truth = pred_tumor[crop], truth_tumor[crop]
    truth_components, detected = _matched_components(truth, pred, min_overlap_fraction)
    _, correct = _matched_components(pred, truth, min_overlap_fraction)
    origin_zyx = np.array([s.start for s in crop])
    diameters = _longest_axial_diameters_mm(truth_components, grid, origin_zyx)
    bins = np.array([size_bin(d) for d in diameters], dtype=int)
    true_by_size = np.bincount(bins, minlength=3)
    detected_by_size = np.bincount(bins[detected], minlength=3)
    return LesionDetection(
        true_lesions=int(detected.size), detected_lesions=int(detected.sum()),
        predicted_lesions=int(correct.size), correct_predicted_lesions=int(correct.sum()),
        true_by_size=tuple(int(n) for n in true_by_size),  # type: ignore[arg-type]
        detected_by_size=tuple(int(n) for n in detected_by_size),  # type: ignore[arg-type]
    )
