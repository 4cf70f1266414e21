"""Optional tumor boundary refinement: a morphological Chan-Vese active contour per tumor, inside the liver.

Why: the network draws a tumor's boundary at the model spacing, and resampling blurs it back onto
the CT; a lesion differs from the parenchyma around it by a step in HU that a two-region intensity
model can follow at the CT's own resolution. Off by default (``lvt segment --refine-tumors``).

- Method: morphological active contours without edges (Márquez-Neila, Baumela and Alvarez, IEEE
  TPAMI 2014), the algorithm of scikit-image's ``morphological_chan_vese``, written here in
  numpy/scipy so the Slicer extension needs no new dependency. Each step moves the boundary by at
  most one voxel toward the region (tumor or parenchyma) whose mean intensity a voxel is closer to,
  then smooths it by the curvature operator (``smoothing`` times).
- Where: each tumor component separately, in a box ``margin_mm`` around it, on the native CT grid
  (the grid of the written labels, so the refined boundary is not resampled again). The contour
  lives only in that tumor and the liver parenchyma around it: a tumor never grows outside the
  liver, into a vessel or into another tumor, and a voxel it gives up becomes parenchyma.
- Image: HU through a fixed liver window (the training default, level 87 / width 217 HU) mapped to
  [0, 1]. The two-region data term compares distances only, so the window matters by its clipping:
  bone, contrast-filled vessels and fat cannot pull the region means.
- Safeguards: a tumor whose refined region differs from the parenchyma around it by less than
  ``min_contrast_hu`` in mean (an isodense lesion: no step to follow), or whose contour vanished,
  keeps the network's mask; refinement adjusts boundaries, it neither adds nor deletes lesions. A
  lesion only a few voxels across vanishes under the curvature operator (its 3 x 3 planes), so it
  keeps the network's mask too.

The defaults (5 steps, smoothing 1, tumor weight 0.5) were chosen on held-out phantoms only; there
refinement helped lesions with a plain step edge and hurt lesions with an enhancing rim, which the
reference includes but a two-region model leaves out (Testing/Benchmarks/tumor_refinement/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from lvt.image import Image
from lvt.labels import CONNECTIVITY_26, LIVER_LABEL, TUMOR_LABEL, label_components, whole_liver
from lvt.segment.window import Window, apply_window


@dataclass(frozen=True)
class TumorRefinement:
    """Settings of the refinement: steps, smoothing per step, the tumor's weight in the data term
    (lambda1, with lambda2 = 1 for the parenchyma; below 1 a voxel between the two means leans to the
    tumor), box margin (mm), contrast floor (HU) and window."""

    iterations: int = 5
    smoothing: int = 1
    tumor_weight: float = 0.5
    margin_mm: float = 10.0
    min_contrast_hu: float = 10.0
    window: Window = field(default_factory=Window)

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.smoothing < 0 or self.margin_mm < 0 or self.min_contrast_hu < 0:
            raise ValueError("iterations must be >= 1; smoothing, margin_mm and min_contrast_hu >= 0")
        if self.tumor_weight <= 0:
            raise ValueError("tumor_weight must be > 0")


def _planes() -> tuple[np.ndarray, ...]:
    """The nine 3x3 planes through a 3x3x3 block's centre: the curvature operator's structuring elements."""
    i = np.arange(3)
    planes = [np.zeros((3, 3, 3), dtype=bool) for _ in range(9)]
    planes[0][:, :, 1] = True
    planes[1][:, 1, :] = True
    planes[2][1, :, :] = True
    planes[3][:, i, i] = True
    planes[4][:, i, i[::-1]] = True
    planes[5][i, :, i] = True
    planes[6][i, :, i[::-1]] = True
    planes[7][i, i, :] = True
    planes[8][i, i[::-1], :] = True
    return tuple(planes)


_PLANES = _planes()


def _sup_inf(mask: np.ndarray) -> np.ndarray:
    """SI: voxels kept by the erosion along some plane (removes thin protrusions)."""
    return np.any([ndimage.binary_erosion(mask, plane) for plane in _PLANES], axis=0)


def _inf_sup(mask: np.ndarray) -> np.ndarray:
    """IS: voxels added by the dilation along every plane (fills thin dents)."""
    return np.all([ndimage.binary_dilation(mask, plane) for plane in _PLANES], axis=0)


def _curvature_step(mask: np.ndarray, count: int) -> np.ndarray:
    """The ``count``-th curvature smoothing: SI o IS and IS o SI alternate, so it has no bias to grow or shrink."""
    return _sup_inf(_inf_sup(mask)) if count % 2 == 0 else _inf_sup(_sup_inf(mask))


def _smoothed_in(inside: np.ndarray, domain: np.ndarray, count: int) -> np.ndarray:
    """A curvature smoothing that does not see the domain's edge as the contour's.

    Where the contour meets voxels it may not hold (the liver's edge, a vessel) its edge is the
    domain's, not a bend to straighten; the voxels just beyond count as inside while smoothing.
    """
    beyond = ~domain & ndimage.binary_dilation(inside, CONNECTIVITY_26, iterations=2)
    return _curvature_step(inside | beyond, count) & domain


def morphological_chan_vese(image: np.ndarray, initial: np.ndarray, domain: np.ndarray,
                            iterations: int, smoothing: int, inside_weight: float = 1.0) -> np.ndarray:
    """Two-region morphological Chan-Vese (lambda1 = ``inside_weight``, lambda2 = 1) restricted to ``domain``.

    Args:
        image: (Z, Y, X) float intensities.
        initial: (Z, Y, X) bool start of the inside region.
        domain: (Z, Y, X) bool voxels the contour may hold; the outside region is ``domain & ~inside``.
        iterations: at most this many steps (fewer when the contour stops moving).
        smoothing: curvature smoothings per step.
        inside_weight: lambda1, the weight of the inside region's fit.

    Returns:
        (Z, Y, X) bool inside region (empty when the contour vanished).
    """
    inside = initial & domain
    for step in range(iterations):
        outside = domain & ~inside
        if not inside.any() or not outside.any():
            break
        mean_in, mean_out = image[inside].mean(), image[outside].mean()
        front = np.sum([np.abs(g) for g in np.gradient(inside.astype(np.float32))], axis=0) > 0
        pull = inside_weight * (image - mean_in) ** 2 - (image - mean_out) ** 2  # < 0: leans to the inside
        moved = inside.copy()
        moved[front & (pull < 0)] = True
        moved[front & (pull > 0)] = False
        for smoothed in range(smoothing):
            moved = _smoothed_in(moved, domain, step * smoothing + smoothed)
        moved &= domain
        if np.array_equal(moved, inside):
            break
        inside = moved
    return inside


def _box_around(box: tuple[slice, ...], margin: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - m), min(n, s.stop + m)) for s, m, n in zip(box, margin, shape, strict=True))


def _refined_tumor(image: np.ndarray, tumor: np.ndarray, domain: np.ndarray, settings: TumorRefinement
                   ) -> np.ndarray | None:
    """One tumor's refined mask in its box, or None when the network's mask should stay (see the module notes)."""
    inside = morphological_chan_vese(image, tumor, domain, settings.iterations, settings.smoothing,
                                     settings.tumor_weight)
    outside = domain & ~inside
    if not inside.any() or not outside.any():
        return None
    contrast_hu = abs(float(image[inside].mean() - image[outside].mean())) * settings.window.width_hu
    return inside if contrast_hu >= settings.min_contrast_hu else None


def refine_tumors(labels: np.ndarray, ct: Image, settings: TumorRefinement) -> np.ndarray:
    """Labels with each tumor's boundary refined on ``ct`` (the HU image on the labels' grid).

    A tumor grows only into parenchyma at least one voxel inside the liver: the liver's outer voxel
    layer mixes liver with the tissue outside it (partial volume) and looks like a hypodense lesion.

    Args:
        labels: (Z, Y, X) exclusive labels 0..3.
        ct: the CT on the same grid (HU).
        settings: the refinement's settings.

    Returns:
        New labels: tumor voxels gained come from liver parenchyma, voxels given up become parenchyma.
    """
    refined = labels.copy()
    components, count = label_components(labels == TUMOR_LABEL)
    if count == 0:
        return refined
    image = apply_window(ct.array, settings.window)
    parenchyma = (labels == LIVER_LABEL) & ndimage.binary_erosion(whole_liver(labels))
    margin = np.ceil(settings.margin_mm / np.asarray(ct.spacing_mm)[::-1]).astype(int)  # (z, y, x)
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        region = _box_around(box, margin, labels.shape)
        tumor = components[region] == index
        inside = _refined_tumor(image[region], tumor, tumor | parenchyma[region], settings)
        if inside is not None:
            target = refined[region]
            target[tumor & ~inside] = LIVER_LABEL
            target[inside] = TUMOR_LABEL
    return refined
