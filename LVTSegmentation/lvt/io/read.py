"""Reading CT and segmentations: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd),
a DICOM folder, and Slicer's ``.seg.nrrd``.

Everything a user can get wrong about an input file becomes an :class:`lvt.errors.InputError` that
names the file and the problem, before any model is loaded. SimpleITK and slicerio are imported
lazily so that nodes without them can still import the core.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from lvt.errors import InputError
from lvt.grid import describe_grid, image_from_sitk, sitk_module
from lvt.image import AIR_THRESHOLD_HU, Image
from lvt.io.dicom import choose_dicom_series, find_dicom_series
from lvt.io.write import SEGMENTATION_SUFFIX
from lvt.labels import LIVER, NUM_CLASSES, PRIORITY_HIGH_TO_LOW, STRUCTURES, TUMOR, VESSEL, exclusive_labels

if TYPE_CHECKING:
    import SimpleITK

logger = logging.getLogger(__name__)

READABLE_FORMATS = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM folder"
IDENTITY_VALUE_MAP: Mapping[int, int] = MappingProxyType({value: value for value in range(NUM_CLASSES + 1)})

# Slicer segment names understood when a segment carries no LVT terminology (whole words, any case).
_NAME_WORDS = {
    TUMOR: frozenset({"tumor", "tumors", "tumour", "tumours", "lesion", "lesions"}),
    VESSEL: frozenset({"vessel", "vessels"}),
    LIVER: frozenset({"liver"}),
}


def read_image(path: str | Path, *, series_uid: str | None = None, allow_non_ct: bool = False) -> Image:
    """Read a CT volume as float32 Hounsfield units on its own LPS grid.

    Args:
        path: a NIfTI, NRRD or MetaImage file, or a folder holding a DICOM series.
        series_uid: for a DICOM folder, the SeriesInstanceUID to read; by default the CT series
            with the most slices.
        allow_non_ct: skip the check that the values look like Hounsfield units (the CLI's ``--force``).

    Returns:
        An :class:`Image` with a float32 array ``[k, j, i]``, any orientation and spacing.

    Raises:
        InputError: the path is missing or unreadable, not a single 3D scalar volume, has NaN/inf or
            constant values, does not look like CT, or the DICOM series choice is ambiguous.
    """
    path = _existing_path(path)
    sitk_image = _read_dicom_folder(path, series_uid) if path.is_dir() else _read_image_file(path)
    image = image_from_sitk(sitk_image)
    del sitk_image  # free ITK's copy before the float32 one is made
    array = image.array.astype(np.float32, copy=False)
    low, high = _finite_range(path, array)
    if low == high:
        raise InputError(path, f"has the same value ({low:g}) in every voxel; the image is empty")
    if not allow_non_ct:
        problem = _hounsfield_problem(array)
        if problem:
            raise InputError(path, f"{problem}. If this really is CT in HU, run again with --force.")
    logger.info("Read %s: %s, values %.0f..%.0f", path, describe_grid(image), low, high)
    return image.with_array(array)


def read_label_image(path: str | Path) -> Image:
    """Read an integer label map (no Hounsfield check; all label values are allowed, even all zero).

    Returns:
        An :class:`Image` with an integer array; float files with whole-number values become uint8
        (or int32 when the values do not fit).

    Raises:
        InputError: missing or unreadable file, a folder, not a single 3D scalar volume, or
            non-integer values.
    """
    path = _existing_path(path)
    if path.is_dir():
        raise InputError(path, "is a folder; a label map must be one image file (NIfTI, NRRD or MetaImage)")
    image = image_from_sitk(_read_image_file(path))
    return image.with_array(_integer_labels(path, image.array))


def read_segmentation(path: str | Path, value_map: Mapping[int, int] | None = None) -> Image:
    """Read a segmentation as the exclusive LVT label map (0 bg, 1 liver parenchyma, 2 vessel, 3 tumor).

    A Slicer ``.seg.nrrd`` is read with slicerio: segments are recognised by terminology (Liver,
    Blood vessel, Neoplasm or any morphologically altered structure), else by a whole word of their
    name (liver; vessel(s); tumor(s), tumour(s), lesion(s)); overlapping layers are combined by the
    priority tumor > vessel > liver. The result is on the grid stored in the file, which Slicer may
    have cropped: resample it onto the CT grid (nearest) before comparing voxel by voxel.
    Any other file is read as a label map and translated by ``value_map``.

    Args:
        path: a ``.seg.nrrd`` or a label map file.
        value_map: label value in the file -> LVT label (0..3); default identity on 0..3.
            Ignored for ``.seg.nrrd`` files.

    Returns:
        An :class:`Image` with a uint8 array of values 0..3.

    Raises:
        InputError: unreadable file, no recognisable segment, or label values outside the value map.
    """
    path = _existing_path(path)
    if is_slicer_segmentation(path):
        return _read_slicer_segmentation(path)
    labels = read_label_image(path)
    value_map = IDENTITY_VALUE_MAP if value_map is None else value_map
    return labels.with_array(_map_label_values(path, labels.array, value_map))


def _existing_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(path, "does not exist")
    return path


def _read_image_file(path: Path) -> SimpleITK.Image:
    """Read one image file after checking from its header that it is a single 3D scalar volume."""
    sitk = sitk_module()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(path, f"is not an image file that can be read; expected {READABLE_FORMATS}") from error
    is_dicom = reader.GetImageIOFromFileName(str(path)) == "GDCMImageIO"
    hint = "; for DICOM, give the folder that holds the whole series" if is_dicom else ""
    _check_structure(path, reader.GetSize(), reader.GetNumberOfComponents(), hint)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(path, f"could not be read ({_error_summary(error)})") from error
    if image.GetDimension() == 4:
        # A 4D file with a single time point (NRRD/MHA keep the trailing 1) is just a volume.
        image = sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0])
    return image


def _check_structure(path: Path, size: tuple[int, ...], components: int, hint: str = "") -> None:
    if components > 1:
        raise InputError(
            path, f"has {components} values per voxel (a colour or vector image); a scalar 3D volume is needed"
        )
    if len(size) > 3 and any(n > 1 for n in size[3:]):
        raise InputError(
            path, f"is a {len(size)}D image of size {tuple(size)}; a single 3D volume is needed (one time point)"
        )
    if len(size) < 3 or min(size[:3]) < 2:
        raise InputError(path, f"is a 2D image or a single slice (size {tuple(size)}); a 3D volume is needed{hint}")


def _read_dicom_folder(folder: Path, series_uid: str | None) -> SimpleITK.Image:
    sitk = sitk_module()
    found = find_dicom_series(folder)
    if not found:
        raise InputError(folder, f"is a folder without any DICOM series; expected {READABLE_FORMATS}")
    series = choose_dicom_series(folder, found, series_uid)
    logger.info("Reading DICOM series %s from %s", series.describe(), folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(folder, f"DICOM series {series.uid} could not be read ({_error_summary(error)})") from error
    _check_structure(folder, image.GetSize(), image.GetNumberOfComponentsPerPixel())
    return image


def _hounsfield_problem(array: np.ndarray) -> str | None:
    """Why the values do not look like CT Hounsfield units, or None when they do.

    CT shows air near -1000 HU around the body or in the lungs (or the scanner's padding below it).
    A crop without air still has fat below 0 HU and a median near soft tissue. MR, PET, 8-bit
    exports and CT stored without its rescale intercept (air near 0) all fail both tests.
    """
    step = max(1, array.size // 1_000_000)
    low, median, high = np.percentile(array.reshape(-1)[::step], [0.5, 50.0, 99.5])
    has_air = low <= AIR_THRESHOLD_HU
    looks_like_soft_tissue = low < -20.0 and -300.0 <= median <= 300.0 and high - low >= 100.0
    if has_air or looks_like_soft_tissue:
        return None
    return (
        f"values do not look like CT Hounsfield units (0.5th percentile {low:.0f}, median {median:.0f}, "
        f"99.5th percentile {high:.0f}; CT has air near -1000 HU and soft tissue near 0..100 HU). "
        "It may be MR, an 8-bit or rescaled export, or CT stored without its rescale intercept"
    )


def _integer_labels(path: Path, array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        return array
    low, high = _finite_range(path, array)
    if not np.array_equal(array, np.round(array)):
        raise InputError(path, "has non-integer values; a label map holds whole-number labels")
    dtype = np.uint8 if low >= 0 and high <= 255 else np.int32
    return array.astype(dtype)


def _finite_range(path: Path, array: np.ndarray) -> tuple[float, float]:
    """Minimum and maximum, after checking for NaN/inf (NaN propagates through min and max)."""
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(path, "contains NaN or infinite values; an image must hold finite numbers")
    return low, high


def _map_label_values(path: Path, array: np.ndarray, value_map: Mapping[int, int]) -> np.ndarray:
    """Translate file label values to LVT labels with a lookup table, one slice at a time (bounded memory)."""
    if any(not 0 <= target <= NUM_CLASSES for target in value_map.values()):
        raise ValueError(f"value map targets must be LVT labels 0..{NUM_CLASSES}, got {value_map}")
    present = np.unique(array)
    unknown = sorted(int(v) for v in present if int(v) not in value_map)
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:20]) + (", ..." if len(unknown) > 20 else "")
        raise InputError(
            path, f"has label values {shown} that the value map does not cover "
            f"(map {dict(value_map)}); give a value map for every label value in the file"
        )
    offset = int(present.min())
    lookup = np.zeros(int(present.max()) - offset + 1, dtype=np.uint8)
    for value, target in value_map.items():
        if offset <= value < offset + lookup.size:
            lookup[value - offset] = target
    output = np.empty(array.shape, dtype=np.uint8)
    for k, plane in enumerate(array):
        output[k] = lookup[plane.astype(np.int64) - offset]
    return output


def is_slicer_segmentation(path: Path) -> bool:
    """A ``.seg.nrrd`` name, or any NRRD whose header carries Slicer segment fields."""
    name = path.name.lower()
    if name.endswith(SEGMENTATION_SUFFIX):
        return True
    if not name.endswith((".nrrd", ".nhdr")):
        return False
    import nrrd

    try:
        header = nrrd.read_header(str(path))
    except (nrrd.NRRDError, OSError, UnicodeDecodeError):
        return False
    return any(key.startswith("Segment0_") for key in header)


def read_segment_mask(path: str | Path, segment_name: str | None, default_name: str) -> tuple[Image, str]:
    """One segment of a Slicer ``.seg.nrrd`` as a bool mask on the file's grid, with the segment's name.

    ``segment_name`` is matched exactly, then in any case; without it ``default_name`` is looked for,
    and a file with a single segment gives that one.

    Raises:
        InputError: unreadable file, or no (or several) segments of that name; the message lists them.
    """
    import nrrd
    import slicerio

    path = _existing_path(path)
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except (nrrd.NRRDError, OSError, ValueError, KeyError) as error:
        raise InputError(path, f"is not a readable Slicer segmentation ({_error_summary(error)})") from error
    segments = segmentation["segments"]
    names = [str(segment.get("name", segment.get("id", ""))) for segment in segments]
    wanted = segment_name or default_name
    chosen = ([n for n, name in enumerate(names) if name == wanted]
              or [n for n, name in enumerate(names) if name.lower() == wanted.lower()])
    if not chosen and segment_name is None and len(segments) == 1:
        chosen = [0]
    if len(chosen) != 1:
        problem = "has several segments named" if chosen else "has no segment named"
        raise InputError(path, f"{problem} {wanted!r} (any case); its segments: {names or 'none'}")
    mask = slicerio.segment_mask(segmentation, segments[chosen[0]]).transpose(2, 1, 0)
    return _image_on_ijk_to_lps(mask, segmentation["ijkToLPS"]), names[chosen[0]]


def _read_slicer_segmentation(path: Path) -> Image:
    import nrrd
    import slicerio

    try:
        segmentation = slicerio.read_segmentation(str(path))
    except (nrrd.NRRDError, OSError, ValueError, KeyError) as error:
        raise InputError(path, f"is not a readable Slicer segmentation ({_error_summary(error)})") from error
    voxels = segmentation["voxels"]
    masks = np.zeros((NUM_CLASSES, *voxels.shape[-3:][::-1]), dtype=bool)
    names = [str(segment.get("name", segment.get("id", "?"))) for segment in segmentation["segments"]]
    recognised = []
    for segment, name in zip(segmentation["segments"], names, strict=True):
        channel = _segment_channel(segment, name)
        if channel is None:
            continue
        masks[channel] |= slicerio.segment_mask(segmentation, segment).transpose(2, 1, 0)
        recognised.append(name)
    if not recognised:
        raise InputError(
            path, f"has no liver, vessel or tumor segment (segments: {names or 'none'}); "
            "name them Liver, Vessels and Tumors or give them the matching terminology"
        )
    ignored = sorted(set(names) - set(recognised))
    if ignored:
        logger.warning("%s: ignored segments that are not liver, vessel or tumor: %s", path, ignored)
    return _image_on_ijk_to_lps(exclusive_labels(masks), segmentation["ijkToLPS"])


def _segment_channel(segment: dict[str, Any], name: str) -> int | None:
    """LVT channel of a Slicer segment: by terminology first, then by words of its name (higher class first).

    Any morphologically altered structure (the tumor category) is tumor, whatever its type.
    """
    terminology = segment.get("terminology") or {}
    if _code_value(terminology, "category") == STRUCTURES[TUMOR].category[1]:
        return TUMOR
    type_code = _code_value(terminology, "type")
    words = set(re.findall(r"[a-z]+", name.lower()))
    for channel in PRIORITY_HIGH_TO_LOW:
        if type_code == STRUCTURES[channel].type[1]:
            return channel
    for channel in PRIORITY_HIGH_TO_LOW:
        if words & _NAME_WORDS[channel]:
            return channel
    return None


def _code_value(terminology: dict[str, Any], key: str) -> str:
    """The code value of a (scheme, value, meaning) terminology entry, or "" when absent."""
    code = terminology.get(key) or []
    return str(code[1]) if len(code) > 1 else ""


def _image_on_ijk_to_lps(array_kji: np.ndarray, ijk_to_lps: np.ndarray) -> Image:
    """An :class:`Image` from a ``[k, j, i]`` array and a 4x4 IJK-to-LPS matrix (spacing x direction)."""
    matrix = np.asarray(ijk_to_lps, dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    return Image(array_kji, tuple(spacing), tuple(matrix[:3, 3]), matrix[:3, :3] / spacing)


def _error_summary(error: BaseException) -> str:
    """The last non-empty line of an exception message (SimpleITK puts its reason there)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
