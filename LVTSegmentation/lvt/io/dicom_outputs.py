"""The DICOM results of ``lvt segment`` on a DICOM series: ``segmentation.dcm`` and, on request, the SR.

They are written beside the other results and listed in report.json's "outputs"; when one cannot be
written (the input is a file, the grid was resampled, nothing was found, headers highdicom refuses),
the other results stand and report.json's warnings say why, so no misaligned or partial SEG is
ever written silently.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lvt.image import Image
from lvt.io.dicom import DicomSeriesInfo
from lvt.io.dicom_seg import (
    SEG_FILE,
    Algorithm,
    build_segmentation,
    read_series_headers,
    why_no_segmentation,
    write_dicom,
)
from lvt.io.dicom_sr import SR_FILE, build_measurement_report

# What pydicom and highdicom raise for headers they cannot use (a missing or malformed attribute).
REFUSED = (ValueError, TypeError, AttributeError, KeyError)


@dataclass(frozen=True)
class DicomRequest:
    """Which DICOM results to write, and from what.

    Attributes:
        series: the DICOM series the labels were made from; None when the input was a file.
        write_seg: write ``segmentation.dcm`` (``lvt segment --no-dicom`` turns it off).
        write_sr: also write the TID 1500 SR (``--dicom-sr``); it references the SEG, so needs it.
    """

    series: DicomSeriesInfo | None
    write_seg: bool = True
    write_sr: bool = False


def write_dicom_outputs(folder: Path, labels: Image, report: dict, request: DicomRequest, model: Mapping) -> None:
    """Write the requested DICOM results into ``folder``; set ``report["outputs"]``, add a warning for each one skipped.

    Args:
        folder: the output folder.
        labels: the exclusive label map on the CT's grid, as written to labels.nii.gz.
        report: report.json's content; gains "outputs", ``{"dicom_seg": "segmentation.dcm" | None,
            "dicom_sr": "measurements_sr.dcm" | None}``, and a warning for each result not written.
        request: the series and which results.
        model: the model that made the labels ("name", "version", "weights_sha256" as in report.json's model).
    """
    outputs: dict[str, str | None] = {"dicom_seg": None, "dicom_sr": None}
    report["outputs"] = outputs
    if not request.write_seg or (request.series is None and not request.write_sr):
        return
    wanted = "DICOM SEG and SR" if request.write_sr else "DICOM SEG"
    if request.series is None:
        report["warnings"].append(f"no {wanted} written: the input is not a DICOM series")
        return
    if importlib.util.find_spec("highdicom") is None:  # e.g. a Slicer whose pydicom is too old for it
        report["warnings"].append(f"no {wanted} written: the highdicom package is not installed "
                                  "(pip install highdicom)")
        return
    algorithm = Algorithm(str(model["name"]), str(model["version"]), str(model.get("weights_sha256", "")))
    try:
        sources = read_series_headers(request.series.files)
        problem = why_no_segmentation(labels, sources)
        segmentation = None if problem else build_segmentation(labels, sources, algorithm)
    except REFUSED as error:
        segmentation, problem = None, f"highdicom refused the series' headers ({error})"
    if segmentation is None:
        report["warnings"].append(f"no {wanted} written: {problem}")
        return
    write_dicom(segmentation, folder / SEG_FILE)
    outputs["dicom_seg"] = SEG_FILE
    if request.write_sr:
        try:
            sr = build_measurement_report(report, segmentation, sources, algorithm)
        except REFUSED as error:
            report["warnings"].append(f"no DICOM SR written: highdicom refused it ({error})")
            return
        write_dicom(sr, folder / SR_FILE)
        outputs["dicom_sr"] = SR_FILE
