"""DICOM SR (TID 1500) of the measurements: report.json's volumes and lesion diameters, read back with
highdicom, on the SEG's segments and in the series' frame of reference."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import pytest
from dicom_series import write_phantom_series

from lvt.cli.main import run
from lvt.image import Image
from lvt.io import read_image_with_info, write_image
from lvt.io.dicom_seg import Algorithm, build_segmentation, read_series_headers, write_dicom
from lvt.io.dicom_sr import build_measurement_report
from lvt.measure.report import build_report
from lvt.measure.volumes_and_lesions import measure_labels


@pytest.fixture(scope="module")
def phantom_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Image]:
    folder = tmp_path_factory.mktemp("sr") / "series"
    labels, _ = write_phantom_series(folder)
    return folder, labels


def sr_numbers(path: Path) -> dict[str, dict]:
    """Every measurement group of an SR by tracking identifier: its values, tracking UID, ROI and segment."""
    sr = highdicom.sr.srread(path)
    groups: dict[str, dict] = {}
    for group in [*sr.content.get_volumetric_roi_measurement_groups(), *sr.content.get_planar_roi_measurement_groups()]:
        entry = groups.setdefault(group.tracking_identifier, {"uids": set()})
        entry["uids"].add(group.tracking_uid)
        entry.update({m.name.meaning: m.value for m in group.get_measurements()})
        if isinstance(group, highdicom.sr.VolumetricROIMeasurementsAndQualitativeEvaluations):
            segment = group.referenced_segment
            entry["segment"] = (segment.referenced_sop_instance_uid, segment.referenced_segment_numbers[0])
        else:
            entry["line"] = (group.roi.value, group.roi.frame_of_reference_uid)
    return groups


def assert_sr_is_report(sr_path: Path, seg_path: Path, report: dict, series: Path) -> None:
    """The SR holds report.json's numbers, each group on the SEG segment of its class."""
    seg = pydicom.dcmread(seg_path)
    source = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    segments = {item.SegmentLabel: (seg.SOPInstanceUID, int(item.SegmentNumber)) for item in seg.SegmentSequence}
    groups = sr_numbers(sr_path)
    expected = {"Liver": report["liver"]["whole_volume_ml"], "Vessels": report["vessels"]["volume_ml"],
                "Tumors": report["tumors"]["total_volume_ml"]}
    for name, volume in expected.items():
        if volume > 0:
            assert groups[name]["Volume"] == pytest.approx(volume, rel=1e-6)
            assert groups[name]["segment"] == segments[name]
    assert len(groups) == sum(v > 0 for v in expected.values()) + len(report["lesions"])
    for lesion in report["lesions"]:
        group = groups[f"Lesion {lesion['id']}"]
        assert len(group["uids"]) == 1  # the volume and the diameter groups track one lesion
        assert group["Volume"] == pytest.approx(lesion["volume_ml"], rel=1e-6)
        assert group["Long axis"] == pytest.approx(lesion["longest_axial_diameter_mm"], rel=1e-6)
        assert group["segment"] == segments["Tumors"]
        line, frame_of_reference = group["line"]
        np.testing.assert_allclose(line, lesion["long_axis_endpoints_lps_mm"], atol=1e-3)
        assert frame_of_reference == source.FrameOfReferenceUID


def test_sr_holds_the_report_numbers_on_the_seg_segments(phantom_series: tuple[Path, Image], tmp_path: Path) -> None:
    series, labels = phantom_series
    _, info = read_image_with_info(series)
    assert info.series is not None
    measurements = measure_labels(labels)
    assert len(measurements.lesions) >= 2 and measurements.vessel_volume_ml > 0
    report = build_report(input_path=series, ct_or_labels_grid=labels, measurements=measurements,
                          model={"name": "tiny", "version": "1.2"}, inference=None)
    algorithm = Algorithm("tiny", "1.2")
    sources = read_series_headers(info.series.files)
    segmentation = build_segmentation(labels, sources, algorithm)
    write_dicom(segmentation, tmp_path / "seg.dcm")
    write_dicom(build_measurement_report(report, segmentation, sources, algorithm), tmp_path / "sr.dcm")
    assert_sr_is_report(tmp_path / "sr.dcm", tmp_path / "seg.dcm", report, series)


def test_lvt_segment_dicom_sr_matches_report_json(phantom_series: tuple[Path, Image], tmp_path: Path,
                                                  tiny_trained_model: Path) -> None:
    series, _ = phantom_series
    out = tmp_path / "out"
    assert run(["segment", str(series), "-o", str(out), "--model", str(tiny_trained_model), "--device", "cpu",
                "--progress", "none", "--no-surfaces", "--dicom-sr"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["outputs"] == {"dicom_seg": "segmentation.dcm", "dicom_sr": "measurements_sr.dcm"}
    assert report["liver"]["whole_volume_ml"] > 0
    assert_sr_is_report(out / "measurements_sr.dcm", out / "segmentation.dcm", report, series)


def test_dicom_sr_of_a_file_input_is_a_warning(phantom_series: tuple[Path, Image], tmp_path: Path,
                                               tiny_trained_model: Path) -> None:
    ct, _ = read_image_with_info(phantom_series[0])
    write_image(ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    assert run(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(out), "--model", str(tiny_trained_model),
                "--device", "cpu", "--progress", "none", "--no-surfaces", "--dicom-sr"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["outputs"] == {"dicom_seg": None, "dicom_sr": None}
    assert "no DICOM SEG and SR written: the input is not a DICOM series" in report["warnings"]
    assert not list(out.glob("*.dcm"))


def test_no_dicom_and_dicom_sr_exclude_each_other(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["segment", str(tmp_path), "-o", str(tmp_path / "out"), "--no-dicom", "--dicom-sr"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
