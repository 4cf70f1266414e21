"""DICOM folders: the series they hold, and which one is the CT to read.

A folder may hold several series (scouts, dose reports, other phases); the user names one by its
SeriesInstanceUID, else the only CT series with the most slices is taken. Reading the chosen series
is :func:`lvt.io.read.read_image`'s job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lvt.errors import InputError
from lvt.grid import sitk_module

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


def find_dicom_series(folder: str | Path) -> list[DicomSeriesInfo]:
    """All DICOM series in a folder and its subfolders, most slices first.

    A series found in several subfolders keeps the subfolder with the most files (a warning is logged).
    """
    sitk = sitk_module()
    folder = Path(folder)
    found: dict[str, tuple[str, ...]] = {}
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
