"""Slicer segmentations (``.seg.nrrd``) read as LVT labels or as one segment's mask, with slicerio.

Segments are recognised by terminology first, then by a whole word of their name; overlapping
layers are combined by the priority tumor > vessel > liver.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from lvt.errors import InputError
from lvt.image import Image
from lvt.io.geometry import check_spacing, refuse_sheared
from lvt.io.integrity import verify_nrrd
from lvt.io.write import SEGMENTATION_SUFFIX
from lvt.labels import LIVER, NUM_CLASSES, PRIORITY_HIGH_TO_LOW, STRUCTURES, TUMOR, VESSEL, exclusive_labels

logger = logging.getLogger(__name__)

# Slicer segment names understood when a segment carries no LVT terminology (whole words, any case).
_NAME_WORDS = {
    TUMOR: frozenset({"tumor", "tumors", "tumour", "tumours", "lesion", "lesions"}),
    VESSEL: frozenset({"vessel", "vessels"}),
    LIVER: frozenset({"liver"}),
}


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
    import slicerio

    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(path, "does not exist")
    segmentation = _load(path)
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
    return _image_on_ijk_to_lps(path, mask, segmentation["ijkToLPS"]), names[chosen[0]]


def read_slicer_segmentation(path: Path) -> Image:
    """A ``.seg.nrrd`` as the exclusive LVT label map on the file's grid (see :func:`lvt.io.read_segmentation`)."""
    import slicerio

    segmentation = _load(path)
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
    return _image_on_ijk_to_lps(path, exclusive_labels(masks), segmentation["ijkToLPS"])


def _load(path: Path) -> dict[str, Any]:
    """slicerio's reading of a file checked to be whole first (pynrrd does not check gzip's CRC)."""
    import zlib

    import nrrd
    import slicerio

    verify_nrrd(path)
    try:
        return slicerio.read_segmentation(str(path))
    except (nrrd.NRRDError, OSError, ValueError, KeyError, zlib.error) as error:
        raise InputError(path, f"is not a readable Slicer segmentation ({_error_summary(error)})") from error


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


def _image_on_ijk_to_lps(path: Path, array_kji: np.ndarray, ijk_to_lps: np.ndarray) -> Image:
    """An :class:`Image` from a ``[k, j, i]`` array and a 4x4 IJK-to-LPS matrix (spacing x direction)."""
    matrix = np.asarray(ijk_to_lps, dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    image = Image(array_kji, tuple(spacing), tuple(matrix[:3, 3]), matrix[:3, :3] / spacing)
    check_spacing(path, image)
    refuse_sheared(path, image)
    return image


def _error_summary(error: BaseException) -> str:
    """The last non-empty line of an exception message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
