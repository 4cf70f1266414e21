"""`lvt segment` end to end with the bundled model, on real CTs (NIfTI and DICOM) and on phantoms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import slicerio
import vtk
from conftest import rotation, shared_file

from lvt.cli.main import run
from lvt.evaluate.metrics import dice_score
from lvt.grid import resample_like
from lvt.io import read_image, read_label_image, read_segmentation, write_image
from lvt.labels import STRUCTURES
from lvt.phantom import PhantomConfig, make_phantom
from lvt.segment.model_file import bundled_model_path
from lvt.segment.pipeline import segment_image
from lvt.segment.predict import Predictor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def example_ct_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ct = shared_file("totalsegmentator_example", "example_ct.nii.gz")
    out = tmp_path_factory.mktemp("e2e") / "example_ct"
    assert run(["segment", str(ct), "-o", str(out), "--device", "cpu", "--progress", "none"]) == 0
    return out


def test_outputs_are_complete_and_on_the_input_grid(example_ct_result: Path) -> None:
    ct = read_image(shared_file("totalsegmentator_example", "example_ct.nii.gz"))
    labels = read_label_image(example_ct_result / "labels.nii.gz")
    assert labels.same_grid(ct)
    segmentation = slicerio.read_segmentation(str(example_ct_result / "segmentation.seg.nrrd"))
    segments = {s["name"]: s for s in segmentation["segments"]}
    assert list(segments) == [s.segment_name for s in STRUCTURES]
    for structure in STRUCTURES:
        segment = segments[structure.segment_name]
        assert segment["labelValue"] == structure.label_value
        assert np.allclose(segment["color"], structure.color_float, atol=1e-3)
        assert segment["terminology"]["type"][1] == structure.type[1]
    np.testing.assert_allclose(segmentation["ijkToLPS"], ct.ijk_to_lps_matrix(), atol=1e-4)
    assert np.array_equal(read_segmentation(example_ct_result / "segmentation.seg.nrrd").array, labels.array)
    report = json.loads((example_ct_result / "report.json").read_text(encoding="utf-8"))
    assert report["model"]["name"] == "lvt_default"
    assert report["liver"]["whole_volume_ml"] == pytest.approx(np.isin(labels.array, (1, 2, 3)).sum() * 27 / 1000)


def _stl_volume_ml(path: Path) -> float:
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(path))
    mass = vtk.vtkMassProperties()
    mass.SetInputConnection(reader.GetOutputPort())
    mass.Update()
    return mass.GetVolume() / 1000.0


def test_liver_surface_encloses_the_labelmap_volume(example_ct_result: Path) -> None:
    report = json.loads((example_ct_result / "report.json").read_text(encoding="utf-8"))
    stl = _stl_volume_ml(example_ct_result / "surfaces" / "liver.stl")
    assert stl == pytest.approx(report["liver"]["whole_volume_ml"], rel=0.05)


def test_dicom_folder_segments_like_a_file(tmp_path: Path) -> None:
    folder = shared_file("totalsegmentator_example", "example_ct_dicom")
    out = tmp_path / "dicom"
    assert run(["segment", str(folder), "-o", str(out), "--device", "cpu", "--progress", "none"]) == 0
    ct = read_image(folder)
    labels = read_label_image(out / "labels.nii.gz")
    assert labels.same_grid(ct)
    # the same voxels written as NIfTI give the same labels (example_ct_dicom is a training CT of the
    # bundled model, so only agreement is tested here, never accuracy)
    write_image(ct, tmp_path / "ct.nii.gz")
    assert run(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "file"), "--device", "cpu",
                "--progress", "none", "--no-surfaces"]) == 0
    from_file = read_label_image(tmp_path / "file" / "labels.nii.gz")
    assert np.mean(from_file.array == labels.array) > 0.9999
    assert (labels.array == 1).sum() > 10_000  # a liver was found at all


def test_oblique_flipped_anisotropic_copy_gives_the_same_labels_in_physical_space() -> None:
    predictor = Predictor.from_file(bundled_model_path(), "cpu")
    axial = make_phantom(PhantomConfig(seed=31, spacing_mm=(2.0, 2.0, 2.0), n_tumors=(2, 2)))
    oblique_direction = rotation(2, 15.0) @ np.diag([-1.0, 1.0, 1.0])  # rotated in-plane, x flipped
    oblique = make_phantom(PhantomConfig(seed=31, spacing_mm=(1.6, 2.2, 3.0), n_tumors=(2, 2),
                                         direction=oblique_direction))
    labels_axial = segment_image(axial.image, predictor).labels
    labels_oblique = segment_image(oblique.image, predictor).labels
    back = resample_like(labels_oblique, labels_axial, interpolation="nearest").array
    liver_a, liver_b = labels_axial.array > 0, back > 0
    assert dice_score(liver_a, liver_b) > 0.95
    # Disagreements sit at the liver boundary: measured 93 % within 4 mm (two model voxels) and 97 %
    # within 6 mm. The exact truths of the two renderings already differ at Dice 0.98 (3 mm slices).
    from scipy import ndimage

    distance_mm = ndimage.distance_transform_edt(liver_a == ndimage.binary_erosion(liver_a), sampling=2.0)
    mismatch_distance_mm = distance_mm[liver_a != liver_b]
    assert (mismatch_distance_mm <= 4.0).mean() > 0.9
    assert (mismatch_distance_mm <= 6.0).mean() > 0.95

