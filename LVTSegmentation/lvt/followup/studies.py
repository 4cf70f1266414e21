"""The studies of one patient: ``lvt segment`` result folders read as they are, CTs segmented first.

Every study is measured on its own grid (:func:`lvt.measure.volumes_and_lesions.measure_labels`),
so each number is exactly what ``lvt segment`` reports for that study.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lvt.errors import InputError
from lvt.grid import resample_like
from lvt.image import Image
from lvt.labels import whole_liver
from lvt.measure.volumes_and_lesions import Measurements, measure_labels
from lvt.progress import Progress, ProgressCallback, check_cancel, overall_fraction, report

if TYPE_CHECKING:
    from lvt.segment.pipeline import SegmentOptions

RESULT_FILES = ("segmentation.seg.nrrd", "labels.nii.gz")


@dataclass(frozen=True, eq=False)
class Study:
    """One study: its exclusive labels, the CT when known, and its measurements."""

    name: str
    source: Path
    labels: Image
    ct: Image | None
    measurements: Measurements

    @classmethod
    def of(cls, name: str, source: Path, labels: Image, ct: Image | None = None) -> Study:
        """A study from labels (and CT on the same grid), measured here."""
        if not whole_liver(labels.array).any():
            raise InputError(source, "the segmentation has no liver; nothing to compare")
        return cls(name, Path(source), labels, ct, measure_labels(labels, ct))


def is_result_folder(path: Path) -> bool:
    """An ``lvt segment`` / ``lvt measure`` output folder (report.json and a segmentation)."""
    return path.is_dir() and (path / "report.json").is_file() and any((path / n).is_file() for n in RESULT_FILES)


def load_result_folder(folder: Path, name: str) -> Study:
    """A study from an output folder: the (possibly edited) segmentation.seg.nrrd, else labels.nii.gz.

    The CT is the report's input when a model produced the folder (``lvt segment``) and the file
    still exists; a segmentation stored cropped (Slicer) is placed back on the CT grid.
    """
    from lvt.io import read_image, read_segmentation

    seg_path = next(folder / n for n in RESULT_FILES if (folder / n).is_file())
    labels = read_segmentation(seg_path)
    try:
        document = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(folder / "report.json", f"cannot be read as JSON ({error})") from error
    ct_path = Path(document.get("input", {}).get("path", "")) if document.get("model") else None
    ct = read_image(ct_path, allow_non_ct=True) if ct_path is not None and ct_path.exists() else None
    if ct is not None and not labels.same_grid(ct):
        labels = resample_like(labels, ct, interpolation="nearest")
    return Study.of(name, folder, labels, ct)


def study_names(inputs: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    """The user's names, else the input names without extensions (numbered when they repeat)."""
    if names:
        if len(names) != len(inputs):
            raise InputError(None, f"--names gives {len(names)} names for {len(inputs)} studies")
        return list(names)
    stems = [Path(p).name.split(".")[0] or str(p) for p in inputs]
    return [f"{n + 1}-{s}" if stems.count(s) > 1 else s for n, s in enumerate(stems)]


def load_studies(inputs: Sequence[Path], names: Sequence[str], staging: Path, options: SegmentOptions,
                 progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> list[Study]:
    """Load result folders as they are; segment CTs (``lvt segment``) into ``staging/studies/NAME``.

    Args:
        inputs: CT files or DICOM folders, or ``lvt segment`` output folders.
        names: one name per input (see :func:`study_names`).
        staging: the output folder being written; per-study segmentations go under ``studies/``.
        options: :class:`lvt.segment.pipeline.SegmentOptions` for the CTs. Each study is segmented into a
            fresh folder of its own and follow-up reads only its labels and report, so ``overwrite`` and
            ``write_surfaces`` are always off there.
        progress: receives "segment" and "read" events per study.
        cancel: checked between studies.
    """
    from lvt.io import read_image
    from lvt.segment.pipeline import segment_file

    options = replace(options, overwrite=False, write_surfaces=False)
    studies = []
    for index, (path, name) in enumerate(zip(inputs, names, strict=True)):
        check_cancel(cancel)
        path = Path(path)
        report(progress, "segment", index, len(inputs), f"study {index + 1} of {len(inputs)}: {path}")
        if is_result_folder(path):
            studies.append(load_result_folder(path, name))
            continue
        folder = staging / "studies" / _safe_name(name)
        segment_file(path, folder, options, progress=_study_progress(progress, index, len(inputs)), cancel=cancel)
        study = load_result_folder(folder, name)
        studies.append(replace(study, source=path, ct=study.ct or read_image(path, allow_non_ct=True)))
    report(progress, "segment", len(inputs), len(inputs), "studies loaded")
    return studies


def _study_progress(progress: ProgressCallback | None, index: int, total: int) -> ProgressCallback | None:
    """Forward ``lvt segment`` events of one study as "segment" events over all studies."""
    if progress is None:
        return None

    def forward(event: Progress) -> None:
        progress(Progress("segment", index + overall_fraction(event), total,
                          f"study {index + 1} of {total}, {event.stage}: {event.message}"))

    return forward


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "study"

