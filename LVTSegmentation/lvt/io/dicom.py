"""DICOM folders: the series they hold, and which one is the CT to read.

A folder may hold several series (scouts, dose reports, other phases); the user names one by its
SeriesInstanceUID, else the only CT series with the most slices is taken. Reading the chosen series
is :func:`lvt.io.read.read_image`'s job; its grid comes from the slices' own positions
(:func:`series_geometry`), because ITK stacks slices evenly whatever their positions say: a missing
slice stretches the whole volume, and a gantry tilt makes every voxel too tall.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvt.errors import InputError
from lvt.grid import itk_warnings_off, sitk_module

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One DICOM series found in a folder: what a user needs to choose it, and its files in slice order."""

    uid: str
    modality: str
    description: str
    num_slices: int
    files: tuple[str, ...]

    def describe(self) -> str:
        """One line for error messages and series pickers."""
        uid = self.uid or "(empty UID)"
        return f"{uid} [{self.modality or 'no modality'}, '{self.description}', {self.num_slices} slices]"

    def to_dict(self) -> dict[str, str | int]:
        """The series as a report records it (without its file list)."""
        return {"uid": self.uid, "modality": self.modality, "description": self.description,
                "num_slices": self.num_slices}


def find_dicom_series(folder: str | Path) -> list[DicomSeriesInfo]:
    """All DICOM series in a folder and its subfolders, most slices first.

    A series found in several subfolders keeps the subfolder with the most files (a warning is logged).
    """
    sitk = sitk_module()
    folder = Path(folder)
    found: dict[str, tuple[str, ...]] = {}
    with itk_warnings_off():
        for directory in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(directory)):
                files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(directory), uid))
                if uid in found:
                    logger.warning("DICOM series %s is split over several folders of %s", uid, folder)
                    files = max(files, found[uid], key=len)
                found[uid] = files
        series = [_dicom_series_info(uid, files) for uid, files in found.items()]
    return sorted(series, key=lambda info: -info.num_slices)


def choose_dicom_series(
    folder: Path, series: list[DicomSeriesInfo], series_uid: str | None
) -> DicomSeriesInfo:
    """The requested series, else the only CT series with the most slices; ambiguity is an error.

    Args:
        folder: the folder the user gave (named in error messages).
        series: from :func:`find_dicom_series`, not empty.
        series_uid: the SeriesInstanceUID the user asked for, or None.
    """
    listing = "; ".join(info.describe() for info in series)
    if series_uid is not None:
        chosen = [info for info in series if info.uid == series_uid]
        if not chosen:
            raise InputError(folder, f"has no DICOM series with UID {series_uid}. Series found: {listing}")
        return chosen[0]
    ct_series = [info for info in series if info.modality.upper() == "CT"]
    if not ct_series:
        raise InputError(folder, f"holds no CT series; choose one with --series UID. Series found: {listing}")
    most = max(info.num_slices for info in ct_series)
    tied = [info for info in ct_series if info.num_slices == most]
    if len(tied) > 1:
        raise InputError(
            folder, f"holds {len(tied)} CT series of {most} slices; choose one with --series UID. "
            f"Series found: {listing}"
        )
    return tied[0]


def _dicom_series_info(uid: str, files: tuple[str, ...]) -> DicomSeriesInfo:
    sitk = sitk_module()
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    reader.ReadImageInformation()

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    frames = tag("0028|0008")  # NumberOfFrames: an enhanced (multi-frame) series may be one file
    num_slices = int(frames) if len(files) == 1 and frames.isdigit() else len(files)
    return DicomSeriesInfo(uid, tag("0008|0060"), tag("0008|103e"), num_slices, files)


# Tags: ImagePositionPatient, ImageOrientationPatient, PixelSpacing.
POSITION, ORIENTATION, PIXEL_SPACING = "0020|0032", "0020|0037", "0028|0030"


def series_geometry(
    folder: Path, series: DicomSeriesInfo, tag: Callable[[int, str], str], pixel_spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The 3x3 IJK-to-LPS matrix and LPS origin that the slice positions give, in the reader's slice order.

    The slice axis is the mean step between slice positions, so a tilted series gets a sheared grid
    (made rectangular later by :func:`lvt.io.geometry.rectangular_grid`). A single multi-frame file
    gives None: ITK's grid is used.

    Args:
        folder: named in error messages.
        series: the series read, its files in the reader's order.
        tag: ``tag(slice_index, key)``, the stripped value of a DICOM tag of a slice, "" when absent.
        pixel_spacing: in-plane spacing (i, j) in mm as ITK read it.

    Raises:
        InputError: positions or orientation are missing or differ between slices, slices share a
            position, or the spacing between them is uneven (a missing slice).
    """
    count = len(series.files)
    if count < 2:
        return None
    where = f"DICOM series {series.uid}"
    if not tag(0, PIXEL_SPACING):
        raise InputError(folder, f"{where} has no PixelSpacing (0028,0030); its voxel size is unknown")
    positions = np.array([_numbers(folder, where, tag(k, POSITION), 3, "ImagePositionPatient") for k in range(count)])
    orientations = [_numbers(folder, where, tag(k, ORIENTATION), 6, "ImageOrientationPatient") for k in range(count)]
    if np.abs(np.asarray(orientations) - orientations[0]).max() > 1e-4:
        raise InputError(folder, f"{where} mixes slices of different orientations (ImageOrientationPatient)")
    row, column = np.asarray(orientations[0][:3]), np.asarray(orientations[0][3:])
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    _check_even_spacing(folder, where, positions @ normal)
    step = (positions[-1] - positions[0]) / (count - 1)
    off_line = np.linalg.norm(np.diff(positions, axis=0) - step, axis=1)
    if off_line.max() > _tolerance_mm(float(np.linalg.norm(step))):
        worst = int(np.argmax(off_line))
        raise InputError(folder, f"{where} has slice positions that do not lie on a straight line (slice "
                         f"{worst + 2} is {off_line[worst]:.2f} mm off); it cannot be stacked into one volume")
    matrix = np.column_stack([row * pixel_spacing[0], column * pixel_spacing[1], step])
    return matrix, positions[0]


def _check_even_spacing(folder: Path, where: str, heights: np.ndarray) -> None:
    """Refuse slices at the same position, out of order, or with a gap (a missing slice)."""
    steps = np.diff(heights)
    typical = float(np.median(steps))
    tolerance = _tolerance_mm(abs(typical))
    backwards = np.flatnonzero(steps * np.sign(typical) <= tolerance)
    if backwards.size or typical == 0.0:
        k = int(backwards[0]) if backwards.size else 0
        raise InputError(folder, f"{where} has slices at the same or out-of-order positions (slice {k + 2} at "
                         f"{heights[k + 1]:.2f} mm after slice {k + 1} at {heights[k]:.2f} mm along the slice "
                         "normal): it may mix several acquisitions; choose one with --series UID")
    uneven = np.flatnonzero(np.abs(steps - typical) > tolerance)
    if uneven.size:
        gaps = "; ".join(f"a gap of {abs(steps[k]):.3g} mm after slice {k + 1} (at {heights[k]:.2f} mm along "
                         "the slice normal)" for k in uneven[:3])
        more = f" and {uneven.size - 3} more" if uneven.size > 3 else ""
        raise InputError(folder, f"{where} has uneven slice spacing: {gaps}{more} where the others are "
                         f"{abs(typical):.3g} mm (a missing slice?). Stacked evenly, every slice after it would "
                         "be misplaced and the volumes wrong")


def _tolerance_mm(step_mm: float) -> float:
    """How far a slice position may stray: 1 % of the slice step, at least 0.01 mm (DICOM rounding)."""
    return max(0.01 * step_mm, 0.01)


def _numbers(folder: Path, where: str, text: str, count: int, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split("\\")]
    except ValueError:
        values = []
    if len(values) != count or not np.all(np.isfinite(values)):
        problem = "has a slice without" if not text else "has a slice with an unreadable"
        raise InputError(folder, f"{where} {problem} {name}; the slice positions are unknown")
    return values
