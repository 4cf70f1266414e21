"""The three LVT classes and the rules every part of the core applies to them, each written once here.

Channel order everywhere in the core is (liver, vessel, tumor). The exclusive label map uses
0 background, 1 liver parenchyma, 2 vessel, 3 tumor. The shared rules: a probability above
:data:`PROBABILITY_THRESHOLD` is foreground; overlaps go to the higher class by
:data:`PRIORITY_HIGH_TO_LOW` (tumor > vessel > liver); the whole liver is parenchyma, vessels and
tumors together (:func:`apply_hierarchy`, :func:`whole_liver`); connected pieces (lesions, branches,
the liver) are 26-connected (:data:`CONNECTIVITY_26`); a mask's surface is its boundary voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LIVER, VESSEL, TUMOR = 0, 1, 2
CLASS_KEYS: tuple[str, str, str] = ("liver", "vessel", "tumor")
NUM_CLASSES = 3

# Values of the exclusive label map; the whole liver is every label but background.
BACKGROUND_LABEL, LIVER_LABEL, VESSEL_LABEL, TUMOR_LABEL = 0, 1, 2, 3
WHOLE_LIVER_LABELS: tuple[int, int, int] = (LIVER_LABEL, VESSEL_LABEL, TUMOR_LABEL)

# Per-class probabilities above this are foreground (METHOD.md, Inference).
PROBABILITY_THRESHOLD = 0.5

# Voxels touching by a face, an edge or a corner belong to the same piece, so a lesion or vessel
# drawn slice by slice with diagonal steps is not split.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)

TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"

_SCT_LIVER = ("SCT", "10200004", "Liver")
_SCT_ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
_SCT_ALTERED_STRUCTURE = ("SCT", "49755003", "Morphologically Altered Structure")


@dataclass(frozen=True)
class Structure:
    """How one class is shown to a user: segment name, label value, colour and terminology codes."""

    key: str
    channel: int
    segment_name: str
    label_value: int
    color_rgb: tuple[int, int, int]
    category: tuple[str, str, str]
    type: tuple[str, str, str]
    anatomic_region: tuple[str, str, str] | None

    @property
    def color_float(self) -> tuple[float, float, float]:
        return tuple(c / 255.0 for c in self.color_rgb)  # type: ignore[return-value]

    def terminology_entry(self) -> str:
        """The Slicer terminology string (context~category~type~modifier~anatomic context~region~modifier)."""
        region = "^".join(self.anatomic_region) if self.anatomic_region else "^^"
        return (
            f"{TERMINOLOGY_CONTEXT}~{'^'.join(self.category)}~{'^'.join(self.type)}~^^"
            f"~{ANATOMIC_CONTEXT}~{region}~^^"
        )

    def terminology_dict(self) -> dict:
        """The same codes in the dictionary form used by ``slicerio``."""
        entry: dict = {
            "contextName": TERMINOLOGY_CONTEXT,
            "category": list(self.category),
            "type": list(self.type),
        }
        if self.anatomic_region:
            entry["anatomicContextName"] = ANATOMIC_CONTEXT
            entry["anatomicRegion"] = list(self.anatomic_region)
        return entry


STRUCTURES: tuple[Structure, Structure, Structure] = (
    Structure("liver", LIVER, "Liver", LIVER_LABEL, (221, 130, 101), _SCT_ANATOMICAL_STRUCTURE, _SCT_LIVER, None),
    Structure(
        "vessel", VESSEL, "Vessels", VESSEL_LABEL, (0, 151, 206), _SCT_ANATOMICAL_STRUCTURE,
        ("SCT", "59820001", "Blood vessel"), _SCT_LIVER,
    ),
    Structure(
        "tumor", TUMOR, "Tumors", TUMOR_LABEL, (144, 238, 144), _SCT_ALTERED_STRUCTURE,
        ("SCT", "108369006", "Neoplasm"), _SCT_LIVER,
    ),
)

# Output priority for exclusive labels: tumor > vessel > liver > background (METHOD.md, Inference).
PRIORITY_HIGH_TO_LOW: tuple[int, int, int] = (TUMOR, VESSEL, LIVER)


def apply_hierarchy(masks: np.ndarray) -> np.ndarray:
    """Make per-class masks multi-hot: vessel and tumor voxels are also liver.

    Args:
        masks: (3, Z, Y, X) bool or 0/1 array in channel order (liver, vessel, tumor).

    Returns:
        A new (3, Z, Y, X) bool array with liver |= vessel | tumor.
    """
    out = masks.astype(bool, copy=True)
    out[LIVER] |= out[VESSEL] | out[TUMOR]
    return out


def exclusive_labels(masks: np.ndarray) -> np.ndarray:
    """Exclusive label map from per-class masks by priority tumor > vessel > liver.

    Args:
        masks: (3, Z, Y, X) bool array (multi-hot or not), channel order (liver, vessel, tumor).

    Returns:
        (Z, Y, X) uint8 map: 0 background, 1 liver parenchyma, 2 vessel, 3 tumor.
    """
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for channel in reversed(PRIORITY_HIGH_TO_LOW):
        labels[masks[channel].astype(bool)] = STRUCTURES[channel].label_value
    return labels


def masks_from_labels(labels: np.ndarray) -> np.ndarray:
    """Multi-hot masks (hierarchy applied) from an exclusive label map (0..3)."""
    masks = np.stack([labels == s.label_value for s in STRUCTURES])
    return apply_hierarchy(masks)


def whole_liver(labels: np.ndarray) -> np.ndarray:
    """The whole liver (parenchyma, vessels and tumors: every label but background) of an exclusive label map."""
    return labels > BACKGROUND_LABEL


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The 26-connected pieces of a mask: an int32 map numbering them 1..N in scan order, and N."""
    return ndimage.label(mask, structure=CONNECTIVITY_26)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background region that does not reach the array's edge filled.

    The background is 6-connected: the result is ``scipy.ndimage.binary_fill_holes(mask)``'s, from
    ITK's filter, 4-5x faster on a liver box (multi-threaded; docs/performance.md).
    """
    from lvt.grid import sitk_module

    sitk = sitk_module()
    image = sitk.GetImageFromArray(np.asarray(mask, dtype=bool).view(np.uint8))
    return sitk.GetArrayFromImage(sitk.BinaryFillhole(image, fullyConnected=False, foregroundValue=1)).view(bool)


def dilate_26(mask: np.ndarray, voxels: int) -> np.ndarray:
    """The mask grown by ``voxels`` 26-connected steps: a (2 ``voxels`` + 1)^3 box around each voxel.

    ``binary_dilation(mask, CONNECTIVITY_26, iterations=voxels)``'s result, as one maximum filter:
    3x faster, since a box dilation is separable.
    """
    if voxels == 0:
        return np.asarray(mask, dtype=bool).copy()
    grown = ndimage.maximum_filter(np.asarray(mask, dtype=bool).view(np.uint8), size=2 * voxels + 1, mode="constant",
                                   cval=0)
    return grown.view(bool)


def boundary_voxels(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with at least one 6-neighbour outside the mask (array edge counts as outside).

    Args:
        mask: (Z, Y, X) bool mask.

    Returns:
        (Z, Y, X) bool mask of the boundary voxels.
    """
    return mask & ~ndimage.binary_erosion(mask, border_value=0)
