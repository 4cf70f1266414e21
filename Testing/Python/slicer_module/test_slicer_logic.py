"""The Slicer module's Qt-free logic (LVTSegmentationLib) against the real MRML of the ``slicer-core`` wheel.

The inputs are written the way the core writes them (``lvt.io.write_segmentation``,
``lvt.measure.volumes_and_lesions.measure_labels`` + ``lvt.measure.report.build_report``) from a labelled
phantom made here on an
oblique, anisotropic grid, so these tests do not depend on a trained model. Every test gets a fresh
scene. No part of ``slicer`` is faked.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import REPO, rotation

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

MODULE_DIR = REPO / "LVTSegmentation"
sys.path.insert(0, str(MODULE_DIR))

import LVTSegmentationLib as lib  # noqa: E402
import vtk  # noqa: E402
from LVTSegmentationLib import measurements, segmentation  # noqa: E402
from LVTSegmentationLib.process import EXIT_BAD_INPUT  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from lvt.errors import InputError  # noqa: E402
from lvt.image import Image, ijk_to_ras_matrix, lps_to_ras  # noqa: E402
from lvt.io import read_image, read_segmentation, write_segmentation  # noqa: E402
from lvt.labels import STRUCTURES  # noqa: E402
from lvt.measure.report import build_report, write_report_json  # noqa: E402
from lvt.measure.volumes_and_lesions import measure_labels  # noqa: E402

LIVER, VESSEL, TUMOR = (s.label_value for s in STRUCTURES)



def _phantom_labels() -> Image:
    """Ellipsoid liver with a tube vessel and two spherical tumors, drawn in LPS mm on an oblique grid.

    The grid is rotated 30 degrees about S and tilted 8 degrees about L, with spacing 0.9 x 1.2 x 2.5 mm,
    so any i/j/k or LPS/RAS mix-up moves voxels.
    """
    direction = rotation(2, 30.0) @ rotation(0, 8.0)
    grid = Image(np.zeros((26, 64, 72), np.uint8), (0.9, 1.2, 2.5), (-35.0, 20.0, -30.0), direction)
    k, j, i = np.indices(grid.array.shape)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)
    centre = grid.ijk_to_lps(np.array([[35.5, 31.5, 12.5]]))[0]
    p = (grid.ijk_to_lps(ijk) - centre).reshape(*grid.array.shape, 3)
    labels = np.zeros(grid.array.shape, np.uint8)
    labels[(p[..., 0] / 28) ** 2 + (p[..., 1] / 24) ** 2 + (p[..., 2] / 22) ** 2 <= 1] = LIVER
    labels[(np.hypot(p[..., 1] + 6, p[..., 2] - 4) <= 2.6) & (np.abs(p[..., 0]) <= 22)] = VESSEL
    labels[np.linalg.norm(p - np.array([9.0, 7.0, -5.0]), axis=-1) <= 9.0] = TUMOR
    labels[np.linalg.norm(p - np.array([-13.0, -4.0, 9.0]), axis=-1) <= 5.0] = TUMOR
    return grid.with_array(labels)


@pytest.fixture(scope="module")
def labels() -> Image:
    return _phantom_labels()


@pytest.fixture(scope="module")
def core_output(tmp_path_factory: pytest.TempPathFactory, labels: Image) -> Path:
    """An OUTDIR as ``lvt segment`` leaves it: segmentation.seg.nrrd and report.json from the core's writers."""
    folder = tmp_path_factory.mktemp("core_output")
    write_segmentation(labels, folder / "segmentation.seg.nrrd")
    report = build_report(
        input_path="phantom_ct.nrrd",
        ct_or_labels_grid=labels,
        measurements=measure_labels(labels),
        model={"name": "phantom", "version": "0"},
        inference=None,
    )
    write_report_json(report, folder / "report.json")
    (folder / "report.html").write_text("<html><body>LVT report</body></html>", encoding="utf-8")
    return folder


@pytest.fixture()
def report(core_output: Path) -> dict:
    return json.loads((core_output / "report.json").read_text(encoding="utf-8"))


@pytest.fixture()
def scene() -> slicer.vtkMRMLScene:
    return slicer.vtkMRMLScene()


def _ct_node(scene: slicer.vtkMRMLScene, grid: Image) -> slicer.vtkMRMLScalarVolumeNode:
    """The CT as Slicer holds it (IJK-to-RAS from the core's conversion), under Patient > Study."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "phantom CT")
    node.SetIJKToRASMatrix(segmentation._vtk_matrix(ijk_to_ras_matrix(grid)))
    image = vtk.vtkImageData()
    i, j, k = grid.size_ijk
    image.SetDimensions(i, j, k)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(image)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient")
    study = hierarchy.CreateStudyItem(patient, "CT study")
    hierarchy.CreateItem(study, node)
    return node


def _nodes(scene: slicer.vtkMRMLScene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(n, class_name) for n in range(scene.GetNumberOfNodesByClass(class_name))]


def _column(table: slicer.vtkMRMLTableNode, name: str) -> np.ndarray:
    return numpy_support.vtk_to_numpy(table.GetTable().GetColumnByName(name)).astype(float)


# --- files exchanged with the core ------------------------------------------------------------------


def test_ct_written_by_slicer_is_read_by_the_core_on_the_same_grid(scene, labels, tmp_path):
    """The module hands the CT to ``lvt segment`` as Slicer writes it; the core must see Slicer's grid."""
    hu = np.where(labels.array > 0, 110, -1000).astype(np.int16) + (labels.array == TUMOR).astype(np.int16) * -60
    ct = _ct_node(scene, labels)
    numpy_support.vtk_to_numpy(ct.GetImageData().GetPointData().GetScalars())[:] = hu.ravel()

    lib.write_volume_file(scene, ct, tmp_path / "input.nrrd")

    image = read_image(tmp_path / "input.nrrd")
    assert image.same_grid(labels, tolerance_mm=1e-4)
    np.testing.assert_allclose(ijk_to_ras_matrix(image), ijk_to_ras_matrix(labels), atol=1e-4)
    np.testing.assert_array_equal(image.array, hu)
    assert ct.GetStorageNode() is None, "the temporary file must not become the CT's storage"


# --- segmentation node -----------------------------------------------------------------------------


def test_segments_keep_names_terminology_and_colours(scene, core_output, labels):
    loaded = lib.load_results(scene, core_output, reference_volume_node=_ct_node(scene, labels))

    assert _nodes(scene, "vtkMRMLSegmentationNode") == [loaded.segmentation_node]
    segments = loaded.segmentation_node.GetSegmentation()
    segment_ids = [segments.GetNthSegmentID(n) for n in range(segments.GetNumberOfSegments())]
    assert segment_ids == ["Liver", "Vessels", "Tumors"]
    for structure in STRUCTURES:
        segment = segments.GetSegment(structure.segment_name)
        assert segment.GetName() == structure.segment_name
        assert np.allclose(segment.GetColor(), structure.color_float, atol=1e-6)
        fields = segment.GetTerminology().split("~")
        assert fields[0] == "Segmentation category and type - DICOM master list"
        assert fields[1].split("^") == list(structure.category)
        assert fields[2].split("^") == list(structure.type)
        expected_region = list(structure.anatomic_region) if structure.anatomic_region else ["", "", ""]
        assert fields[5].split("^") == expected_region


def test_exported_labelmap_matches_core_labels_voxel_for_voxel(scene, core_output, labels):
    ct = _ct_node(scene, labels)
    loaded = lib.load_results(scene, core_output, reference_volume_node=ct)

    exported, ijk_to_ras = lib.export_label_array(loaded.segmentation_node, ct)

    assert exported.shape == labels.array.shape
    np.testing.assert_array_equal(exported, labels.array)
    np.testing.assert_allclose(ijk_to_ras, ijk_to_ras_matrix(labels), atol=1e-9)
    assert {n.GetID() for n in _nodes(scene, "vtkMRMLLabelMapVolumeNode")} == set(), "scratch nodes left behind"


def test_reference_grid_from_report_when_there_is_no_ct_node(scene, core_output, labels):
    loaded = lib.load_results(scene, core_output)

    exported, ijk_to_ras = lib.export_label_array(loaded.segmentation_node)

    np.testing.assert_array_equal(exported, labels.array)
    np.testing.assert_allclose(ijk_to_ras, ijk_to_ras_matrix(labels), atol=1e-9)


def test_segments_renamed_by_the_user_are_recognised_by_their_terminology(scene):
    lib.register_converter_rules()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    # Tumors first: its anatomic region (liver) must not make it the liver segment.
    for segment_id, name, structure in (("T", "My lesions", STRUCTURES[2]), ("S1", "Leber", STRUCTURES[0])):
        node.GetSegmentation().AddEmptySegment(segment_id, name)
        node.GetSegmentation().GetSegment(segment_id).SetTerminology(structure.terminology_entry())
    node.GetSegmentation().AddEmptySegment("Vessels", "renamed vessels")

    assert lib.segment_ids_by_structure(node) == {"liver": "S1", "vessel": "Vessels", "tumor": "T"}


def test_closed_surfaces_are_closed_and_lie_on_their_labels(scene, core_output, labels):
    loaded = lib.load_results(scene, core_output)
    node = loaded.segmentation_node

    assert node.GetSegmentation().ContainsRepresentation(segmentation.CLOSED_SURFACE)
    assert node.GetDisplayNode().GetPreferredDisplayRepresentationName3D() == segmentation.CLOSED_SURFACE
    for structure in STRUCTURES:
        segment = node.GetSegmentation().GetSegment(structure.segment_name)
        surface = segment.GetRepresentation(segmentation.CLOSED_SURFACE)
        assert surface.GetNumberOfPoints() > 50
        edges = vtk.vtkFeatureEdges()
        edges.SetInputData(surface)
        edges.BoundaryEdgesOn()
        edges.NonManifoldEdgesOn()
        edges.FeatureEdgesOff()
        edges.ManifoldEdgesOff()
        edges.Update()
        assert edges.GetOutput().GetNumberOfCells() == 0, f"{structure.segment_name} surface has holes"
        voxels_ras = lps_to_ras(labels.ijk_to_lps(np.argwhere(labels.array == structure.label_value)[:, ::-1]))
        points = numpy_support.vtk_to_numpy(surface.GetPoints().GetData())
        margin = max(labels.spacing_mm)
        assert np.all(points.min(axis=0) >= voxels_ras.min(axis=0) - margin)
        assert np.all(points.max(axis=0) <= voxels_ras.max(axis=0) + margin)


def _surface_volume_ml(surface: vtk.vtkPolyData) -> float:
    mass = vtk.vtkMassProperties()
    mass.SetInputData(surface)
    mass.Update()
    return mass.GetVolume() / 1000.0


def test_vessels_are_smoothed_less_than_the_liver_so_thin_tubes_keep_their_volume(scene, core_output, labels):
    factors = segmentation.slicer_smoothing_factors()
    assert factors["vessel"] < factors["tumor"] < factors["liver"]
    node = lib.load_results(scene, core_output).segmentation_node
    vessels = node.GetSegmentation().GetSegment("Vessels").GetRepresentation(segmentation.CLOSED_SURFACE)

    node.GetSegmentation().SetConversionParameter(segmentation.SMOOTHING_PARAMETER, str(factors["liver"]))
    smoothed_like_liver = slicer.vtkSlicerSegmentationsModuleLogic.CreateRepresentationForOneSegment(
        node.GetSegmentation(), "Vessels", segmentation.CLOSED_SURFACE
    )
    smoothed_like_liver.UnRegister(None)  # the caller owns it; this wrapper keeps it alive

    voxel_ml = np.count_nonzero(labels.array == VESSEL) * labels.voxel_volume_ml
    assert abs(_surface_volume_ml(vessels) - voxel_ml) < abs(_surface_volume_ml(smoothed_like_liver) - voxel_ml)


# --- measurements ---------------------------------------------------------------------------------


def test_tables_hold_the_report_values(scene, core_output, report):
    loaded = lib.load_results(scene, core_output)

    summary = loaded.summary_table
    names = [summary.GetCellText(row, 0) for row in range(summary.GetNumberOfRows())]
    assert names == [row.label for row in measurements.SUMMARY_ROWS]
    expected = [report[row.section][row.key] for row in measurements.SUMMARY_ROWS]
    assert _column(summary, "Value").tolist() == expected
    assert report["tumors"]["count"] == 2

    lesions = loaded.lesion_table
    assert lesions.GetNumberOfRows() == len(report["lesions"]) == 2
    assert _column(lesions, "Lesion").tolist() == [lesion["id"] for lesion in report["lesions"]]
    assert _column(lesions, "Volume").tolist() == [lesion["volume_ml"] for lesion in report["lesions"]]
    assert _column(lesions, "Longest axial diameter").tolist() == [
        lesion["longest_axial_diameter_mm"] for lesion in report["lesions"]
    ]
    assert _column(lesions, "Short axis diameter").tolist() == [
        lesion["short_axis_diameter_mm"] for lesion in report["lesions"]
    ]
    assert _column(lesions, "Axial slice").tolist() == [lesion["axial_slice_index"] for lesion in report["lesions"]]
    centroids = np.stack([_column(lesions, f"Centroid {axis}") for axis in "RAS"], axis=1)
    np.testing.assert_allclose(centroids, lps_to_ras([lesion["centroid_lps_mm"] for lesion in report["lesions"]]))
    assert lesions.GetColumnUnitLabel("Volume") == "mL"
    assert lesions.GetColumnUnitLabel("Longest axial diameter") == "mm"
    assert lib.lesion_table_of(loaded.segmentation_node) is lesions
    assert lib.summary_table_of(loaded.segmentation_node) is summary


def test_reliability_notes_warn_of_the_small_liver_and_say_what_the_model_is_worth(report):
    notes = lib.reliability_notes(report)
    assert report["liver"]["whole_volume_ml"] < 200.0  # the phantom liver is a 62 mL ellipsoid
    assert len(notes) == 2
    assert notes[0].startswith(f"The liver found is only {report['liver']['whole_volume_ml']:.1f} mL")
    assert notes[1] == report["model_reliability"]
    assert notes[1].startswith("This model has no validation on real CT with expert tumor labels")
    older = {key: value for key, value in report.items() if key not in ("model_reliability", "liver_cut_by_image_edge")}
    assert lib.reliability_notes(older) == notes[:1]  # a report written before these keys existed


def _on_tumor(labels: Image, point_lps: np.ndarray) -> bool:
    """True when the point lies in (or on the boundary of) a tumor voxel's extent."""
    ijk = labels.lps_to_ijk(point_lps)[0]
    candidates = [range(int(np.floor(c + 0.5 - 1e-4)), int(np.floor(c + 0.5 + 1e-4)) + 1) for c in ijk]
    size = labels.size_ijk
    return any(
        labels.array[k, j, i] == TUMOR
        for i in candidates[0]
        for j in candidates[1]
        for k in candidates[2]
        if 0 <= i < size[0] and 0 <= j < size[1] and 0 <= k < size[2]
    )


def test_one_line_markup_per_lesion_with_the_reported_length_and_end_points_on_the_lesion(
    scene, core_output, report, labels
):
    loaded = lib.load_results(scene, core_output)

    assert len(loaded.lesion_lines) == len(_nodes(scene, "vtkMRMLMarkupsLineNode")) == len(report["lesions"])
    for line, lesion in zip(loaded.lesion_lines, report["lesions"], strict=True):
        assert line.GetAttribute(measurements.LESION_ID_ATTRIBUTE) == str(lesion["id"])
        assert line.GetNumberOfControlPoints() == 2
        assert line.GetLineLengthWorld() == pytest.approx(lesion["longest_axial_diameter_mm"], abs=1e-6)
        for n in range(2):
            point_ras = np.array(line.GetNthControlPointPositionWorld(n))
            point_lps = point_ras * np.array([-1.0, -1.0, 1.0])
            assert _on_tumor(labels, point_lps[None]), f"lesion {lesion['id']} end point {n} is off the lesion"
        assert lib.lesion_line_of(loaded.segmentation_node, lesion["id"]) is line
        np.testing.assert_allclose(
            lib.line_midpoint_ras(line), measurements.lesion_focus_ras(lesion), atol=1e-6
        )


def test_results_sit_under_the_ct_study(scene, core_output, labels):
    ct = _ct_node(scene, labels)
    loaded = lib.load_results(scene, core_output, reference_volume_node=ct)

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct))
    assert hierarchy.GetItemLevel(study) == "Study"
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(loaded.segmentation_node)) == study
    for node in (loaded.summary_table, loaded.lesion_table, *loaded.lesion_lines):
        folder = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node))
        assert hierarchy.GetItemParent(folder) == study
        assert hierarchy.GetItemName(folder) == f"{loaded.segmentation_node.GetName()} measurements"
    assert loaded.segmentation_node.GetNodeReferenceID(
        loaded.segmentation_node.GetReferenceImageGeometryReferenceRole()
    ) == ct.GetID()


def test_loading_again_replaces_the_measurements_instead_of_piling_them_up(scene, core_output, labels, tmp_path):
    ct = _ct_node(scene, labels)
    first = lib.load_results(scene, core_output, reference_volume_node=ct)
    edited = labels.with_array(np.where(labels.array == TUMOR, LIVER, labels.array).astype(np.uint8))
    write_segmentation(edited, tmp_path / "segmentation.seg.nrrd")
    no_tumor = build_report(
        input_path="edited.seg.nrrd", ct_or_labels_grid=edited, measurements=measure_labels(edited),
        model=None, inference=None,
    )
    write_report_json(no_tumor, tmp_path / "report.json")

    second = lib.load_measurements(scene, first.segmentation_node, tmp_path, reference_volume_node=ct)

    assert _nodes(scene, "vtkMRMLTableNode") == [second.summary_table, second.lesion_table]
    assert _nodes(scene, "vtkMRMLMarkupsLineNode") == []
    assert second.lesion_table.GetNumberOfRows() == 0
    assert _column(second.summary_table, "Value")[3] == 0.0  # tumor count
    assert json.loads(lib.stored_report(first.segmentation_node)) == no_tumor
    assert _nodes(scene, "vtkMRMLSegmentationNode") == [first.segmentation_node]


def test_edited_segmentation_written_for_lvt_measure_reads_back_as_the_same_labels(
    scene, core_output, labels, tmp_path
):
    node = lib.load_results(scene, core_output, reference_volume_node=_ct_node(scene, labels)).segmentation_node

    lib.write_segmentation_file(scene, node, tmp_path / "edited.seg.nrrd")

    read_back = read_segmentation(tmp_path / "edited.seg.nrrd")
    assert read_back.same_grid(labels)
    np.testing.assert_array_equal(read_back.array, labels.array)


def test_export_writes_one_surface_per_segment_and_the_stored_report(scene, core_output, report, tmp_path):
    node = lib.load_results(scene, core_output).segmentation_node

    written = lib.export_results(node, tmp_path / "export", "STL")

    stl_files = sorted((tmp_path / "export").glob("*.stl"))
    assert len(stl_files) == 3
    for structure in STRUCTURES:
        assert any(structure.segment_name in path.name for path in stl_files)
        assert all(path.stat().st_size > 1000 for path in stl_files)
    assert json.loads((tmp_path / "export" / "report.json").read_text(encoding="utf-8")) == report
    assert (tmp_path / "export" / "report.html").read_text(encoding="utf-8").startswith("<html>")
    assert sorted(written) == [tmp_path / "export" / "report.html", tmp_path / "export" / "report.json"]
    lib.export_results(node, tmp_path / "obj", "OBJ")
    obj_text = next((tmp_path / "obj").glob("*.obj")).read_text(encoding="utf-8")
    assert "SPACE=LPS" in obj_text
    assert sum(line.startswith("g ") for line in obj_text.splitlines()) == 3  # one group per segment
    with pytest.raises(ValueError, match="STL or OBJ"):
        lib.export_results(node, tmp_path / "other", "PLY")


def test_missing_output_file_is_named_in_the_error(scene, tmp_path):
    (tmp_path / "report.json").write_text("{}", encoding="utf-8")
    with pytest.raises(InputError, match=r"segmentation\.seg\.nrrd"):
        lib.load_results(scene, tmp_path)


# --- the core's process ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '{"event": "progress", "stage": "inference", "done": 3, "total": 12, "fraction": 0.4, "message": "w"}\n',
            lib.ProgressEvent("inference", 3.0, 12.0, 0.4, "w"),
        ),
        ('{"event": "done", "output": "/tmp/out"}', lib.DoneEvent("/tmp/out")),
        ('{"event": "error", "message": "ct.nrrd: not a CT"}', lib.ErrorEvent("ct.nrrd: not a CT")),
        ("WARNING something odd", lib.LogEvent("WARNING something odd")),
        ('{"event": "progress", "fraction": "many"}', lib.LogEvent('{"event": "progress", "fraction": "many"}')),
        ('{"event": "done"}', lib.LogEvent('{"event": "done"}')),
        ("[1, 2]", lib.LogEvent("[1, 2]")),
        ("   \n", None),
    ],
)
def test_parse_line(line, expected):
    assert lib.parse_line(line) == expected


def test_progress_fraction_is_clamped():
    event = lib.parse_line('{"event": "progress", "stage": "s", "done": 5, "total": 4, "fraction": 1.25}')
    assert event.fraction == 1.0


def test_command_lines_follow_the_cli_contract(tmp_path):
    model = tmp_path / "model.json"
    assert lib.segment_command("PythonSlicer", "ct.nrrd", "out", model, "cpu", use_tta=True, threads=4) == [
        "PythonSlicer", "-m", "lvt", "segment", "ct.nrrd", "-o", "out", "--model", str(model),
        "--device", "cpu", "--progress", "json", "--tta", "--threads", "4",
    ]
    assert lib.segment_command("py", "ct.nrrd", "out") == [
        "py", "-m", "lvt", "segment", "ct.nrrd", "-o", "out", "--device", "auto", "--progress", "json",
    ]
    assert lib.measure_command("py", "seg.seg.nrrd", "out", "ct.nrrd") == [
        "py", "-m", "lvt", "measure", "seg.seg.nrrd", "--ct", "ct.nrrd", "-o", "out", "--progress", "json",
    ]


def test_child_environment_puts_the_core_first_and_keeps_the_rest():
    env = lib.child_environment({"PYTHONPATH": "/a" + os.pathsep + "/b", "HOME": "/home/x"}, "/ext/modules")
    assert env["PYTHONPATH"].split(os.pathsep) == ["/ext/modules", "/a", "/b"]
    assert env["HOME"] == "/home/x"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert lib.child_environment({}, "/ext")["PYTHONPATH"] == "/ext"


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_background_process_turns_output_into_events_in_order(tmp_path):
    child = _script(
        tmp_path,
        """
        import json, sys
        for n in range(3):
            event = {"event": "progress", "stage": "work", "done": n + 1, "total": 3, "fraction": (n + 1) / 3}
            print(json.dumps(event))
        print("a plain log line", file=sys.stderr)
        print(json.dumps({"event": "done", "output": "OUT"}))
        """,
    )
    process = lib.BackgroundProcess([sys.executable, str(child)])
    process.start()

    events = process.wait(timeout_s=30)

    progress = [e for e in events if isinstance(e, lib.ProgressEvent)]
    assert [e.done for e in progress] == [1.0, 2.0, 3.0]
    assert lib.LogEvent("a plain log line") in events
    assert events[-2:] == [lib.DoneEvent("OUT"), lib.ExitEvent(0, cancelled=False)]
    assert events[-1].succeeded
    assert process.events() == []


def test_stop_ends_the_whole_process_tree(tmp_path):
    child = _script(
        tmp_path,
        """
        import json, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        event = {"event": "progress", "stage": "spawned", "done": grandchild.pid, "total": 1, "fraction": 0}
        print(json.dumps(event), flush=True)
        time.sleep(120)
        """,
    )
    process = lib.BackgroundProcess([sys.executable, str(child)])
    process.start()
    deadline = time.monotonic() + 30
    events: list = []
    while not any(isinstance(e, lib.ProgressEvent) for e in events) and time.monotonic() < deadline:
        events += process.events()
        time.sleep(0.05)
    grandchild_pid = int(next(e for e in events if isinstance(e, lib.ProgressEvent)).done)
    assert psutil.pid_exists(grandchild_pid) and process.is_running

    process.stop(grace_s=2.0)
    remaining = process.wait(timeout_s=10)

    assert not process.is_running
    exit_event = remaining[-1]
    assert isinstance(exit_event, lib.ExitEvent) and exit_event.cancelled and not exit_event.succeeded
    deadline = time.monotonic() + 5  # SIGTERM was sent; the grandchild may still be exiting
    while _running(grandchild_pid):
        assert time.monotonic() < deadline, "the grandchild survived the cancel"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_core_error_reaches_the_module_as_written(tmp_path):
    missing = tmp_path / "no_such_ct.nrrd"
    command = lib.segment_command(sys.executable, missing, tmp_path / "out", device="cpu")
    process = lib.BackgroundProcess(command, env=lib.child_environment(os.environ, lib.core_dir(MODULE_DIR)))
    process.start()

    events = process.wait(timeout_s=120)

    errors = [e for e in events if isinstance(e, lib.ErrorEvent)]
    assert len(errors) == 1 and str(missing) in errors[0].message
    assert events[-1] == lib.ExitEvent(EXIT_BAD_INPUT, cancelled=False)
    assert not (tmp_path / "out").exists()


# --- environment -----------------------------------------------------------------------------------


def test_bundled_model_is_found_installed_first_then_in_the_source_tree(tmp_path):
    source_module = tmp_path / "src" / "LVTSegmentation"
    source_module.mkdir(parents=True)
    assert lib.bundled_model_path(source_module) is None
    source_model = tmp_path / "src" / "Resources" / "Models" / "lvt_default.json"
    source_model.parent.mkdir(parents=True)
    source_model.write_text("{}", encoding="utf-8")
    assert lib.bundled_model_path(source_module) == source_model

    installed = tmp_path / "qt-scripted-modules"
    installed_model = installed / "Resources" / "Models" / "lvt_default.json"
    installed_model.parent.mkdir(parents=True)
    installed_model.write_text("{}", encoding="utf-8")
    assert lib.bundled_model_path(installed) == installed_model


def test_core_dir_is_the_module_folder_and_a_missing_core_is_reported(tmp_path):
    assert lib.core_dir(MODULE_DIR) == MODULE_DIR
    with pytest.raises(FileNotFoundError, match="reinstall"):
        lib.core_dir(tmp_path)


def test_missing_requirements_and_protecting_constraints():
    present, absent = lib.Requirement("json", "json"), lib.Requirement("no_such_module_lvt", "no-such-module-lvt")
    assert lib.missing_requirements([present, absent]) == [absent]
    assert lib.missing_requirements() == []  # the test environment has everything the core needs
    assert f"numpy=={np.__version__}" in lib.protecting_constraints()
