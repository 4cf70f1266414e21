"""DICOM SEG of the result: it reads back with highdicom, its segments are the labels on the source
slices voxel for voxel, and it references the input's instances and frame of reference."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import pytest
from conftest import shared_file
from dicom_series import write_ct_series, write_phantom_series

from lvt.cli.main import run
from lvt.grid import resample_like
from lvt.image import Image
from lvt.io import read_image_with_info, read_label_image
from lvt.io.dicom_outputs import DicomRequest, write_dicom_outputs
from lvt.io.dicom_seg import Algorithm, build_segmentation, read_series_headers, why_no_segmentation, write_dicom
from lvt.labels import STRUCTURES, TUMOR, TUMOR_LABEL, VESSEL_LABEL, exclusive_labels, masks_from_labels

ALGORITHM = Algorithm("tiny", "1.2", "ab" * 32)


@pytest.fixture(scope="module")
def phantom_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Image, list[str]]:
    folder = tmp_path_factory.mktemp("seg") / "series"
    labels, uids = write_phantom_series(folder)
    return folder, labels, uids


def write_seg(series: Path, labels: Image, path: Path) -> Path:
    """The SEG of labels on the CT that lvt reads from ``series``, as ``lvt segment`` writes it."""
    ct, info = read_image_with_info(series)
    assert ct.same_grid(labels) and info.series is not None
    write_dicom(build_segmentation(labels, read_series_headers(info.series.files), ALGORITHM), path)
    return path


def assert_seg_is_labels(path: Path, labels: Image, uids: list[str], series: Path) -> highdicom.seg.Segmentation:
    """Segments = the classes present (liver whole, vessels, tumors), voxel for voxel on the source slices."""
    seg = highdicom.seg.segread(path)
    source = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    referenced = [item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert sorted(referenced) == sorted(uids)
    assert {uid for _, _, uid in seg.get_source_image_uids()} == set(uids)
    masks = masks_from_labels(labels.array)
    present = [s for s in STRUCTURES if masks[s.channel].any()]
    assert [item.SegmentLabel for item in seg.SegmentSequence] == [s.segment_name for s in present]
    pixels = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)  # slice k = uids[k]
    assert pixels.shape == (*labels.array.shape, len(present))
    for number, structure in enumerate(present, start=1):
        assert np.array_equal(pixels[..., number - 1].astype(bool), masks[structure.channel]), structure.key
        description = seg.get_segment_description(number)
        assert description.segmented_property_type.value == structure.type[1]
        assert description.algorithm_type == highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        assert description.algorithm_identification[0].AlgorithmName == ALGORITHM.name
    assert seg.SegmentationType == "BINARY"
    return seg


def test_phantom_series_seg_is_the_labels_on_its_slices(phantom_series: tuple[Path, Image, list[str]],
                                                        tmp_path: Path) -> None:
    series, labels, uids = phantom_series
    assert {VESSEL_LABEL, TUMOR_LABEL} <= set(np.unique(labels.array))
    seg = assert_seg_is_labels(write_seg(series, labels, tmp_path / "seg.dcm"), labels, uids, series)
    # the label map is the segments combined by priority tumor > vessel > liver
    pixels = seg.get_pixels_by_source_instance(uids).astype(bool)
    assert np.array_equal(exclusive_labels(np.moveaxis(pixels, -1, 0)), labels.array)
    # each stored frame lies on the slice it references
    positions = {ds.SOPInstanceUID: ds.ImagePositionPatient for ds in map(pydicom.dcmread, series.iterdir())}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(np.asarray(position, float), np.asarray(positions[source], float), atol=1e-3)


def test_real_series_seg_is_the_labels_on_its_slices(tmp_path: Path) -> None:
    series = shared_file("totalsegmentator_example", "example_ct_dicom")
    ct, info = read_image_with_info(series)
    # a real label map on that series: TotalSegmentator's liver (5) and portal/splenic vein (64)
    reference = resample_like(read_label_image(shared_file("totalsegmentator_example", "example_seg_dicom.nii.gz")),
                              ct, interpolation="nearest").array
    labels = ct.with_array(np.select([reference == 64, reference == 5], [VESSEL_LABEL, 1], 0).astype(np.uint8))
    assert info.series is not None and (labels.array == 1).sum() > 100_000
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in info.series.files]
    assert not any(ds.SOPInstanceUID for ds in headers)  # anonymised: blank, the file meta names the instance
    uids = [ds.file_meta.MediaStorageSOPInstanceUID for ds in headers]
    seg = assert_seg_is_labels(write_seg(series, labels, tmp_path / "seg.dcm"), labels, uids, series)
    assert STRUCTURES[TUMOR].segment_name not in [item.SegmentLabel for item in seg.SegmentSequence]  # none found


def test_tilted_series_gets_no_seg(phantom_series: tuple[Path, Image, list[str]], tmp_path: Path,
                                   tiny_trained_model: Path) -> None:
    _, labels, _ = phantom_series
    ct_image, _ = read_image_with_info(phantom_series[0])
    write_ct_series(tmp_path / "tilted", ct_image, tilt_mm_per_slice=2.0)
    ct, info = read_image_with_info(tmp_path / "tilted")
    assert info.notes and "sheared" in info.notes[0] and info.series is not None  # lvt resampled it
    resampled = resample_like(labels, ct, interpolation="nearest")
    sources = read_series_headers(info.series.files)
    assert "the labels are not on the series' slices" in (why_no_segmentation(resampled, sources) or "")
    with pytest.raises(ValueError, match="not on the series' slices"):
        build_segmentation(resampled, sources, ALGORITHM)
    # the grid of the series before its tilt: slice 2 is 2 mm away from the tilted slice 2
    assert why_no_segmentation(labels, sources) == ("the labels are not on the series' slices, as after resampling "
                                                    "a tilted or sheared series (slice 2: its position is 2.00 mm off)")
    assert why_no_segmentation(resampled.with_array(np.zeros_like(resampled.array)), sources) == \
        "nothing was segmented"
    out = tmp_path / "out"  # lvt segment says so in the report, and writes the rest
    assert run(["segment", str(tmp_path / "tilted"), "-o", str(out), "--model", str(tiny_trained_model),
                "--device", "cpu", "--progress", "none", "--no-surfaces"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["outputs"] == {"dicom_seg": None, "dicom_sr": None} and not list(out.glob("*.dcm"))
    assert report["warnings"][-1].startswith("no DICOM SEG written: the labels are not on the series' slices")


def copy_without(series: Path, folder: Path, *keywords: str) -> Path:
    """The series with some attributes removed from every file, as careless anonymisers leave them."""
    folder.mkdir()
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        for keyword in keywords:
            delattr(ds, keyword)
        ds.save_as(folder / path.name)
    return folder


def test_thinned_headers_are_mended_and_unusable_ones_refused_in_words(
        phantom_series: tuple[Path, Image, list[str]], tmp_path: Path) -> None:
    series, labels, uids = phantom_series
    model = {"name": "tiny", "version": "1.2"}
    thinned = copy_without(series, tmp_path / "thinned", "PatientSex", "StudyDate", "AccessionNumber")
    _, info = read_image_with_info(thinned)
    report: dict = {"warnings": []}
    write_dicom_outputs(tmp_path, labels, report, DicomRequest(info.series), model)
    assert report == {"warnings": [], "outputs": {"dicom_seg": "segmentation.dcm", "dicom_sr": None}}
    seg = assert_seg_is_labels(tmp_path / "segmentation.dcm", labels, uids, thinned)
    assert seg.PatientSex == "" and seg.StudyDate == ""  # type 2: present, empty
    no_study = copy_without(series, tmp_path / "no_study", "StudyInstanceUID")
    _, info = read_image_with_info(no_study)
    report = {"warnings": []}
    write_dicom_outputs(tmp_path / "refused", labels, report, DicomRequest(info.series, write_sr=True), model)
    assert report["outputs"] == {"dicom_seg": None, "dicom_sr": None}
    assert report["warnings"][0].startswith("no DICOM SEG and SR written: highdicom refused the series' headers (")
    assert "StudyInstanceUID" in report["warnings"][0] and not (tmp_path / "refused").exists()


def test_lvt_segment_writes_the_seg_unless_told_not_to(phantom_series: tuple[Path, Image, list[str]],
                                                       tmp_path: Path, tiny_trained_model: Path) -> None:
    series, _, uids = phantom_series
    common = [str(series), "--model", str(tiny_trained_model), "--device", "cpu", "--progress", "none",
              "--no-surfaces"]
    assert run(["segment", *common, "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["outputs"] == {"dicom_seg": "segmentation.dcm", "dicom_sr": None}
    labels = read_label_image(tmp_path / "out" / "labels.nii.gz")
    assert_seg_is_labels(tmp_path / "out" / "segmentation.dcm", labels, uids, series)
    assert run(["segment", *common, "-o", str(tmp_path / "none"), "--no-dicom"]) == 0
    assert not list((tmp_path / "none").glob("*.dcm"))
    report = json.loads((tmp_path / "none" / "report.json").read_text(encoding="utf-8"))
    assert report["outputs"] == {"dicom_seg": None, "dicom_sr": None}
