"""The result as a DICOM Segmentation (SEG) on the slices of the DICOM series it was made from.

A PACS, and Slicer's DICOM module (QuantitativeReporting), shows a SEG over the CT it references, so
every frame must lie on a source slice: the labels are written only when they are on the very grid of
the series' single-frame slices, checked slice by slice against ImagePositionPatient (a tilted series
that reading resampled is not: :func:`why_no_segmentation` says why, and no SEG is written).

Segments (BINARY, AUTOMATIC, one per class, in the order of :data:`lvt.labels.STRUCTURES`) carry the
codes of that table, which are also the ``.seg.nrrd``'s: Liver SCT 10200004; Blood vessel SCT 59820001
and Neoplasm SCT 108369006, each with the anatomic region Liver (DICOM PS3.16 CID 7151 "Segmentation
Property Types" lists all three; the categories are those of Slicer's "DICOM master list" terminology).
Unlike the exclusive label map, the SEG's "Liver" is the whole organ (labels 1, 2 and 3,
:func:`lvt.labels.masks_from_labels`), as its SNOMED code means and as the SR's liver volume measures
it; vessels and tumors are labels 2 and 3, so the label map is the segments combined by priority. A
class with no voxel is left out (the others keep the order liver, vessels, tumors, numbered from 1):
some readers fail on a segment without frames, and report.json and the SR say what was not found.
Frames without any voxel of their segment are left out too, as the standard allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lvt import __version__
from lvt.atomic import atomic_path
from lvt.image import Image
from lvt.io.geometry import SHEAR_TOLERANCE
from lvt.labels import STRUCTURES, Structure, masks_from_labels

if TYPE_CHECKING:
    import highdicom
    from pydicom import Dataset

SEG_FILE = "segmentation.dcm"
MANUFACTURER = "LVT Segmentation"
SEG_SERIES_NUMBER = 9901
# Patient and General Study module attributes of type 2, which highdicom copies from the source.
TYPE_2_PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                            "ReferringPhysicianName", "StudyID", "AccessionNumber")


@dataclass(frozen=True)
class Algorithm:
    """The model that made the labels, as DICOM names the algorithm and the device that ran it."""

    name: str
    version: str
    weights_sha256: str = ""

    def identification(self) -> highdicom.AlgorithmIdentificationSequence:
        import highdicom
        from pydicom.sr.codedict import codes

        return highdicom.AlgorithmIdentificationSequence(
            name=self.name, family=codes.cid7162.ArtificialIntelligence, version=self.version)


def read_series_headers(files: Sequence[str | Path]) -> list[Dataset]:
    """The headers (no pixel data) of a series' files, in the given (the reader's slice) order.

    What anonymisers often leave out is mended in these copies (never in the files): a blanked SOP
    class or instance UID is taken from the file's meta header, which names the stored object too,
    and an absent patient or study attribute of type 2 (required, may be empty) becomes empty.
    """
    import pydicom

    headers = []
    for path in files:
        # force: GDCM has read these files as DICOM already, some without the 128-byte preamble pydicom expects
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        meta = getattr(ds, "file_meta", None)
        for keyword in ("SOPClassUID", "SOPInstanceUID"):
            if not ds.get(keyword) and meta is not None and meta.get(f"MediaStorage{keyword}"):
                setattr(ds, keyword, meta.get(f"MediaStorage{keyword}"))
        for keyword in TYPE_2_PATIENT_AND_STUDY:
            if keyword not in ds:
                setattr(ds, keyword, "")
        headers.append(ds)
    return headers


def why_no_segmentation(labels: Image, sources: Sequence[Dataset]) -> str | None:
    """Why no SEG can be made of these labels on these slices; None when it can (slice k on ``sources[k]``).

    The labels must hold something, and lie on the slices: rows, columns, orientation and spacing
    the slices' own, each slice's position the grid's within the rounding that reading accepts (a
    tenth of the smallest voxel size). A series that reading resampled (a gantry tilt) fails this.
    """
    if not labels.array.any():
        return "nothing was segmented"
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in sources):
        return "the series is a multi-frame file; a SEG is written for series of single-frame slices"
    if any(not ds.get("FrameOfReferenceUID") for ds in sources):
        return "the series has no FrameOfReferenceUID, so a SEG could not be placed on it"
    where = "the labels are not on the series' slices, as after resampling a tilted or sheared series"
    if len(sources) != labels.size_ijk[2]:
        return f"{where} ({labels.size_ijk[2]} label slices for {len(sources)} slices)"
    for k, ds in enumerate(sources):
        problem = _slice_mismatch(labels, k, ds)
        if problem:
            return f"{where} (slice {k + 1}: {problem})"
    return None


def _slice_mismatch(labels: Image, k: int, ds: Dataset) -> str | None:
    """How source slice ``ds`` differs from slice k of the labels' grid; None when it is that slice."""
    size_i, size_j, _ = labels.size_ijk
    if (int(ds.Rows), int(ds.Columns)) != (size_j, size_i):
        return f"{ds.Rows}x{ds.Columns} pixels for {size_j}x{size_i}"
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    if not np.allclose(orientation, np.concatenate([labels.direction[:, 0], labels.direction[:, 1]]), atol=1e-4):
        return "another orientation"
    if not np.allclose(np.asarray(ds.PixelSpacing, dtype=float), labels.spacing_mm[1::-1], atol=1e-3):
        return "another pixel spacing"  # PixelSpacing is (between rows = j, between columns = i)
    matrix = labels.ijk_to_lps_matrix()
    off_mm = float(np.linalg.norm(np.asarray(ds.ImagePositionPatient, dtype=float) - matrix[:3, :3] @ [0, 0, k]
                                  - matrix[:3, 3]))
    if off_mm > SHEAR_TOLERANCE * min(labels.spacing_mm):
        return f"its position is {off_mm:.2f} mm off"
    return None


def build_segmentation(labels: Image, sources: Sequence[Dataset], algorithm: Algorithm) -> highdicom.seg.Segmentation:
    """The SEG of an exclusive label map that lies on the source slices (see :func:`why_no_segmentation`).

    Args:
        labels: exclusive label map (0..3), slice k on ``sources[k]``.
        sources: the series' headers in the reader's slice order.
        algorithm: the model, named in each segment and in the equipment.

    Raises:
        ValueError: the labels are empty or not on the source slices (:func:`why_no_segmentation`).
    """
    import highdicom
    from pydicom.uid import ExplicitVRLittleEndian

    problem = why_no_segmentation(labels, sources)
    if problem:
        raise ValueError(problem)
    masks = masks_from_labels(labels.array)  # (3, k, j, i): the liver channel is the whole liver
    present = [s for s in STRUCTURES if masks[s.channel].any()]
    return highdicom.seg.Segmentation(
        source_images=list(sources),
        pixel_array=np.stack([masks[s.channel] for s in present], axis=-1).astype(np.uint8),
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment(number, s, algorithm) for number, s in enumerate(present, start=1)],
        series_instance_uid=highdicom.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=highdicom.UID(), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=algorithm.name[:64],
        software_versions=f"lvt {__version__}",
        device_serial_number=(algorithm.weights_sha256 or algorithm.version)[:64] or "unknown",
        content_label="LVT", content_description="Liver, vessels and tumors (automatic)",
        series_description="LVT liver, vessels, tumors", transfer_syntax_uid=ExplicitVRLittleEndian,
    )


def write_dicom(dataset: Dataset, path: Path) -> None:
    """Write a DICOM object (the SEG, the SR) atomically, as a DICOM file with its preamble."""
    with atomic_path(path, suffix=".dcm") as temporary:
        dataset.save_as(temporary, enforce_file_format=True)


def coded(code: tuple[str, str, str]) -> highdicom.sr.CodedConcept:
    """A (scheme, value, meaning) triple of :mod:`lvt.labels` as a DICOM code."""
    import highdicom

    scheme, value, meaning = code
    return highdicom.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _segment(number: int, structure: Structure, algorithm: Algorithm) -> highdicom.seg.SegmentDescription:
    import highdicom

    region = [coded(structure.anatomic_region)] if structure.anatomic_region else None
    return highdicom.seg.SegmentDescription(
        segment_number=number, segment_label=structure.segment_name,
        segmented_property_category=coded(structure.category), segmented_property_type=coded(structure.type),
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm.identification(), tracking_uid=highdicom.UID(),
        tracking_id=structure.segment_name, anatomic_regions=region,
        display_color=highdicom.color.CIELabColor.from_rgb(*structure.color_rgb),
    )
