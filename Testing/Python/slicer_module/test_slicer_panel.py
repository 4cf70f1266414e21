"""What the panel adds around a run, against the real MRML of ``slicer-core`` (nothing of slicer is faked).

No reference leaked by the 3D surfaces, Slicer's standard segment names, the DICOM export item,
empty path fields, the model's card, the log and the clock, the self-test's gate, the sample CT.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
sys.path.insert(0, str(REPO / "LVTSegmentation"))

import LVTSegmentationLib as lib  # noqa: E402
from LVTSegmentationLib import segmentation  # noqa: E402

from lvt.io import read_image, read_segmentation, write_segmentation  # noqa: E402
from lvt.labels import STRUCTURES  # noqa: E402
from lvt.measure.reliability import model_reliability  # noqa: E402
from lvt.measure.report import build_report, write_report_json  # noqa: E402
from lvt.measure.volumes_and_lesions import measure_labels  # noqa: E402

BUNDLED_MANIFEST = REPO / "Resources" / "Models" / "lvt_default.json"


@pytest.fixture(scope="module")
def logic_tests():
    """test_slicer_logic's oblique phantom and CT node helpers (a sibling test module, found on sys.path)."""
    return importlib.import_module("test_slicer_logic")


@pytest.fixture(scope="module")
def labels(logic_tests):
    return logic_tests._phantom_labels()


@pytest.fixture(scope="module")
def core_output(tmp_path_factory, labels) -> Path:
    folder = tmp_path_factory.mktemp("core_output")
    write_segmentation(labels, folder / "segmentation.seg.nrrd")
    report = build_report(input_path="ct.nrrd", ct_or_labels_grid=labels, measurements=measure_labels(labels),
                          model=None, inference=None)
    write_report_json(report, folder / "report.json")
    return folder


@pytest.fixture()
def scene():
    return slicer.vtkMRMLScene()


# --- 3D surfaces ------------------------------------------------------------------------------------


def test_each_closed_surface_is_held_only_by_its_segment(scene, core_output):
    """CreateRepresentationForOneSegment hands its object to the caller; an unreleased one is never freed."""
    node = lib.load_results(scene, core_output).segmentation_node

    for structure in STRUCTURES:
        segment = node.GetSegmentation().GetSegment(structure.segment_name)
        surface = segment.GetRepresentation(segmentation.CLOSED_SURFACE)
        assert surface.GetNumberOfPoints() > 0
        assert surface.GetReferenceCount() == 2  # the segment's and this Python wrapper's
        segment.RemoveRepresentation(segmentation.CLOSED_SURFACE)
        assert surface.GetReferenceCount() == 1, f"{structure.segment_name}: a reference leaked"


# --- standard segment names ------------------------------------------------------------------------


def _terminology_with_slicer_label(folder: Path, label_of: dict[str, str]) -> Path:
    """A terminology context file holding the LVT codes, with a "3dSlicerLabel" for the given type codes."""
    categories: dict[tuple, dict] = {}
    for structure in STRUCTURES:
        scheme, value, meaning = structure.category
        category = categories.setdefault(structure.category, {
            "CodingSchemeDesignator": scheme, "CodeValue": value, "CodeMeaning": meaning, "showAnatomy": True,
            "Type": []})
        entry = dict(zip(("CodingSchemeDesignator", "CodeValue", "CodeMeaning"), structure.type, strict=True))
        if structure.type[1] in label_of:
            entry["3dSlicerLabel"] = label_of[structure.type[1]]
        category["Type"].append(entry)
    context = {
        "SegmentationCategoryTypeContextName": STRUCTURES[0].terminology_entry().split("~")[0],
        "@schema": "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#",
        "SegmentationCodes": {"Category": list(categories.values())},
    }
    path = folder / "terminology.json"
    path.write_text(json.dumps(context), encoding="utf-8")
    return path


def test_standard_names_are_the_code_meanings_when_the_terminology_has_no_slicer_label(scene, core_output):
    node = lib.load_results(scene, core_output).segmentation_node

    names = lib.apply_standard_names(node, slicer.vtkSlicerTerminologiesModuleLogic())

    assert names == {structure.key: structure.type[2] for structure in STRUCTURES}
    segments = node.GetSegmentation()
    assert [segments.GetNthSegment(n).GetName() for n in range(3)] == [s.type[2] for s in STRUCTURES]
    assert [segments.GetNthSegmentID(n) for n in range(3)] == [s.segment_name for s in STRUCTURES]


def test_standard_names_follow_the_loaded_terminology_and_the_core_still_reads_the_segments(
    scene, core_output, labels, tmp_path
):
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    liver = STRUCTURES[0]
    assert logic.LoadTerminologyFromFile(str(_terminology_with_slicer_label(tmp_path, {liver.type[1]: "liver"})))
    node = lib.load_results(scene, core_output).segmentation_node

    names = lib.apply_standard_names(node, logic)

    assert names["liver"] == "liver"
    assert names["vessel"] == STRUCTURES[1].type[2]
    assert lib.segment_ids_by_structure(node) == {s.key: s.segment_name for s in STRUCTURES}
    lib.write_segmentation_file(scene, node, tmp_path / "renamed.seg.nrrd")
    np.testing.assert_array_equal(read_segmentation(tmp_path / "renamed.seg.nrrd").array, labels.array)


def test_a_segment_retyped_by_the_user_gets_the_name_of_its_new_type(scene, core_output):
    node = lib.load_results(scene, core_output).segmentation_node
    tumor = node.GetSegmentation().GetSegment("Tumors")
    tumor.SetTerminology(tumor.GetTerminology().replace("SCT^108369006^Neoplasm", "SCT^4147007^Mass"))

    names = lib.apply_standard_names(node, slicer.vtkSlicerTerminologiesModuleLogic())

    assert names["tumor"] == "Mass" and tumor.GetName() == "Mass"


def test_a_string_that_is_no_terminology_entry_is_refused():
    with pytest.raises(ValueError, match="terminology"):
        lib.standard_segment_name(slicer.vtkSlicerTerminologiesModuleLogic(), "")


# --- DICOM export --------------------------------------------------------------------------------------


def _as_loaded_from_dicom(scene, volume) -> None:
    """What Slicer's DICOM plugins record on a series they load (DICOMPlugin.addSeriesInSubjectHierarchy)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(volume)
    constants = slicer.vtkMRMLSubjectHierarchyConstants
    hierarchy.SetItemUID(item, constants.GetDICOMUIDName(), "1.2.826.0.1.3680043.8.498.1")
    instances = "1.2.826.0.1.3680043.8.498.2 1.2.826.0.1.3680043.8.498.3"
    hierarchy.SetItemUID(item, constants.GetDICOMInstanceUIDName(), instances)


def test_dicom_export_selects_the_segmentation_of_a_ct_loaded_from_dicom(scene, core_output, labels, logic_tests):
    ct = logic_tests._ct_node(scene, labels)
    node = lib.load_results(scene, core_output, reference_volume_node=ct).segmentation_node
    assert not lib.loaded_from_dicom(scene, ct)
    assert lib.dicom_export_item(scene, node) is None

    _as_loaded_from_dicom(scene, ct)

    assert lib.loaded_from_dicom(scene, ct)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = lib.dicom_export_item(scene, node)
    assert item == hierarchy.GetItemByDataNode(node)
    assert hierarchy.GetItemParent(item) == hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct))  # its study


def test_no_dicom_export_without_a_reference_ct(scene, core_output):
    node = lib.load_results(scene, core_output).segmentation_node
    assert lib.dicom_export_item(scene, node) is None
    assert lib.dicom_export_item(scene, None) is None
    assert not lib.loaded_from_dicom(scene, None)


# --- path fields ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", ["", ".", "  ", None, Path("")])
def test_an_empty_path_field_is_no_path_and_shows_nothing(empty):
    assert lib.optional_path(empty) is None
    assert lib.path_text(empty) == ""


def test_a_chosen_path_is_kept(tmp_path):
    assert lib.optional_path(f" {tmp_path} ") == tmp_path
    assert lib.path_text(tmp_path / "model.json") == str(tmp_path / "model.json")


# --- the model's card ----------------------------------------------------------------------------------


def test_the_bundled_models_card_shows_its_name_training_data_and_figures():
    manifest = json.loads(BUNDLED_MANIFEST.read_text(encoding="utf-8"))

    card = lib.model_card_of_file(BUNDLED_MANIFEST).splitlines()

    assert card[0] == f"{manifest['name']} {manifest['version']}"
    assert card[1] == f"Trained on: {manifest['training']['data']}"
    dice = manifest["metrics"]["validation_phantoms_model_grid"]["dice"]
    assert card[2] == (f"Phantom validation: Dice liver {dice['liver']:.2f}, vessels {dice['vessel']:.2f}, "
                       f"tumors {dice['tumor']:.2f}")
    assert card[3] == model_reliability(manifest)
    assert "real CT" in card[3]


def test_a_manifest_without_figures_says_the_model_is_not_validated(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "version": "0.2"}), encoding="utf-8")

    assert lib.model_card_of_file(path).splitlines() == ["mine 0.2", model_reliability({"name": "mine"})]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_an_unreadable_manifest_is_named_not_raised(tmp_path, content):
    path = tmp_path / "broken.json"
    path.write_text(content, encoding="utf-8")
    assert lib.model_card_of_file(path).startswith(f"{path}: not a")
    assert lib.model_card_of_file(tmp_path / "missing.json").startswith(str(tmp_path / "missing.json"))
    assert lib.model_card_of_file(None) == ""


# --- log and clock -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (7.9, "0:07"), (750, "12:30"), (3723, "1:02:03"),
                                               (-3, "0:00")])
def test_elapsed_time(seconds, text):
    assert lib.format_elapsed(seconds) == text


def test_log_lines_name_each_stage_once_and_keep_what_the_child_says():
    progress = lib.ProgressEvent("inference", 1, 10, 0.1, "window 1 of 10")
    assert lib.log_line(progress, None) == "inference: window 1 of 10"
    assert lib.log_line(progress, "inference") is None
    assert lib.log_line(lib.ProgressEvent("write", 0, 1, 0.9), "inference") == "write"
    assert lib.log_line(lib.LogEvent("UserWarning: x"), "write") == "UserWarning: x"
    assert lib.log_line(lib.ErrorEvent("ct.nrrd: not a CT"), None) == "error: ct.nrrd: not a CT"
    assert lib.log_line(lib.DoneEvent("/tmp/out"), None) == "results written to /tmp/out"
    assert lib.log_line(lib.ExitEvent(0, cancelled=False), None) == "finished"
    assert lib.log_line(lib.ExitEvent(-15, cancelled=True), None) == "cancelled"
    assert lib.log_line(lib.ExitEvent(2, cancelled=False), None) == "ended with exit code 2"


# --- the self-test's gate ------------------------------------------------------------------------------


def test_the_self_test_runs_only_with_its_packages_or_when_asked_to_install_them():
    variable = lib.SELF_TEST_INSTALL_VARIABLE
    assert lib.self_test_skip_reason([], {}) is None
    reason = lib.self_test_skip_reason(["torch", "safetensors>=0.4,<1"], {})
    assert reason is not None and "torch" in reason and variable in reason
    assert lib.self_test_skip_reason(["torch"], {variable: "1"}) is None
    assert lib.self_test_skip_reason(["torch"], {variable: "yes"}) is None
    assert lib.self_test_skip_reason(["torch"], {variable: "0"}) is not None
    assert variable not in os.environ or lib.self_test_skip_reason(["torch"], os.environ) is None


# --- the sample CT -------------------------------------------------------------------------------------


def test_the_sample_ct_is_made_once_on_the_phantoms_grid(tmp_path):
    path = lib.write_sample_ct(tmp_path)
    written = path.stat().st_mtime_ns

    again = lib.write_sample_ct(tmp_path)

    assert again == path and path.stat().st_mtime_ns == written, "the cached CT was written again"
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "a temporary file was left behind"
    phantom = lib.sample_phantom()
    image = read_image(path)
    assert image.same_grid(phantom.image, tolerance_mm=1e-4)
    np.testing.assert_array_equal(image.array, np.rint(phantom.image.array))
    assert int(np.count_nonzero(phantom.labels == STRUCTURES[2].label_value)) > 0, "the sample has tumors"
