"""Dataset specs as data: each public layout written in miniature, loaded, and its masks and class weights checked."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SHARED_DATA

from lvt.errors import InputError
from lvt.image import Image
from lvt.io import write_image
from lvt.train.config import training_config_from_dict
from lvt.train.data.discovery import discover_cases
from lvt.train.data.loading import CaseError, load_case
from lvt.train.data.prepare import prepare_cases
from lvt.train.data.specs import DatasetSpec, builtin_spec_names, load_builtin_spec, load_spec_file, spec_fingerprint

SHAPE_ZYX = (8, 10, 12)
SPACING_MM = (0.8, 0.9, 2.5)
ORIGIN_LPS_MM = (-10.0, 5.0, 100.0)


# --- tiny volumes in the public layouts ---------------------------------------------------------


def ct_array() -> np.ndarray:
    """Air at -1000 HU around soft tissue at 40 HU (so lvt.io accepts it as CT)."""
    array = np.full(SHAPE_ZYX, 40.0, dtype=np.float32)
    array[:, :2, :] = -1000.0
    return array


def label_array(values: dict[int, tuple[slice, slice, slice]]) -> np.ndarray:
    """uint8 label map with each value painted into its box (later boxes overwrite earlier ones)."""
    labels = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    for value, box in values.items():
        labels[box] = value
    return labels


LIVER_BOX = (slice(1, 7), slice(3, 9), slice(2, 10))
TUMOR_BOX = (slice(3, 5), slice(4, 6), slice(4, 6))
VESSEL_BOX = (slice(2, 6), slice(7, 8), slice(3, 9))


def write_volume(path: Path, array: np.ndarray, origin: tuple[float, float, float] = ORIGIN_LPS_MM) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(Image(array, SPACING_MM, origin), path)
    return path


def write_pair(image_path: Path, label_path: Path, labels: np.ndarray) -> None:
    write_volume(image_path, ct_array())
    write_volume(label_path, labels)


def write_dicom_series(folder: Path, array: np.ndarray, uid: str, modality: str) -> None:
    """One DICOM file per slice named image_0, image_1, ... (no extension), as 3D-IRCADb ships them."""
    folder.mkdir(parents=True)
    volume = sitk.GetImageFromArray(array)
    volume.SetSpacing(SPACING_MM)
    volume.SetOrigin(ORIGIN_LPS_MM)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{uid}.{k + 1}", "0008|0060": modality,
            "0020|000d": "1.2.826.0.1.77", "0020|000e": uid, "0020|0013": str(k + 1),
            "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0032": "\\".join(str(v) for v in position),
        }
        plane = volume[:, :, k]
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"image_{k}"))
        writer.Execute(plane)


def box_mask(*boxes: tuple[slice, slice, slice]) -> np.ndarray:
    mask = np.zeros(SHAPE_ZYX, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


def lits_layout(root: Path, case_ids: tuple[str, ...] = ("0",)) -> np.ndarray:
    labels = label_array({1: LIVER_BOX, 2: TUMOR_BOX})
    for case_id in case_ids:
        batch = root / "Training Batch 1"
        write_pair(batch / f"volume-{case_id}.nii", batch / f"segmentation-{case_id}.nii", labels)
    return labels


def assert_masks(case, liver: np.ndarray | None, vessel: np.ndarray | None, tumor: np.ndarray | None) -> None:
    """Each channel equals the expected mask; None means the class must be empty."""
    for channel, expected in enumerate((liver, vessel, tumor)):
        np.testing.assert_array_equal(case.masks[channel], np.zeros(SHAPE_ZYX, bool) if expected is None else expected)


# --- one test per reader ------------------------------------------------------------------------


def test_lits_liver_and_tumor_land_in_their_channels_without_hierarchy(tmp_path: Path) -> None:
    labels = lits_layout(tmp_path, ("10", "2", "0"))
    spec = load_builtin_spec("lits", root=tmp_path)
    refs = discover_cases(spec)
    assert [ref.name for ref in refs] == ["lits/0", "lits/2", "lits/10"]
    case = load_case(refs[0])
    assert case.annotated == (True, False, True)
    assert case.image.array.dtype == np.float32
    assert case.image.same_grid(Image(labels, SPACING_MM, ORIGIN_LPS_MM))
    # Tumor voxels are not copied into the liver channel: the hierarchy is the training loop's job.
    assert_masks(case, labels == 1, None, labels == 2)


def test_msd_task03_skips_macos_resource_files_and_needs_dataset_json(tmp_path: Path) -> None:
    labels = label_array({1: LIVER_BOX, 2: TUMOR_BOX})
    write_pair(tmp_path / "imagesTr" / "liver_0.nii.gz", tmp_path / "labelsTr" / "liver_0.nii.gz", labels)
    (tmp_path / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    spec = load_builtin_spec("msd_task03_liver", root=tmp_path)
    with pytest.raises(InputError, match=r"dataset\.json"):
        discover_cases(spec)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "cancer"}}))
    refs = discover_cases(spec)
    assert [ref.name for ref in refs] == ["msd_task03_liver/0"]
    case = load_case(refs[0])
    assert case.annotated == (True, False, True)
    assert_masks(case, labels == 1, None, labels == 2)


def test_msd_task08_vessel_and_tumour_without_liver(tmp_path: Path) -> None:
    labels = label_array({1: VESSEL_BOX, 2: TUMOR_BOX})
    write_pair(tmp_path / "imagesTr" / "hepaticvessel_001.nii.gz", tmp_path / "labelsTr" / "hepaticvessel_001.nii.gz",
               labels)
    (tmp_path / "dataset.json").write_text("{}")
    case = load_case(discover_cases(load_builtin_spec("msd_task08_hepaticvessel", root=tmp_path))[0])
    assert case.name == "msd_task08_hepaticvessel/001"
    assert case.annotated == (False, True, True)
    assert_masks(case, None, labels == 1, labels == 2)


def test_hepaticvessel_liver_couinaud_segments_all_become_liver(tmp_path: Path) -> None:
    task08, masks = tmp_path / "Task08_HepaticVessel", tmp_path / "hv_liver"
    (task08 / "imagesTr").mkdir(parents=True)
    (task08 / "dataset.json").write_text("{}")
    segments = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    segments[LIVER_BOX] = (np.arange(np.prod(segments[LIVER_BOX].shape)) % 8 + 1).reshape(segments[LIVER_BOX].shape)
    write_pair(task08 / "imagesTr" / "hepaticvessel_004.nii.gz", masks / "hepaticvessel_004.nii.gz", segments)
    spec = load_builtin_spec("hepaticvessel_liver", root=task08, label_root=masks)
    case = load_case(discover_cases(spec)[0])
    assert set(np.unique(segments)) == set(range(9))
    assert case.annotated == (True, False, False)
    assert_masks(case, box_mask(LIVER_BOX), None, None)


def task08_with_liver_masks(root: Path, case_ids: tuple[str, ...] = ("004",)) -> tuple[Path, Path, np.ndarray]:
    """Task08 (vessel 1, tumour 2) and a separate folder of Couinaud-segment liver masks for the same CTs."""
    task08, masks = root / "Task08_HepaticVessel", root / "hv_liver"
    (task08 / "imagesTr").mkdir(parents=True)
    (task08 / "dataset.json").write_text("{}")
    vessel_tumor = label_array({1: VESSEL_BOX, 2: TUMOR_BOX})
    segments = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    segments[LIVER_BOX] = 3  # Couinaud segment 3
    for case_id in case_ids:
        write_pair(task08 / "imagesTr" / f"hepaticvessel_{case_id}.nii.gz",
                   task08 / "labelsTr" / f"hepaticvessel_{case_id}.nii.gz", vessel_tumor)
        write_volume(masks / f"hepaticvessel_{case_id}.nii.gz", segments)
    return task08, masks, vessel_tumor


def test_two_label_sources_make_one_case_with_the_classes_of_both(tmp_path: Path) -> None:
    task08, masks, vessel_tumor = task08_with_liver_masks(tmp_path)
    spec = DatasetSpec.from_dict({"builtin": "msd_task08_hepaticvessel_liver", "root": str(task08),
                                  "second_labels": {"label_root": str(masks)}}, source="test")
    (ref,) = discover_cases(spec)
    assert ref.second_label_path == masks / "hepaticvessel_004.nii.gz"
    case = load_case(ref)
    assert case.name == "msd_task08_hepaticvessel_liver/004" and case.annotated == (True, True, True)
    # liver from the second source, vessel and tumor from Task08; the hierarchy is applied later, in the cache
    assert_masks(case, box_mask(LIVER_BOX), vessel_tumor == 1, vessel_tumor == 2)
    # the spec's identity (cache key) includes the second source
    other = DatasetSpec.from_dict({**spec.to_dict(), "second_labels": {**spec.second_labels.to_dict(),
                                                                        "label_pattern": "x_{case}.nii.gz"}}, "test")
    assert spec_fingerprint(other) != spec_fingerprint(spec)
    assert DatasetSpec.from_dict(spec.to_dict(), "test") == spec


def test_a_second_label_on_another_grid_or_missing_is_refused_naming_the_case(tmp_path: Path) -> None:
    task08, masks, _ = task08_with_liver_masks(tmp_path, ("004", "005"))
    shifted = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    write_volume(masks / "hepaticvessel_004.nii.gz", shifted, origin=(-10.0, 5.0, 90.0))  # 10 mm lower
    (masks / "hepaticvessel_005.nii.gz").unlink()
    spec = load_builtin_spec("msd_task08_hepaticvessel_liver", root=task08, second_labels={"label_root": masks})
    refs = discover_cases(spec)
    with pytest.raises(CaseError, match=r"hepaticvessel_004\.nii\.gz: case msd_task08_hepaticvessel_liver/004: label "
                                        r"grid does not match its image \(origin differ"):
        load_case(refs[0])
    with pytest.raises(CaseError, match=r"case msd_task08_hepaticvessel_liver/005: missing pair: no second label"):
        load_case(refs[1])


LIVER_SOURCE = {"label_pattern": "x_{case}.nii.gz", "positive_is": ["liver"]}


@pytest.mark.parametrize(("second", "annotated", "message"), [
    ({"label_pattern": "x_{case}.nii.gz", "positive_is": ["tumor"]}, [0, 1, 1], r"tumor would come from both"),
    ({"label_pattern": "x_{case}.nii.gz"}, [1, 1, 1], r"second_labels': give value_map"),
    ({**LIVER_SOURCE, "label_pattern": "x.nii.gz"}, [1, 1, 1], r"second_labels.label_pattern'.*no \{case\}"),
    ({**LIVER_SOURCE, "valu_map": {}}, [1, 1, 1], r"did you mean 'value_map'"),
    (LIVER_SOURCE, [0, 1, 1], r"labels map to liver but liver is not marked annotated"),
])
def test_an_invalid_second_label_source_is_refused_naming_the_field(second: dict, annotated: list,
                                                                   message: str) -> None:
    spec = {"name": "t8", "kind": "msd", "root": "/data/t8", "image_pattern": "i_{case}.nii.gz",
            "label_pattern": "l_{case}.nii.gz", "value_map": {1: "vessel", 2: "tumor"}, "annotated": annotated,
            "second_labels": second}
    with pytest.raises(InputError, match=rf"^cfg\.yaml: dataset 't8': .*{message}"):
        DatasetSpec.from_dict(spec, source="cfg.yaml")


def test_ircadb_dicom_masks_vessels_outside_the_liver_are_dropped(tmp_path: Path) -> None:
    portal_box = (slice(2, 6), slice(7, 10), slice(0, 5))  # runs out of the liver (rows 9, columns 0-1)
    venous_box = (slice(0, 3), slice(4, 5), slice(6, 8))  # partly above the liver (slice 0)
    structures = {
        "liver": LIVER_BOX, "livertumor01": TUMOR_BOX, "livertumor02": (slice(5, 6), slice(7, 8), slice(8, 9)),
        "portalvein": portal_box, "venoussystem": venous_box, "artery": (slice(0, 8), slice(5, 6), slice(0, 12)),
    }
    for case_id in ("1", "17"):
        patient = tmp_path / f"3Dircadb1.{case_id}"
        write_dicom_series(patient / "PATIENT_DICOM", ct_array().astype(np.int16), f"1.2.826.0.1.77.{case_id}", "CT")
        for index, (name, box) in enumerate(structures.items()):
            mask = (box_mask(box) * 255).astype(np.uint8)
            write_dicom_series(patient / "MASKS_DICOM" / name, mask, f"1.2.826.0.1.77.{case_id}.{index + 1}", "OT")
    refs = discover_cases(load_builtin_spec("ircadb", root=tmp_path))
    assert [ref.name for ref in refs] == ["ircadb/1"]  # 1.17 is the project's evaluation case
    case = load_case(refs[0])
    liver = box_mask(LIVER_BOX)
    assert case.annotated == (True, True, True)
    assert case.image.same_grid(Image(liver, SPACING_MM, ORIGIN_LPS_MM))
    vessel = (box_mask(portal_box) | box_mask(venous_box)) & liver
    assert vessel.sum() < (box_mask(portal_box) | box_mask(venous_box)).sum()
    assert_masks(case, liver, vessel, box_mask(TUMOR_BOX, structures["livertumor02"]))


def test_totalsegmentator_structure_files_use_only_the_liver(tmp_path: Path) -> None:
    case_folder = tmp_path / "s0001"
    write_volume(case_folder / "ct.nii.gz", ct_array())
    write_volume(case_folder / "segmentations" / "liver.nii.gz", box_mask(LIVER_BOX).astype(np.uint8))
    write_volume(case_folder / "segmentations" / "spleen.nii.gz", box_mask(TUMOR_BOX).astype(np.uint8))
    case = load_case(discover_cases(load_builtin_spec("totalsegmentator", root=tmp_path))[0])
    assert case.name == "totalsegmentator/s0001"
    assert case.annotated == (True, False, False)
    assert_masks(case, box_mask(LIVER_BOX), None, None)


def test_totalsegmentator_multilabel_liver_is_5_and_other_organs_are_background(tmp_path: Path) -> None:
    labels = label_array({5: LIVER_BOX, 63: VESSEL_BOX, 1: TUMOR_BOX})
    write_pair(tmp_path / "s7" / "ct.nii.gz", tmp_path / "s7" / "seg.nii.gz", labels)
    spec = load_builtin_spec("totalsegmentator_multilabel", root=tmp_path, label_pattern="{case}/seg.nii.gz")
    case = load_case(discover_cases(spec)[0])
    assert_masks(case, labels == 5, None, None)


def test_pairs_in_lvt_label_convention(tmp_path: Path) -> None:
    labels = label_array({1: LIVER_BOX, 2: VESSEL_BOX, 3: TUMOR_BOX})
    write_pair(tmp_path / "images" / "patient_a.nii.gz", tmp_path / "labels" / "patient_a.nii.gz", labels)
    case = load_case(discover_cases(load_builtin_spec("pairs", root=tmp_path))[0])
    assert case.annotated == (True, True, True)
    assert_masks(case, labels == 1, labels == 2, labels == 3)


def test_phantom_cases_carry_the_phantom_truth() -> None:
    from lvt.phantom import PhantomConfig, make_phantom

    spec = load_builtin_spec("phantom", phantom={"count": 2, "seed": 5, "spacing_mm": [4.0, 4.0, 4.0]})
    refs = discover_cases(spec)
    assert [ref.name for ref in refs] == ["phantom/000", "phantom/001"]
    case = load_case(refs[1])
    truth = make_phantom(PhantomConfig(seed=6, spacing_mm=(4.0, 4.0, 4.0))).truth
    assert case.annotated == (True, True, True)
    assert case.masks.dtype == np.bool_ and all(case.masks[k].any() for k in range(3))
    np.testing.assert_array_equal(case.masks, truth)


# --- bad cases ----------------------------------------------------------------------------------


def bad_lits_layout(root: Path) -> None:
    """Case 0 good; 1 off-grid label; 2 unknown label value; 3 unreadable; 4 missing its label."""
    labels = lits_layout(root, ("0",))
    batch = root / "Training Batch 1"
    write_volume(batch / "volume-1.nii", ct_array())
    write_volume(batch / "segmentation-1.nii", labels, origin=(0.0, 5.0, 100.0))
    write_pair(batch / "volume-2.nii", batch / "segmentation-2.nii", label_array({1: LIVER_BOX, 7: TUMOR_BOX}))
    (batch / "volume-3.nii").write_bytes(b"not a NIfTI file at all")
    write_volume(batch / "segmentation-3.nii", labels)
    write_volume(batch / "volume-4.nii", ct_array())


@pytest.mark.parametrize(
    ("case_id", "problem"),
    [("1", "origin differ"), ("2", "label value.* 7 .*not in the value map"), ("3", "cannot read"),
     ("4", "missing pair")],
)
def test_bad_case_raises_case_error_naming_the_case(tmp_path: Path, case_id: str, problem: str) -> None:
    bad_lits_layout(tmp_path)
    refs = {ref.case_id: ref for ref in discover_cases(load_builtin_spec("lits", root=tmp_path))}
    with pytest.raises(CaseError, match=f"case lits/{case_id}: .*{problem}") as raised:
        load_case(refs[case_id])
    assert raised.value.case_name == f"lits/{case_id}"


def lits_training_config(root: Path, *datasets: dict):
    """A training config over the given dataset entries (default: the built-in LiTS spec at ``root``)."""
    entries = list(datasets) or [{"builtin": "lits", "root": str(root)}]
    return training_config_from_dict({"output_dir": str(root / "run"), "datasets": entries}, root, source="train.yaml")


def test_skip_bad_cases_lists_what_it_skipped(tmp_path: Path) -> None:
    bad_lits_layout(tmp_path)
    config = lits_training_config(tmp_path)
    cases, skipped = prepare_cases(config.datasets, config, skip_bad_cases=True)
    assert [case.name for case in cases] == ["lits/0"]
    names, problems = zip(*(line.split(": ", 1) for line in skipped), strict=True)
    assert list(names) == ["lits/1", "lits/2", "lits/3", "lits/4"]
    assert "segmentation-1.nii" in problems[0] and "grid" in problems[0]
    with pytest.raises(CaseError, match="lits/1"):
        prepare_cases(config.datasets, config, skip_bad_cases=False)


def test_flipped_label_is_resampled_only_when_the_spec_allows_it(tmp_path: Path) -> None:
    labels = label_array({1: LIVER_BOX, 3: (slice(2, 4), slice(3, 5), slice(4, 6))})
    write_volume(tmp_path / "images" / "a.nii.gz", ct_array())
    # Same physical region with the j axis reversed: origin moves to the last row, direction flips y.
    last_row_y = ORIGIN_LPS_MM[1] + (SHAPE_ZYX[1] - 1) * SPACING_MM[1]
    flipped = Image(labels[:, ::-1, :].copy(), SPACING_MM, (ORIGIN_LPS_MM[0], last_row_y, ORIGIN_LPS_MM[2]),
                    np.diag([1.0, -1.0, 1.0]))
    (tmp_path / "labels").mkdir()
    write_image(flipped, tmp_path / "labels" / "a.nii.gz")
    strict = load_builtin_spec("pairs", root=tmp_path)
    with pytest.raises(CaseError, match=r"pairs/a: .*direction.*resample_label_to_image"):
        load_case(discover_cases(strict)[0])
    case = load_case(discover_cases(load_builtin_spec("pairs", root=tmp_path, resample_label_to_image=True))[0])
    assert_masks(case, labels == 1, None, labels == 3)


def test_resampling_never_hides_a_label_over_another_region(tmp_path: Path) -> None:
    write_volume(tmp_path / "images" / "a.nii.gz", ct_array())
    write_volume(tmp_path / "labels" / "a.nii.gz", label_array({1: LIVER_BOX}), origin=(-10.0, 5.0, 102.5))
    spec = load_builtin_spec("pairs", root=tmp_path, resample_label_to_image=True)
    with pytest.raises(CaseError, match="does not match its image"):
        load_case(discover_cases(spec)[0])


def test_discovery_errors_point_at_the_spec_not_a_case(tmp_path: Path) -> None:
    lits_layout(tmp_path)
    with pytest.raises(InputError, match="nothing matches label_pattern"):
        discover_cases(load_builtin_spec("lits", root=tmp_path, label_pattern="**/seg-{case}.nii"))
    with pytest.raises(InputError, match="root is not a folder"):
        discover_cases(load_builtin_spec("lits", root=tmp_path / "absent"))
    lits = {"builtin": "lits", "root": str(tmp_path)}
    with pytest.raises(InputError, match="'lits' is used twice"):
        lits_training_config(tmp_path, lits, lits)


# --- specs --------------------------------------------------------------------------------------


def valid_spec_dict() -> dict:
    return {"name": "mine", "kind": "pairs", "root": "data", "image_pattern": "img/{case}.nii.gz",
            "label_pattern": "lab/{case}.nii.gz", "value_map": {0: [], 1: "liver", 2: ["tumor"]},
            "annotated": [1, 0, 1]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "kits"}, "field 'kind'"),
        ({"annotated": [1, 0]}, "field 'annotated'"),
        ({"annotated": [1, 1, 1]}, "field 'annotated': vessel is marked annotated"),
        ({"annotated": [1, 0, 0]}, "field 'annotated': labels map to tumor"),
        ({"value_map": {"one": "liver"}}, "field 'value_map'"),
        ({"value_map": {1: "lung"}}, "field 'value_map\\[1\\]'"),
        ({"value_map": {0: "liver", 2: "tumor"}}, "field 'value_map': value 0 is background"),
        ({"image_pattern": "img/*.nii.gz"}, "field 'image_pattern'"),
        ({"label_pattern": "../lab/{case}.nii"}, "field 'label_pattern'"),
        ({"weight": 0}, "field 'weight'"),
        ({"root": None}, "field 'root'"),
        ({"other_values": "ignore"}, "field 'other_values'"),
        ({"valu_map": {1: "liver"}}, "unknown field\\(s\\) valu_map"),
        ({"structure_map": {"liver": "liver"}}, "field 'value_map'.*exactly one of them"),
        ({"phantom": {"count": 3}}, "field 'phantom'"),
        ({"exclude_cases": "17"}, "field 'exclude_cases'"),
    ],
)
def test_spec_errors_name_the_config_file_and_the_field(change: dict, message: str) -> None:
    with pytest.raises(InputError, match=f"^train.yaml: dataset 'mine': {message}"):
        DatasetSpec.from_dict(valid_spec_dict() | change, source="train.yaml")


def test_phantom_options_are_checked_against_the_phantom_config() -> None:
    with pytest.raises(InputError, match=r"dataset 'phantom': field 'phantom': .*phse"):
        load_builtin_spec("phantom", phantom={"count": 2, "phse": "arterial"})
    with pytest.raises(InputError, match=r"field 'phantom\.count'"):
        load_builtin_spec("phantom", phantom={"count": 0})
    spec = load_builtin_spec("phantom", phantom={"count": 1, "phase": "arterial", "n_tumors": [1, 2]})
    assert spec.phantom.config_for(3).n_tumors == (1, 2) and spec.phantom.config_for(3).phase == "arterial"


def test_fingerprint_follows_the_value_map_and_to_dict_round_trips(tmp_path: Path) -> None:
    spec = DatasetSpec.from_dict(valid_spec_dict(), source="a.yaml", base_dir=tmp_path)
    assert spec.root == tmp_path / "data"
    again = DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict())), source="b.yaml")
    assert again == spec and spec_fingerprint(again) == spec_fingerprint(spec)
    changed = DatasetSpec.from_dict(valid_spec_dict() | {"value_map": {1: "liver", 3: "tumor"}}, "a.yaml", tmp_path)
    assert spec_fingerprint(changed) != spec_fingerprint(spec)
    ref = discover_cases(load_builtin_spec("phantom"))[0]
    assert pickle.loads(pickle.dumps(ref)) == ref  # the cache builds cases in spawned worker processes


def test_spec_file_root_is_relative_to_the_file_and_builtin_can_be_named_in_a_config(tmp_path: Path) -> None:
    lits_layout(tmp_path / "LiTS")
    config = tmp_path / "configs" / "lits.yaml"
    config.parent.mkdir()
    config.write_text("name: lits_local\nkind: lits\nroot: ../LiTS\nimage_pattern: '**/volume-{case}.nii'\n"
                      "label_pattern: '**/segmentation-{case}.nii'\nvalue_map: {1: liver, 2: tumor}\n"
                      "annotated: [1, 0, 1]\nweight: 2\n")
    spec = load_spec_file(config)
    assert spec.root == tmp_path / "LiTS" and spec.weight == 2.0
    assert [ref.name for ref in discover_cases(spec)] == ["lits_local/0"]
    from_builtin = DatasetSpec.from_dict({"builtin": "lits", "root": "../LiTS"}, str(config), config.parent)
    assert from_builtin.root == tmp_path / "LiTS" and from_builtin.annotated == (True, False, True)
    with pytest.raises(InputError, match=rf"{config.name}: dataset 'lits_local': field 'value_map\[2\]': .*'tumour'"):
        config.write_text(config.read_text(encoding="utf-8").replace("2: tumor", "2: tumour"))
        load_spec_file(config)


EXPECTED_WEIGHTS = {
    "lits": (1, 0, 1), "msd_task03_liver": (1, 0, 1), "msd_task08_hepaticvessel": (0, 1, 1),
    "hepaticvessel_liver": (1, 0, 0), "msd_task08_hepaticvessel_liver": (1, 1, 1), "ircadb": (1, 1, 1),
    "totalsegmentator": (1, 0, 0),
    "totalsegmentator_multilabel": (1, 0, 0), "pairs": (1, 1, 1), "phantom": (1, 1, 1),
    "shared_totalsegmentator_example": (1, 0, 0),
}


def test_every_builtin_spec_is_valid_with_the_class_weights_of_the_method(tmp_path: Path) -> None:
    assert sorted(EXPECTED_WEIGHTS) == builtin_spec_names()
    for name, weights in EXPECTED_WEIGHTS.items():
        root = None if name in ("phantom", "shared_totalsegmentator_example") else tmp_path
        spec = load_builtin_spec(name, root=root)
        assert spec.name == name
        assert spec.annotated == tuple(bool(w) for w in weights), name


def test_shared_totalsegmentator_example_trains_on_liver_only() -> None:
    folder = SHARED_DATA / "totalsegmentator_example"
    if not folder.is_dir():
        pytest.skip("shared/data/totalsegmentator_example is not available")
    refs = discover_cases(load_builtin_spec("shared_totalsegmentator_example"))
    assert [ref.case_id for ref in refs] == ["ct", "ct_dicom"]
    assert refs[0].name == "shared_totalsegmentator_example/ct"
    assert not any("_sm" in str(ref.image_path) or "ircadb" in str(ref.image_path) for ref in refs)
    nifti, dicom = (load_case(ref) for ref in refs)
    assert nifti.annotated == dicom.annotated == (True, False, False)
    liver_ml = nifti.masks[0].sum() * nifti.image.voxel_volume_ml
    assert liver_ml == pytest.approx(1126, rel=0.01)  # PROVENANCE.md
    assert not nifti.masks[1:].any()
    # The DICOM labels are stored y-flipped over the same region: resampling is an exact reindexing.
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "example_seg_dicom.nii.gz")))
    np.testing.assert_array_equal(dicom.masks[0], (seg == 5)[:, ::-1, :])
    assert dicom.masks[0].sum() * dicom.image.voxel_volume_ml == pytest.approx(699, rel=0.01)
