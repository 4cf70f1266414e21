"""Planning and follow-up in the Slicer module's Qt-free logic, against the real MRML of ``slicer-core``.

The inputs are real outputs of the core: ``lvt measure`` folders of a labelled phantom drawn in LPS mm
on oblique grids (a liver with a lobe, a vessel, spherical tumors at known places), and the
compare.json that ``lvt compare`` writes for two of them, run as the module runs it: a child process
started from :func:`LVTSegmentationLib.compare_command`. No part of ``slicer`` is faked.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, rotation

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

MODULE_DIR = REPO / "LVTSegmentation"
sys.path.insert(0, str(MODULE_DIR))

import LVTSegmentationLib as lib  # noqa: E402
import vtk  # noqa: E402
from LVTSegmentationLib import comparison, measurements, segmentation  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from lvt.cli.main import build_parser, run  # noqa: E402
from lvt.image import Image, ijk_to_ras_matrix, lps_to_ras  # noqa: E402
from lvt.io import write_segmentation  # noqa: E402
from lvt.segment.pipeline import measure_file  # noqa: E402

LIVER, VESSEL, TUMOR = 1, 2, 3
# (centre LPS mm, radius mm); the vessel runs along x at y = -12 mm, z = 6 mm with radius 2.5 mm.
TUMOR_A, TUMOR_B, TUMOR_C = (np.array([15.0, 8.0, -4.0]), 9.0), (np.array([-18.0, -2.0, 0.0]), 6.0), (
    np.array([-20.0, 18.0, 10.0]), 6.0)
GROWN_A = (TUMOR_A[0], 11.0)
CUT_X_MM = 5.0  # the resection region is x > 5 mm



def _grid(spacing_mm: tuple[float, float, float], shape_kji: tuple[int, int, int], degrees: float) -> Image:
    """A grid rotated about S whose centre voxel is the LPS origin."""
    empty = Image(np.zeros(shape_kji, np.uint8), spacing_mm, (0.0, 0.0, 0.0), rotation(2, degrees))
    origin = -empty.ijk_to_lps((np.array(shape_kji[::-1]) - 1) / 2.0)[0]
    return Image(empty.array, spacing_mm, tuple(origin), empty.direction)


def _centres(grid: Image) -> np.ndarray:
    k, j, i = np.indices(grid.array.shape)
    return grid.ijk_to_lps(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*grid.array.shape, 3)


def _patient(grid: Image, tumors) -> Image:
    """Liver (ellipsoid and a lobe), a vessel tube inside it and spherical tumors, drawn in LPS mm."""
    p = _centres(grid)
    liver = (np.sum((p / [45.0, 35.0, 28.0]) ** 2, axis=-1) <= 1) | (np.linalg.norm(p - [-30, 20, 8], axis=-1) <= 15)
    labels = liver.astype(np.uint8)
    labels[liver & (np.hypot(p[..., 1] + 12, p[..., 2] - 6) <= 2.5) & (np.abs(p[..., 0]) <= 35)] = VESSEL
    for centre, radius in tumors:
        labels[np.linalg.norm(p - centre, axis=-1) <= radius] = TUMOR
    return grid.with_array(labels)


def _measured(folder: Path, labels: Image) -> Path:
    """An ``lvt measure`` output folder of the labels (no surfaces: they are not needed here)."""
    write_segmentation(labels, folder / "input.seg.nrrd")
    measure_file(folder / "input.seg.nrrd", folder / "result", write_surfaces=False)
    return folder / "result"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Image, Path]:
    labels = _patient(_grid((1.5, 1.5, 2.5), (28, 70, 80), 20.0), [TUMOR_A, TUMOR_B])
    return labels, _measured(tmp_path_factory.mktemp("baseline"), labels)


@pytest.fixture(scope="module")
def follow_up(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Months later, on another grid: lesion A grown, B vanished, C new."""
    labels = _patient(_grid((1.7, 1.7, 3.0), (24, 64, 70), -10.0), [GROWN_A, TUMOR_C])
    return _measured(tmp_path_factory.mktemp("follow_up"), labels)


@pytest.fixture()
def scene() -> slicer.vtkMRMLScene:
    return slicer.vtkMRMLScene()


def _ct_node(scene: slicer.vtkMRMLScene, grid: Image, name: str = "CT") -> slicer.vtkMRMLScalarVolumeNode:
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(segmentation._vtk_matrix(ijk_to_ras_matrix(grid)))
    image = vtk.vtkImageData()
    image.SetDimensions(*grid.size_ijk)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(image)
    return node


def _nodes(scene: slicer.vtkMRMLScene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(n, class_name) for n in range(scene.GetNumberOfNodesByClass(class_name))]


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def _on_label(labels: Image, point_ras: np.ndarray, value: int) -> bool:
    """True when the RAS point lies in (or on the boundary of) a voxel of ``value``."""
    ijk = labels.lps_to_ijk(point_ras * np.array([-1.0, -1.0, 1.0]))[0]
    ranges = [range(int(np.floor(c + 0.5 - 1e-4)), int(np.floor(c + 0.5 + 1e-4)) + 1) for c in ijk]
    return any(labels.array[k, j, i] == value for i in ranges[0] for j in ranges[1] for k in ranges[2])


# --- tumor to vessel lines --------------------------------------------------------------------------


def test_one_line_per_tumor_to_its_nearest_vessel_with_the_reported_length(scene, baseline):
    labels, folder = baseline
    planning = _report(folder)["planning"]

    loaded = lib.load_results(scene, folder, reference_volume_node=_ct_node(scene, labels))

    assert len(loaded.vessel_lines) == len(planning["lesions"]) == 2
    for line, entry in zip(loaded.vessel_lines, planning["lesions"], strict=True):
        assert line.GetName() == f"{loaded.segmentation_node.GetName()} lesion {entry['id']} to vessel"
        assert line.GetAttribute(measurements.LESION_ID_ATTRIBUTE) == str(entry["id"])
        assert line.GetLocked()
        assert line.GetLineLengthWorld() == pytest.approx(entry["distance_to_vessels_mm"], abs=1e-6)
        tumor_end, vessel_end = (np.array(line.GetNthControlPointPositionWorld(n)) for n in range(2))
        np.testing.assert_allclose(tumor_end, lps_to_ras(entry["lesion_surface_point_lps_mm"])[0], atol=1e-6)
        assert _on_label(labels, tumor_end, TUMOR) and _on_label(labels, vessel_end, VESSEL)
        assert f"{entry['distance_to_vessels_mm']:.1f} mm" in line.GetDescription()
    # Analytic gaps: centre-to-axis distance minus both radii (A: 22.4 - 11.5, B: 11.7 - 8.5 mm).
    distances = {entry["id"]: entry["distance_to_vessels_mm"] for entry in planning["lesions"]}
    for (centre, radius), offset in ((TUMOR_A, (20.0, 10.0)), (TUMOR_B, (10.0, 6.0))):
        lesion = next(lesion for lesion in _report(folder)["lesions"]
                      if np.linalg.norm(np.subtract(lesion["centroid_lps_mm"], centre)) < 1.0)
        voxel_diagonal = float(np.linalg.norm(labels.spacing_mm))
        assert distances[lesion["id"]] == pytest.approx(np.hypot(*offset) - radius - 2.5, abs=voxel_diagonal)


def test_recomputing_replaces_the_vessel_lines(scene, baseline):
    labels, folder = baseline
    ct = _ct_node(scene, labels)
    first = lib.load_results(scene, folder, reference_volume_node=ct)

    second = lib.load_measurements(scene, first.segmentation_node, folder, reference_volume_node=ct)

    lines = _nodes(scene, "vtkMRMLMarkupsLineNode")
    assert sorted(n.GetID() for n in lines) == sorted(n.GetID() for n in second.lesion_lines + second.vessel_lines)
    assert len(lines) == 4


def test_no_vessel_line_without_vessels(scene, tmp_path):
    no_vessel = _patient(_grid((2.0, 2.0, 3.0), (20, 50, 56), 0.0), [TUMOR_A])
    no_vessel = no_vessel.with_array(np.where(no_vessel.array == VESSEL, LIVER, no_vessel.array).astype(np.uint8))

    loaded = lib.load_results(scene, _measured(tmp_path, no_vessel))

    assert loaded.report["planning"]["lesions"][0]["distance_to_vessels_mm"] is None
    assert loaded.vessel_lines == [] and len(loaded.lesion_lines) == 1


# --- the resection segment ----------------------------------------------------------------------------


def _add_segment(node: slicer.vtkMRMLSegmentationNode, grid: Image, mask: np.ndarray, name: str) -> None:
    """Import a mask as a new segment the way a Segment Editor user would end up with one."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*grid.size_ijk)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    image.SetImageToWorldMatrix(segmentation._vtk_matrix(ijk_to_ras_matrix(grid)))
    before = node.GetSegmentation().GetNumberOfSegments()
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(image, node, name)
    node.GetSegmentation().GetNthSegment(before).SetName(name)


def test_resection_segment_drawn_in_slicer_gives_the_remnant_in_the_summary(scene, baseline, tmp_path):
    labels, folder = baseline
    ct = _ct_node(scene, labels)
    node = lib.load_results(scene, folder, reference_volume_node=ct).segmentation_node
    region = _centres(labels)[..., 0] > CUT_X_MM
    _add_segment(node, labels, region, "resection")
    assert lib.resection_segment_name(node) == "resection"
    lib.write_segmentation_file(scene, node, tmp_path / "edited.seg.nrrd")

    command = lib.measure_command("PythonSlicer", tmp_path / "edited.seg.nrrd", tmp_path / "out",
                                  resection_segment=lib.resection_segment_name(node))
    assert run([*command[3:], "--no-surfaces"]) == 0  # the real command line, in this process
    loaded = lib.load_measurements(scene, node, tmp_path / "out", reference_volume_node=ct)

    liver = labels.array > 0
    expected_percent = 100.0 * np.count_nonzero(liver & ~region) / np.count_nonzero(liver)
    remnant = loaded.report["planning"]["remnant"]
    assert remnant["remnant_percent"] == pytest.approx(expected_percent, abs=1e-9)
    summary = loaded.summary_table
    rows = dict(zip(_cells(summary, "Measurement"), _cells(summary, "Value"), strict=True))
    for row in measurements.REMNANT_ROWS:
        assert rows[row.label] == remnant[row.key]
    unchanged = pytest.approx(_report(folder)["liver"], rel=1e-9)
    assert loaded.report["liver"] == unchanged, "the resection segment must not change the liver"


def test_resection_segment_name_prefers_the_exact_name(scene):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    for segment_id, name in (("a", "Liver"), ("b", "RESECTION")):
        node.GetSegmentation().AddEmptySegment(segment_id, name)
    assert lib.resection_segment_name(node) == "RESECTION"
    node.GetSegmentation().AddEmptySegment("c", "Resection")
    assert lib.resection_segment_name(node) == "Resection"
    node.GetSegmentation().RemoveSegment("b")
    node.GetSegmentation().RemoveSegment("c")
    assert lib.resection_segment_name(node) is None


# --- compare with prior study ---------------------------------------------------------------------------


def test_commands_parse_with_the_real_command_line(tmp_path):
    names = lib.study_labels("--CT", "--CT")
    assert names == ["CT (prior)", "CT (current)"]
    command = lib.compare_command("PythonSlicer", ["prior.nrrd", "current.nrrd"], "out", names=names,
                                  model_path=tmp_path / "m.json", device="cpu", use_tta=True, threads=2)
    assert command[:3] == ["PythonSlicer", "-m", "lvt"]
    args = build_parser().parse_args(command[3:])
    assert (args.command, args.inputs, args.names) == ("compare", [Path("prior.nrrd"), Path("current.nrrd")], names)
    assert (args.output, args.model, args.device, args.tta, args.threads, args.progress) == (
        Path("out"), tmp_path / "m.json", "cpu", True, 2, "json")
    measure = build_parser().parse_args(lib.measure_command("py", "s.seg.nrrd", "o", "ct.nrrd", "Resection")[3:])
    assert (measure.segmentation, measure.ct, measure.resection_segment) == (Path("s.seg.nrrd"), Path("ct.nrrd"),
                                                                             "Resection")


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory, baseline, follow_up) -> Path:
    """``lvt compare PRIOR CURRENT`` run as the module runs it: a child process with JSON progress."""
    out = tmp_path_factory.mktemp("compare") / "output"
    command = lib.compare_command(sys.executable, [baseline[1], follow_up], out, names=["May", "June"])
    process = lib.BackgroundProcess(command, env=lib.child_environment(os.environ, lib.core_dir(MODULE_DIR)))
    process.start()
    events = process.wait(timeout_s=120)
    assert events[-1] == lib.ExitEvent(0, cancelled=False), events
    assert lib.DoneEvent(str(out)) in events
    assert any(isinstance(e, lib.ProgressEvent) and e.stage == "match" for e in events)
    return out


def _cells(table: slicer.vtkMRMLTableNode, column: str) -> list:
    array = table.GetTable().GetColumnByName(column)
    if isinstance(array, vtk.vtkStringArray):
        return [array.GetValue(r) for r in range(array.GetNumberOfValues())]
    return numpy_support.vtk_to_numpy(array).tolist()


def test_comparison_table_holds_the_compare_json_values(scene, baseline, compared):
    document = json.loads((compared / "compare.json").read_text(encoding="utf-8"))
    result = document["comparisons"][-1]
    assert result["status"] == "compared"
    assert (len(result["matched"]), len(result["new"]), len(result["vanished"])) == (1, 1, 1)
    ct = _ct_node(scene, baseline[0], "June CT")

    loaded = lib.load_comparison(scene, compared, ct)

    table = loaded.table
    assert lib.comparison_table_of(ct) is table and table.GetName() == "Follow-up May to June"
    assert _cells(table, "Item") == ["Liver", "Lesion 1", "Lesion 3", "Lesion 2", "RECIST 1.1"]
    assert _cells(table, "Status") == ["measured", "matched", "new", "vanished", result["recist"]["category"]]
    assert result["recist"]["category"] == "PD"  # a new lesion
    matched = result["matched"][0]
    assert _cells(table, "Volume before")[1:4] == [matched["volume_ml"][0], 0.0, result["vanished"][0]["volume_ml"]]
    assert _cells(table, "Volume now")[1:4] == [matched["volume_ml"][1], result["new"][0]["volume_ml"], 0.0]
    assert _cells(table, "Diameter before")[1] == matched["longest_axial_diameter_mm"][0]
    assert _cells(table, "Diameter now")[1] == matched["longest_axial_diameter_mm"][1]
    assert _cells(table, "Diameter change")[1] == matched["diameter_change_mm"]
    assert _cells(table, "Volume change")[1] == pytest.approx(matched["volume_change_percent"])
    # Lesion A grew from 9 to 11 mm radius: the diameter change is 4 mm to within a voxel diagonal.
    assert matched["diameter_change_mm"] == pytest.approx(4.0, abs=np.hypot(1.7, 1.7))
    sums = result["recist"]["sum_of_longest_diameters_mm"]
    assert _cells(table, "Diameter before")[4] == sums["baseline"]
    assert _cells(table, "Diameter now")[4] == sums["current"]
    assert math.isnan(_cells(table, "Volume before")[4])
    note = _cells(table, "Note")[4]
    assert result["recist"]["note"] in note and "radiologist confirms" in note
    assert _cells(table, "Note")[1] == "lesion 1 in May; lesion 1 in June"
    assert table.GetColumnUnitLabel("Volume before") == "mL" and table.GetColumnUnitLabel("Diameter now") == "mm"
    assert "PD" in lib.comparison_summary(loaded.document) and "radiologist" in lib.comparison_summary(document)


def test_comparing_again_reuses_the_table_of_the_ct(scene, baseline, compared):
    ct = _ct_node(scene, baseline[0])
    first = lib.load_comparison(scene, compared, ct).table

    second = lib.load_comparison(scene, compared, ct).table

    assert second is first and _nodes(scene, "vtkMRMLTableNode") == [first]


def test_a_refused_registration_shows_why_in_the_recist_row(scene, baseline, tmp_path):
    other = Image(np.zeros((24, 40, 40), np.uint8), (2.0, 2.0, 2.0), (-40.0, -40.0, -24.0))
    p = _centres(other)
    unrelated = other.with_array((np.linalg.norm(p / [36.0, 14.0, 14.0], axis=-1) <= 1).astype(np.uint8))

    assert run(["compare", str(baseline[1]), str(_measured(tmp_path, unrelated)), "-o", str(tmp_path / "out"),
                "--progress", "none"]) == 1  # refused: written all the same
    loaded = lib.load_comparison(scene, tmp_path / "out")

    reasons = loaded.document["comparisons"][-1]["refusal_reasons"]
    assert reasons
    assert _cells(loaded.table, "Item") == ["Liver", "RECIST 1.1"]
    assert _cells(loaded.table, "Status")[1] == "not evaluated"
    assert all(reason in _cells(loaded.table, "Note")[1] for reason in reasons)
    assert lib.comparison_summary(loaded.document).startswith("Lesions not matched")


def test_prior_folder_must_be_a_result_folder(baseline, tmp_path):
    assert lib.prior_folder_problem(baseline[1]) is None
    problem = lib.prior_folder_problem(tmp_path)
    assert problem is not None and str(tmp_path) in problem and "missing" in problem
    assert comparison.COMPARE_FILE == lib.COMPARE_FILE == "compare.json"
