"""Tests for lvt.followup.volumetry: liver volume per phase, deviation from the mean, flags, and `lvt volumetry`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lvt.cli.main import run
from lvt.errors import InputError
from lvt.followup.volumetry import volumetry_document
from lvt.image import Image
from lvt.io import write_image, write_segmentation
from lvt.phantom import PhantomConfig, make_phantom


def test_deviation_from_the_mean_and_flags() -> None:
    document = volumetry_document(["arterial", "portal", "late"], ["a", "p", "l"], [1000.0, 1100.0, 900.0])
    assert document["mean_liver_volume_ml"] == pytest.approx(1000.0)
    deviations = [p["deviation_from_mean_percent"] for p in document["phases"]]
    np.testing.assert_allclose(deviations, [0.0, 10.0, -10.0])
    assert document["flagged"] == ["portal", "late"]
    assert document["max_abs_deviation_percent"] == pytest.approx(10.0)
    assert volumetry_document(["a", "b", "c"], ["a", "b", "c"], [1000.0, 1100.0, 900.0], 12.0)["flagged"] == []


def test_a_deviation_exactly_at_the_threshold_is_not_flagged() -> None:
    document = volumetry_document(["a", "b"], ["a", "b"], [950.0, 1050.0])  # exactly -5 % and +5 %
    assert [p["flagged"] for p in document["phases"]] == [False, False]
    assert volumetry_document(["a", "b"], ["a", "b"], [949.0, 1051.0])["flagged"] == ["a", "b"]


@pytest.mark.parametrize(
    ("volumes", "threshold", "match"),
    [([1000.0], 5.0, "at least two"), ([1000.0, 0.0], 5.0, "no liver"), ([1000.0, 900.0], -1.0, "threshold")],
)
def test_bad_input_is_refused(volumes: list[float], threshold: float, match: str) -> None:
    names = [f"p{n}" for n in range(len(volumes))]
    with pytest.raises(InputError, match=match):
        volumetry_document(names, names, volumes, threshold)


def test_the_same_phantom_liver_in_three_phases_on_three_grids_deviates_far_less_than_5_percent() -> None:
    grids = [((3.0, 3.0, 3.0), None), ((2.5, 2.5, 4.0), ((-1, 0, 0), (0, -1, 0), (0, 0, 1))), ((4.0, 3.5, 3.0), None)]
    volumes = []
    for phase, (spacing, direction) in zip(("arterial", "portal_venous", "late"), grids, strict=True):
        phantom = make_phantom(PhantomConfig(seed=8, spacing_mm=spacing, direction=direction, phase=phase,
                                             field_of_view_mm=(240.0, 200.0, 190.0), center_lps_mm=(0.0, -8.0, -12.0),
                                             n_tumors=(0, 0)))
        volumes.append(float(phantom.truth[0].sum() * phantom.image.voxel_volume_ml))
    document = volumetry_document(["arterial", "portal", "late"], ["", "", ""], volumes)
    assert document["max_abs_deviation_percent"] < 1.0  # one organ; only the voxel grids differ
    assert document["flagged"] == []


def _box_labels(volume_ml: float, spacing_mm=(2.0, 2.0, 2.5)) -> Image:
    """A box-shaped 'liver' of (very nearly) the given volume, with a small vessel and tumor inside."""
    voxels = round(volume_ml * 1000.0 / np.prod(spacing_mm))
    side = round(voxels ** (1 / 3)) + 2
    array = np.zeros((side, side, side), np.uint8)
    array.reshape(-1)[:voxels] = 1  # whole slices, then rows of the last one
    array[2, 3, 3:6] = 2
    array[3, 4, 4] = 3
    return Image(array, spacing_mm, (10.0, -20.0, 30.0))


def _result_folder(folder: Path, labels: Image, *, as_slicer_segmentation: bool = False) -> Path:
    folder.mkdir(parents=True)
    if as_slicer_segmentation:
        write_segmentation(labels, folder / "segmentation.seg.nrrd")
    else:
        write_image(labels, folder / "labels.nii.gz")
    (folder / "report.json").write_text(json.dumps({"model": None, "input": {"path": "edited"}}), encoding="utf-8")
    return folder


def test_lvt_volumetry_flags_the_phase_that_deviates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folders = [
        _result_folder(tmp_path / "arterial", _box_labels(1000.0)),
        _result_folder(tmp_path / "portal", _box_labels(1020.0, (1.5, 1.5, 3.0)), as_slicer_segmentation=True),
        _result_folder(tmp_path / "late", _box_labels(1130.0)),
    ]
    out = tmp_path / "volumetry"
    assert run(["volumetry", *map(str, folders), "-o", str(out), "--progress", "none"]) == 0
    assert "flagged" in capsys.readouterr().err
    document = json.loads((out / "volumetry.json").read_text(encoding="utf-8"))
    volumes = [p["liver_volume_ml"] for p in document["phases"]]
    np.testing.assert_allclose(volumes, [1000.0, 1020.0, 1130.0], rtol=0.002)
    assert [p["name"] for p in document["phases"]] == ["arterial", "portal", "late"]
    assert document["flagged"] == ["late"]  # +5.3 % over the mean of 1050 mL
    html = (out / "volumetry.html").read_text(encoding="utf-8")
    assert "late" in html and "flagged" in html and "data:image/png;base64," in html
    assert not (out / "studies").exists()  # result folders are read, not segmented again


def test_lvt_volumetry_refuses_an_existing_output_and_a_single_phase(tmp_path: Path) -> None:
    folder = _result_folder(tmp_path / "a", _box_labels(900.0))
    out = tmp_path / "out"
    out.mkdir()
    assert run(["volumetry", str(folder), str(folder), "-o", str(out), "--progress", "none"]) == 2
    assert run(["volumetry", str(folder), "-o", str(tmp_path / "new"), "--progress", "none"]) == 2
    assert not (tmp_path / "new").exists()
