"""From class probabilities to clean exclusive labels.

Decoding as the model was trained (the manifest's target kind): sigmoid 0.5 per class for ML and
MLx, argmax over background and the three classes for MC. Then exclusive labels by priority
tumor > vessel > liver, the largest connected liver component with its holes filled, vessels and
tumors kept only inside or touching the liver, optionally each tumor's boundary refined on the CT
(:mod:`lvt.segment.refine`, off by default), and tumors below a volume floor dropped (and reported)
as too small to trust.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lvt.image import Image
from lvt.labels import (
    LIVER,
    LIVER_LABEL,
    PROBABILITY_THRESHOLD,
    TUMOR,
    TUMOR_LABEL,
    VESSEL,
    apply_hierarchy,
    dilate_26,
    exclusive_labels,
    fill_holes,
    label_components,
)
from lvt.segment.network_config import TargetKind
from lvt.segment.refine import TumorRefinement, refine_tumors


@dataclass(frozen=True)
class PostprocessConfig:
    """Clean-up options; volumes in mL. ``tumor_refinement`` None (the default) leaves tumor boundaries as decoded."""

    keep_largest_liver_component: bool = True
    fill_liver_holes: bool = True
    min_tumor_volume_ml: float = 0.05
    vessel_margin_voxels: int = 1
    tumor_refinement: TumorRefinement | None = None

    def __post_init__(self) -> None:
        if self.min_tumor_volume_ml < 0 or self.vessel_margin_voxels < 0:
            raise ValueError("min_tumor_volume_ml and vessel_margin_voxels must be >= 0")


@dataclass
class PostprocessResult:
    """Exclusive labels (0..3) and what the clean-up removed."""

    labels: np.ndarray
    dropped_tumors: list[dict] = field(default_factory=list)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (empty stays empty)."""
    components, count = label_components(mask)
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def _keep_touching(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Components of ``mask`` that overlap ``region``."""
    components, count = label_components(mask)
    if count == 0:
        return mask.astype(bool)
    touching = np.unique(components[region & (components > 0)])
    return np.isin(components, touching[touching > 0])


def decode_masks(probabilities: np.ndarray, target: TargetKind = "ml") -> np.ndarray:
    """(3, Z, Y, X) bool masks from (3, Z, Y, X) foreground probabilities, as the model was trained.

    ML and MLx (sigmoid heads): each class above 0.5, overlaps allowed. MC (softmax head): the argmax
    over background and the three classes, background being 1 minus their sum (the predictor drops
    it); a fixed 0.5 would call (background 0.2, liver 0.45, tumor 0.35) background. A tie goes to
    background, ties between classes to the priority of :func:`lvt.labels.exclusive_labels`.
    """
    if target != "mc":
        return probabilities > PROBABILITY_THRESHOLD
    best = probabilities.max(axis=0)
    return (probabilities == best) & (best > 1.0 - probabilities.sum(axis=0))


def whole_liver_mask(masks: np.ndarray, target: TargetKind = "ml") -> np.ndarray:
    """The whole liver of decoded masks, before clean-up.

    ML's liver channel learned the whole liver (vessels inside it included), so a vessel outside it
    (the vena cava below the liver) is not liver: liver | tumor. MLx and MC learned exclusive
    labels, which split the liver into parenchyma, vessels and tumors: their union.
    """
    if target == "ml":
        return masks[LIVER] | masks[TUMOR]
    return masks.any(axis=0)


def liver_region(probabilities: np.ndarray, target: TargetKind = "ml") -> np.ndarray:
    """The largest piece of the decoded whole liver: where the clean-up needs to look (empty when none)."""
    return largest_component(whole_liver_mask(decode_masks(probabilities, target), target))


def clean_masks(probabilities: np.ndarray, config: PostprocessConfig, target: TargetKind = "ml") -> np.ndarray:
    """Decoded, anatomically consistent (3, Z, Y, X) bool masks (liver = whole liver)."""
    masks = decode_masks(probabilities, target)
    liver_core = whole_liver_mask(masks, target)
    if config.keep_largest_liver_component and liver_core.any():
        liver_core = largest_component(liver_core)
    if config.fill_liver_holes:
        liver_core = fill_holes(liver_core)
    near_liver = dilate_26(liver_core, config.vessel_margin_voxels)
    tumor = _keep_touching(masks[TUMOR], liver_core)
    vessel = masks[VESSEL] & near_liver
    return apply_hierarchy(np.stack([liver_core, vessel, tumor]))


def drop_small_tumors(labels: np.ndarray, grid: Image, min_volume_ml: float) -> list[dict]:
    """Relabel tumor components below ``min_volume_ml`` as liver parenchyma, in place; report them."""
    components, count = label_components(labels == TUMOR_LABEL)
    if count == 0 or min_volume_ml <= 0:
        return []
    sizes = np.bincount(components.ravel())
    dropped = []
    for index in np.nonzero(sizes * grid.voxel_volume_ml < min_volume_ml)[0]:
        if index == 0:
            continue
        voxels = components == index
        centroid_kji = np.argwhere(voxels).mean(axis=0)
        dropped.append({"volume_ml": float(sizes[index] * grid.voxel_volume_ml),
                        "centroid_lps_mm": grid.ijk_to_lps(centroid_kji[::-1])[0].round(2).tolist()})
        labels[voxels] = LIVER_LABEL
    return dropped


def postprocess(probabilities: np.ndarray, grid: Image, config: PostprocessConfig | None = None,
                target: TargetKind = "ml") -> PostprocessResult:
    """Exclusive labels on ``grid`` from (3, Z, Y, X) probabilities on the same grid.

    Args:
        grid: the CT (HU) on the probabilities' grid; its voxels are read only by tumor refinement.
        target: the model manifest's target kind (how the probabilities decode).

    Returns:
        Labels 0 background, 1 liver parenchyma, 2 vessel, 3 tumor, and the dropped tumors.
    """
    config = config or PostprocessConfig()
    labels = exclusive_labels(clean_masks(probabilities, config, target))
    if config.tumor_refinement is not None:
        labels = refine_tumors(labels, grid, config.tumor_refinement)
    dropped = drop_small_tumors(labels, grid, config.min_tumor_volume_ml)
    return PostprocessResult(labels, dropped)
