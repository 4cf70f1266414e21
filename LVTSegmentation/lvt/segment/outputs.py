"""The files of an output folder: labels, segmentation, measurements, surfaces, report.json and report.html.

After the measurements, two threads share the work: one draws the report's 2D views (matplotlib) and
computes the planning numbers, the other builds and writes the surfaces (VTK) and renders the 3D view.
Their heavy parts release the interpreter, so on two cores the run waits for the slower of the two, not
for their sum (docs/performance.md).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lvt.heap import retained_heap
from lvt.image import Image
from lvt.progress import ProgressCallback, check_cancel, checkpoint, report

if TYPE_CHECKING:
    from vtkmodules.vtkCommonDataModel import vtkPolyData

    from lvt.io.dicom_outputs import DicomRequest
    from lvt.measure.views import ReportImage
    from lvt.measure.volumes_and_lesions import Lesion


@dataclass(frozen=True)
class ResectionRegion:
    """A user-drawn resection region on the labels' grid (nonzero inside) and where it came from."""

    mask: Image
    source: str


def write_outputs(folder: Path, labels: Image, ct: Image | None, *, input_path: Path, model: dict | None,
                  inference: dict | None, dropped: list[dict], min_volume_ml: float, write_surfaces: bool,
                  warnings: list[str], progress: ProgressCallback | None, cancel: threading.Event | None,
                  resection: ResectionRegion | None = None, source: Mapping | None = None,
                  dicom: DicomRequest | None = None) -> dict:
    """Write labels, segmentation, surfaces, report.json and report.html into ``folder``.

    Every file and every measurement is a cancel point. With a ``resection`` region, report.json's
    "planning" section gains "remnant" (see :func:`lvt.measure.planning.liver_remnant`). ``source``
    (what reading found: the DICOM series used and the others present) goes into report.json's "input".
    ``dicom`` asks for the DICOM SEG and SR (:func:`lvt.io.dicom_outputs.write_dicom_outputs`).
    """
    from lvt.io import write_image, write_segmentation
    from lvt.io.dicom_outputs import write_dicom_outputs
    from lvt.measure.html import surface_view_figure, write_report_page
    from lvt.measure.report import build_report, write_report_json
    from lvt.measure.volumes_and_lesions import measure_labels

    with retained_heap():  # freed buffers serve the next ones; handed back at the end
        checkpoint(progress, cancel, "measure", 0, 1, "volumes and diameters")
        write_image(labels.with_array(labels.array.astype(np.uint8)), folder / "labels.nii.gz")
        check_cancel(cancel)
        write_segmentation(labels, folder / "segmentation.seg.nrrd")
        check_cancel(cancel)
        measurements = measure_labels(labels, ct)
        document = build_report(input_path=input_path, ct_or_labels_grid=labels, measurements=measurements,
                                model=model, inference=inference, dropped=dropped, min_volume_ml=min_volume_ml,
                                warnings=warnings, source=source)
        checkpoint(progress, cancel, "measure", 1, 1, f"{len(measurements.lesions)} lesion(s)")
        with ThreadPoolExecutor(1, thread_name_prefix="lvt-views") as second_core:
            # The 3D view renders here, in the main thread: off-screen OpenGL is not safe in others everywhere.
            drawn = second_core.submit(_views_and_planning, document, ct, labels, measurements.lesions, folder,
                                       cancel)
            surfaces = _surfaces(folder, labels, progress, cancel) if write_surfaces else None
            checkpoint(progress, cancel, "report", 0, 1, "report")
            if dicom is not None:
                write_dicom_outputs(folder, labels, document, dicom, model or {})
            surface_view = surface_view_figure(document, surfaces, folder)  # may add a warning: JSON after it
            figures, document["planning"] = drawn.result()
        if resection is not None:
            check_cancel(cancel)
            _add_remnant(document, labels, resection, measurements.lesions)
        check_cancel(cancel)
        write_report_page(document, [*figures, *surface_view], folder)
        check_cancel(cancel)
        write_report_json(document, folder / "report.json")
        report(progress, "report", 1, 1, "done")
    return document


def _views_and_planning(document: Mapping, ct: Image | None, labels: Image, lesions: Sequence[Lesion], folder: Path,
                        cancel: threading.Event | None) -> tuple[list[ReportImage], dict]:
    """The second thread's share: the 2D views (each a cancel point), then report.json's planning numbers.

    It reads ``document["lesions"]`` and writes nothing into the document: the main thread adds to it meanwhile.
    """
    from lvt.measure.html import views_folder
    from lvt.measure.planning import planning_summary
    from lvt.measure.views import report_views

    figures = report_views(document, ct, labels, views_folder(folder), cancel)
    check_cancel(cancel)
    return figures, planning_summary(labels, lesions)


def _surfaces(folder: Path, labels: Image, progress: ProgressCallback | None,
              cancel: threading.Event | None) -> dict[str, vtkPolyData]:
    """Extract and write the 3D surfaces (one structure at a time, each a cancel point)."""
    from lvt.measure.surfaces import extract_surfaces
    from lvt.measure.surfaces import write_surfaces as write_surface_files

    checkpoint(progress, cancel, "surfaces", 0, 1, "3D surfaces")
    surfaces = extract_surfaces(labels, cancel=cancel)
    check_cancel(cancel)
    write_surface_files(surfaces, folder / "surfaces")
    checkpoint(progress, cancel, "surfaces", 1, 1, f"{len(surfaces)} surface(s)")
    return surfaces


def _add_remnant(document: dict, labels: Image, resection: ResectionRegion, lesions: Sequence[Lesion]) -> None:
    """report.json's planning.remnant for a resection region; a warning when the region misses the liver."""
    from lvt.measure.planning import liver_remnant

    remnant = liver_remnant(labels, resection.mask, lesions)
    document["planning"]["remnant"] = {"source": resection.source, **remnant.to_dict()}
    if remnant.resected_liver_ml == 0.0:
        document["warnings"].append(f"the resection region {resection.source} does not touch the liver: "
                                    "the remnant is the whole liver")
