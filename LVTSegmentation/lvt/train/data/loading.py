"""Reading one case into memory: the CT, per-class masks on its grid, and the class weights it annotates.

Masks come back as annotated, without the anatomical hierarchy: the training run decides (ML applies
it, MLx does not). A problem with the case (unreadable file, missing pair, label grid off the image
grid, a label value the spec does not know) raises :class:`CaseError` naming the case, so a long run
can skip and list the bad cases instead of stopping at case 97 of 131.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from lvt.errors import InputError
from lvt.grid import describe_grid, resample_like
from lvt.image import Image
from lvt.io import find_dicom_series, read_image, read_label_image
from lvt.labels import CLASS_KEYS, LIVER, NUM_CLASSES
from lvt.phantom import make_phantom
from lvt.train.data.discovery import CaseRef

logger = logging.getLogger(__name__)

# Two grids whose voxel boxes agree this closely (mm) cover the same physical region.
GRID_TOLERANCE_MM = 0.01


class CaseError(InputError):
    """One case of a dataset is unusable; the message names the case (and the file when there is one)."""

    def __init__(self, case_name: str, problem: str, path: str | Path | None = None) -> None:
        super().__init__(path, f"case {case_name}: {problem}")
        self.case_name = case_name
        self.case_problem = problem if path is None else f"{path}: {problem}"


@dataclass(frozen=True, eq=False)
class LoadedCase:
    """A case in memory.

    Attributes:
        name: "<dataset>/<case>".
        image: the CT, float32 HU on its own grid.
        masks: (3, Z, Y, X) bool per-class masks (liver, vessel, tumor) on the image grid, as
            annotated: no hierarchy applied; a class the dataset does not annotate is all False.
        annotated: which classes the masks hold (the class weights w).
    """

    name: str
    image: Image
    masks: np.ndarray
    annotated: tuple[bool, bool, bool]

    def __post_init__(self) -> None:
        if self.masks.shape != (NUM_CLASSES, *self.image.array.shape) or self.masks.dtype != np.bool_:
            raise ValueError(
                f"{self.name}: masks must be bool of shape {(NUM_CLASSES, *self.image.array.shape)}, "
                f"got {self.masks.dtype} {self.masks.shape}"
            )


class LabelMeaning(Protocol):
    """What a label map's values mean: a dataset spec, or its second label source."""

    value_map: dict[int, tuple[str, ...]]
    positive_is: tuple[str, ...]
    other_values: str


def load_case(ref: CaseRef) -> LoadedCase:
    """Read one case: the CT (float32 HU) and its per-class masks on the CT grid (from both label sources
    when the spec has ``second_labels``; each annotates its own classes).

    Raises:
        CaseError: naming the case: a missing pair, an unreadable file, a label grid that does not
            match the image, or a label value outside the spec's value map.
    """
    if ref.problem:
        raise CaseError(ref.name, ref.problem)
    if ref.spec.kind == "phantom":
        return _load_phantom(ref)
    assert ref.image_path is not None  # set when problem is None
    image = _read(ref, ref.image_path, read_image)
    if ref.spec.is_unlabelled:  # no label: every class unannotated, every mask empty
        return LoadedCase(ref.name, image, np.zeros((NUM_CLASSES, *image.array.shape), dtype=bool), ref.spec.annotated)
    assert ref.label_path is not None  # set when problem is None
    if ref.spec.structure_map:
        masks = _structure_masks(ref, image, ref.label_path)
    else:
        masks = _masks_from_file(ref, image, ref.label_path, ref.spec)
    if ref.spec.second_labels is not None:
        assert ref.second_label_path is not None  # set when problem is None
        masks |= _masks_from_file(ref, image, ref.second_label_path, ref.spec.second_labels)
    return LoadedCase(ref.name, image, masks, ref.spec.annotated)


def _load_phantom(ref: CaseRef) -> LoadedCase:
    assert ref.spec.phantom is not None and ref.phantom_seed is not None
    phantom = make_phantom(ref.spec.phantom.config_for(ref.phantom_seed))
    image = phantom.image.with_array(phantom.image.array.astype(np.float32, copy=False))
    # a partially annotated phantom set behaves like a partially labelled dataset: unannotated classes are empty
    masks = np.asarray(phantom.truth, dtype=bool) & np.asarray(ref.spec.annotated, dtype=bool)[:, None, None, None]
    return LoadedCase(ref.name, image, masks, ref.spec.annotated)


def _read(ref: CaseRef, path: Path, reader: Callable[[Path], Image]) -> Image:
    """Read with an :mod:`lvt.io` reader; any failure becomes a :class:`CaseError` for this case."""
    try:
        return reader(path)
    except InputError as error:
        raise CaseError(ref.name, f"cannot read: {error.problem}", path) from error
    except (OSError, RuntimeError, ValueError) as error:  # SimpleITK raises RuntimeError
        raise CaseError(ref.name, f"cannot read: {error}", path) from error


def _masks_from_file(ref: CaseRef, image: Image, path: Path, meaning: LabelMeaning) -> np.ndarray:
    """(3, Z, Y, X) bool masks of a label map file, on the image grid (or refused when its grid differs)."""
    labels = _aligned_to_image(ref, _read(ref, path, read_label_image), image, path)
    return _masks_from_values(ref, labels.array, meaning, path)


def _masks_from_values(ref: CaseRef, labels: np.ndarray, spec: LabelMeaning, path: Path) -> np.ndarray:
    """(3, Z, Y, X) bool masks from a label map through a value map."""
    masks = np.zeros((NUM_CLASSES, *labels.shape), dtype=bool)
    unknown = []
    for value in _present_values(labels):
        keys = spec.value_map.get(value)
        if keys is None:
            if value != 0 and not (spec.positive_is and value > 0) and spec.other_values == "error":
                unknown.append(value)
            continue
        for key in keys:
            masks[CLASS_KEYS.index(key)] |= labels == value
    if unknown:
        shown = ", ".join(map(str, unknown[:20])) + (", ..." if len(unknown) > 20 else "")
        raise CaseError(
            ref.name, f"label value(s) {shown} are not in the value map of dataset {ref.spec.name!r} "
            f"({ref.spec.source or 'spec given in code'}); add them to value_map or set other_values: background",
            path,
        )
    if spec.positive_is:
        positive = labels > 0
        for value in spec.value_map:
            positive &= labels != value
        for key in spec.positive_is:
            masks[CLASS_KEYS.index(key)] |= positive
    return masks


def _present_values(labels: np.ndarray) -> list[int]:
    """The distinct values of an integer label map; bincount is linear where np.unique sorts."""
    if labels.size and np.issubdtype(labels.dtype, np.integer):
        low, high = int(labels.min()), int(labels.max())
        if low >= 0 and high < 1 << 16:
            return [int(v) for v in np.flatnonzero(np.bincount(labels.reshape(-1)))]
    return [int(v) for v in np.unique(labels)]


def _structure_masks(ref: CaseRef, image: Image, folder: Path) -> np.ndarray:
    """(3, Z, Y, X) bool masks from a folder of per-structure masks, by the spec's structure rules."""
    if not folder.is_dir():
        raise CaseError(ref.name, "the structure mask folder does not exist or is not a folder", folder)
    masks = np.zeros((NUM_CLASSES, *image.array.shape), dtype=bool)
    inside_liver: list[tuple[int, np.ndarray]] = []
    matched = []
    for name, path in _structure_entries(folder):
        rule = next((r for r in ref.spec.structure_map if fnmatch.fnmatchcase(name.lower(), r.pattern.lower())), None)
        if rule is None:
            continue
        matched.append(name)
        mask = _aligned_to_image(ref, _read_structure(ref, path), image, path).array > 0
        channel = CLASS_KEYS.index(rule.class_key)
        if rule.intersect_liver:
            inside_liver.append((channel, mask))
        else:
            masks[channel] |= mask
    if not matched:
        names = ", ".join(name for name, _ in _structure_entries(folder)) or "nothing"
        raise CaseError(ref.name, f"no structure matches the structure map (found {names})", folder)
    if inside_liver and not masks[LIVER].any():
        raise CaseError(ref.name, "vessels are to be kept inside the liver, but the case has no liver mask", folder)
    for channel, mask in inside_liver:
        masks[channel] |= mask & masks[LIVER]
    logger.debug("%s: structures used: %s", ref.name, matched)
    return masks


def _structure_entries(folder: Path) -> list[tuple[str, Path]]:
    """(structure name, path) of each visible entry; a file's name loses its extensions (liver.nii.gz)."""
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    return sorted((entry.name if entry.is_dir() else entry.name.split(".")[0], entry) for entry in entries)


def _read_structure(ref: CaseRef, path: Path) -> Image:
    """A structure mask: a label file, or a DICOM folder (any modality; values are only compared with 0)."""
    if not path.is_dir():
        return _read(ref, path, read_label_image)
    try:
        series = find_dicom_series(path)
    except RuntimeError as error:
        raise CaseError(ref.name, f"cannot list DICOM files: {error}", path) from error
    if not series:
        raise CaseError(ref.name, "cannot read: the structure folder holds no DICOM series", path)
    return _read(ref, path, lambda folder: read_image(folder, series_uid=series[0].uid, allow_non_ct=True))


# ---------------------------------------------------------------------------------------------
# Grids


def _aligned_to_image(ref: CaseRef, label: Image, image: Image, path: Path) -> Image:
    """The label on the image grid: as is when the grids match, resampled when the spec allows it.

    Raises:
        CaseError: the grids differ and either cover different physical regions or the spec does
            not allow resampling.
    """
    if label.same_grid(image):
        return label
    differences = ", ".join(_grid_differences(label, image))
    detail = f"label {describe_grid(label)}; image {describe_grid(image)}"
    if not _same_physical_region(label, image):
        raise CaseError(ref.name, f"label grid does not match its image ({differences} differ): {detail}", path)
    if not ref.spec.resample_label_to_image:
        raise CaseError(
            ref.name, f"label grid differs from its image ({differences}) but covers the same physical region: "
            f"{detail}; set resample_label_to_image: true in the spec to resample it (nearest neighbour)",
            path,
        )
    logger.info("%s: resampling the label onto the image grid (%s differ)", ref.name, differences)
    return resample_like(label, image, interpolation="nearest", default_value=0)


def _grid_differences(first: Image, second: Image) -> list[str]:
    """Which of size, spacing, origin and direction differ (tolerances of :meth:`Image.same_grid`)."""
    checks = {
        "size": first.size_ijk == second.size_ijk,
        "spacing": np.allclose(first.spacing_mm, second.spacing_mm, atol=1e-3),
        "origin": np.allclose(first.origin_lps_mm, second.origin_lps_mm, atol=1e-3),
        "direction": np.allclose(first.direction, second.direction, atol=1e-5),
    }
    return [name for name, same in checks.items() if not same]


def _same_physical_region(first: Image, second: Image) -> bool:
    """True when the outer corners of both voxel boxes coincide (as sets), whatever the index order."""
    first_corners, second_corners = first.extent_corners_lps(), second.extent_corners_lps()
    distances = np.linalg.norm(first_corners[:, None, :] - second_corners[None, :, :], axis=-1)
    # Every corner of each box must have a partner in the other box.
    unmatched = np.maximum(distances.min(axis=1), distances.min(axis=0))
    return bool(np.all(unmatched <= GRID_TOLERANCE_MM))

