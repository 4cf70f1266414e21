"""`lvt measure --resection`: the liver remnant outside a user-drawn region, against an analytic split.

The phantom liver is an ellipsoid (with a vessel and two tumors inside it) on a grid rotated about S;
the resection region is the half-space beyond a plane across the ellipsoid's long axis, so the
remnant is an ellipsoid segment whose volume is known in closed form. The region is given as a label
map and as a "Resection" segment of a Slicer .seg.nrrd (in its own layer, overlapping the liver, as
Slicer stores it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import slicerio
from conftest import rotation

from lvt.cli.main import run
from lvt.image import Image
from lvt.io import write_image, write_segmentation

SEMI_AXES_MM = np.array([55.0, 42.0, 36.0])  # along LPS x, y, z
CUT_X_MM = 12.0  # the region is x > 12 mm (patient left of the plane)
RESECTED_TUMOR_CENTRE, REMNANT_TUMOR_CENTRE = np.array([32.0, 0.0, 0.0]), np.array([-25.0, 8.0, -4.0])



def _centres(grid: Image) -> np.ndarray:
    k, j, i = np.indices(grid.array.shape)
    return grid.ijk_to_lps(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*grid.array.shape, 3)


def _grid() -> Image:
    """A grid rotated 25 degrees about S whose centre voxel is the LPS origin."""
    shape_kji, spacing, direction = (34, 96, 96), (1.4, 1.3, 2.5), rotation(2, 25.0)
    empty = Image(np.zeros(shape_kji, np.uint8), spacing, (0.0, 0.0, 0.0), direction)
    origin = -empty.ijk_to_lps((np.array(shape_kji[::-1]) - 1) / 2.0)[0]
    return Image(empty.array, spacing, tuple(origin), direction)


def _ellipsoid_ml_below(a: float, b: float, c: float, d: float) -> float:
    """Volume of the ellipsoid x²/a² + y²/b² + z²/c² <= 1 where x <= d (mL)."""
    return np.pi * b * c * ((d + a) - (d**3 + a**3) / (3 * a**2)) / 1000.0


@pytest.fixture(scope="module")
def phantom() -> tuple[Image, Image]:
    """(labels, half-space region) on the same grid."""
    grid = _grid()
    points = _centres(grid)
    labels = (np.sum((points / SEMI_AXES_MM) ** 2, axis=-1) <= 1.0).astype(np.uint8)
    vessel = (np.hypot(points[..., 1] + 14.0, points[..., 2] - 6.0) <= 3.0) & (np.abs(points[..., 0]) <= 40.0)
    labels[vessel & (labels > 0)] = 2
    for centre, radius in ((RESECTED_TUMOR_CENTRE, 9.0), (REMNANT_TUMOR_CENTRE, 6.0)):
        labels[np.linalg.norm(points - centre, axis=-1) <= radius] = 3
    region = (points[..., 0] > CUT_X_MM).astype(np.uint8)
    return grid.with_array(labels), grid.with_array(region)


@pytest.fixture(scope="module")
def label_map_run(tmp_path_factory: pytest.TempPathFactory, phantom) -> Path:
    labels, region = phantom
    folder = tmp_path_factory.mktemp("label_map")
    write_image(labels, folder / "labels.nii.gz")
    write_image(region, folder / "resection.nii.gz")
    code = run(["measure", str(folder / "labels.nii.gz"), "--resection", str(folder / "resection.nii.gz"),
                "-o", str(folder / "out"), "--no-surfaces", "--progress", "none"])
    assert code == 0
    return folder / "out"


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_remnant_of_an_ellipsoid_split_by_a_half_space(label_map_run: Path) -> None:
    remnant = _report(label_map_run)["planning"]["remnant"]
    whole_ml = 4.0 / 3.0 * np.pi * np.prod(SEMI_AXES_MM) / 1000.0
    expected_ml = _ellipsoid_ml_below(*SEMI_AXES_MM, CUT_X_MM)
    assert remnant["whole_liver_ml"] == pytest.approx(whole_ml, rel=0.01)
    assert remnant["remnant_ml"] == pytest.approx(expected_ml, rel=0.01)
    assert remnant["remnant_percent"] == pytest.approx(100.0 * expected_ml / whole_ml, abs=1.0)
    assert remnant["remnant_ml"] + remnant["resected_liver_ml"] == pytest.approx(remnant["whole_liver_ml"])


def test_remnant_says_which_tumors_the_region_removes(label_map_run: Path) -> None:
    report = _report(label_map_run)
    remnant = report["planning"]["remnant"]
    lesions = {lesion["id"]: lesion for lesion in report["lesions"]}
    resected = [lesion["id"] for lesion in report["lesions"]
                if np.linalg.norm(np.array(lesion["centroid_lps_mm"]) - RESECTED_TUMOR_CENTRE) < 3.0]
    assert len(lesions) == 2 and len(resected) == 1
    kept = ({1, 2} - set(resected)).pop()
    assert {entry["id"]: entry["fraction_resected"] for entry in remnant["lesions"]} == {resected[0]: 1.0, kept: 0.0}
    assert remnant["tumor_in_remnant_ml"] == pytest.approx(lesions[kept]["volume_ml"])
    assert remnant["source"].endswith("resection.nii.gz")
    assert report["warnings"] == []


def test_report_html_shows_the_remnant_and_each_lesions_vessel_distance(label_map_run: Path) -> None:
    report = _report(label_map_run)
    page = (label_map_run / "report.html").read_text(encoding="utf-8")
    assert "Resection planning" in page
    assert f"{report['planning']['remnant']['remnant_percent']:.1f} %" in page
    for lesion in report["planning"]["lesions"]:
        assert lesion["distance_to_vessels_mm"] is not None
        assert f"<td>{lesion['distance_to_vessels_mm']:.1f}</td>" in page


def _seg_with_resection(folder: Path, labels: Image, region: Image, name: str) -> Path:
    """The core's .seg.nrrd plus a resection segment overlapping the liver (slicerio puts it in a second layer)."""
    path = folder / "edited.seg.nrrd"
    write_segmentation(labels, path)
    segmentation = slicerio.read_segmentation(str(path))
    slicerio.add_segment(segmentation, region.array.transpose(2, 1, 0) > 0, {"id": "Segment_4", "name": name})
    assert segmentation["voxels"].ndim == 4, "the region should overlap the liver, in its own layer"
    slicerio.write_segmentation(str(path), segmentation)
    return path


def test_resection_segment_is_read_from_the_segmentation_itself_in_any_case(tmp_path: Path, phantom,
                                                                           label_map_run: Path) -> None:
    labels, region = phantom
    seg = _seg_with_resection(tmp_path, labels, region, "RESECTION")

    code = run(["measure", str(seg), "--resection-segment", "Resection", "-o", str(tmp_path / "out"),
                "--no-surfaces", "--progress", "none"])

    assert code == 0
    from_segment = _report(tmp_path / "out")
    from_label_map = _report(label_map_run)
    # The same voxels (NIfTI stores the spacing in float32, NRRD as decimal text: hence rel=1e-6).
    assert from_segment["liver"] == pytest.approx(from_label_map["liver"], rel=1e-6)
    remnant, expected = from_segment["planning"]["remnant"], from_label_map["planning"]["remnant"]
    assert remnant["remnant_ml"] == pytest.approx(expected["remnant_ml"], rel=1e-6)
    assert remnant["lesions"] == expected["lesions"]
    assert "'RESECTION'" in remnant["source"]


@pytest.mark.parametrize("case", ["other_study_grid", "empty", "no_such_segment", "segment_of_a_label_map"])
def test_unusable_resection_region_exits_2_naming_the_file(case: str, tmp_path: Path, phantom,
                                                           capsys: pytest.CaptureFixture) -> None:
    labels, region = phantom
    seg = tmp_path / "labels.nii.gz"
    write_image(labels, seg)
    mask = tmp_path / "resection.nii.gz"
    extra: list[str] = []
    if case == "other_study_grid":  # the same voxels 600 mm away: no voxel falls on the segmentation
        write_image(Image(region.array, region.spacing_mm, tuple(np.add(region.origin_lps_mm, 600.0)),
                          region.direction), mask)
        expected = "grid"
    elif case == "empty":
        write_image(region.with_array(np.zeros_like(region.array)), mask)
        expected = "empty"
    elif case == "no_such_segment":
        mask = _seg_with_resection(tmp_path, labels, region, "Left lobe")
        extra, expected = ["--resection-segment", "Resection"], "Left lobe"
    else:
        write_image(region, mask)
        extra, expected = ["--resection-segment", "Resection"], "label map"

    code = run(["measure", str(seg), "--resection", str(mask), *extra, "-o", str(tmp_path / "out"),
                "--no-surfaces", "--progress", "none"])

    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{mask}:" in err and expected in err, err
    assert not (tmp_path / "out").exists()
