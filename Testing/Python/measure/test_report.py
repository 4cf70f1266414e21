"""Tests for lvt.measure.report, html and views: report.json schema and round trip, the page, its views' orientation."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
from conftest import rotation

import lvt.measure.html
from lvt.image import Image
from lvt.measure.html import REVIEW_NOTE, write_html_report
from lvt.measure.report import build_report, write_report_json
from lvt.measure.surface_view import OffscreenRenderingError, check_offscreen_rendering
from lvt.measure.surfaces import extract_surfaces
from lvt.measure.views import AXIAL, CORONAL, MIN_SHORT_SIDE_FRACTION, SAGITTAL, TITLE_BAND_PX, view_through
from lvt.measure.volumes_and_lesions import measure_labels

SCHEMA_KEYS = {"lvt_version", "model", "input", "liver", "liver_cut_by_image_edge", "vessels", "tumors", "lesions",
               "inference", "model_reliability", "warnings"}
TUMOR_CENTRE_LPS = np.array([-60.0, -25.0, 20.0])  # patient's right, anterior, superior of the middle



def _phantom(direction: np.ndarray) -> tuple[Image, Image]:
    """A CT-like image and its labels: body, spine, an ellipsoid liver on the right, two tumors, a vessel.

    The grid centre is at LPS (0, 0, 0); the big tumor sits on the patient's right, anterior and
    superior, so every view has a known side to find it on.
    """
    shape_kji, spacing = (36, 96, 104), (2.6, 2.4, 4.0)
    grid = Image(np.zeros(shape_kji, np.int16), spacing, (0.0, 0.0, 0.0), direction)
    grid = Image(grid.array, spacing, tuple(-grid.ijk_to_lps((np.array(shape_kji[::-1]) - 1) / 2.0)[0]), direction)
    k, j, i = np.indices(shape_kji)
    x, y, z = np.moveaxis(grid.ijk_to_lps(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(*shape_kji, 3), -1, 0)
    liver = ((x + 40) / 75) ** 2 + ((y + 10) / 55) ** 2 + (z / 60) ** 2 <= 1
    big_tumor = np.square(np.stack([x, y, z], -1) - TUMOR_CENTRE_LPS).sum(-1) <= 16.0**2
    small_tumor = (x + 10) ** 2 + (y - 10) ** 2 + (z + 25) ** 2 <= 8.0**2
    vessel = ((x + 35) ** 2 + (y + 5) ** 2 <= 5.0**2) & liver
    labels = np.zeros(shape_kji, np.uint8)
    labels[liver] = 1
    labels[vessel] = 2
    labels[(big_tumor | small_tumor) & liver] = 3
    ct = np.where((x / 125) ** 2 + (y / 95) ** 2 <= 1, 45.0, -1000.0)
    ct[(x**2 + (y - 60) ** 2) <= 14**2] = 700.0
    ct[labels == 1], ct[labels == 2], ct[labels == 3] = 115.0, 180.0, 60.0
    ct += np.random.default_rng(7).normal(0.0, 12.0, shape_kji)
    return grid.with_array(ct.astype(np.int16)), grid.with_array(labels)


@pytest.fixture(scope="module")
def phantom() -> tuple[Image, Image]:
    return _phantom(rotation(2, 20.0) @ np.diag([-1.0, 1.0, -1.0]))


def _report(labels: Image, **overrides) -> dict:
    arguments = {
        "input_path": "/data/case 01/ct.nii.gz",
        "ct_or_labels_grid": labels,
        "measurements": measure_labels(labels),
        "model": {"name": "lvt-test", "version": "1.2", "sha256": "ignored"},
        "inference": {"device": "cpu", "tta": np.bool_(False), "timings_s": {"inference": np.float32(1.5)}},
        "dropped": [{"volume_ml": 0.01, "centroid_lps_mm": (1.0, 2.0, 3.0)}],
        "min_volume_ml": 0.1,
        "warnings": ["a <b>bold</b> warning"],
    }
    return build_report(**{**arguments, **overrides})


def _green(rgb: np.ndarray) -> np.ndarray:
    """Pixels tinted by the tumor colour (144, 238, 144) over grey CT."""
    return (rgb[..., 1] - rgb[..., 0] > 0.08) & (rgb[..., 1] - rgb[..., 2] > 0.08)


def test_report_json_round_trips_with_the_schema_keys(phantom, tmp_path):
    _, labels = phantom
    report = _report(labels)
    path = write_report_json(report, tmp_path / "report.json")
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert loaded == report
    assert set(loaded) == SCHEMA_KEYS
    assert loaded["model"] == {"name": "lvt-test", "version": "1.2"}
    assert set(loaded["input"]) == {"path", "size_ijk", "spacing_mm", "origin_lps_mm", "direction"}
    assert loaded["input"]["size_ijk"] == [104, 96, 36]
    assert np.allclose(loaded["input"]["direction"], labels.direction)  # row-major 3x3
    assert loaded["inference"]["timings_s"]["inference"] == 1.5
    assert loaded["tumors"]["count"] == 2 and len(loaded["lesions"]) == 2
    assert loaded["tumors"]["dropped"][0]["centroid_lps_mm"] == [1.0, 2.0, 3.0]
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_measure_only_report_has_null_model_and_inference(phantom):
    _, labels = phantom
    report = _report(labels, model=None, inference=None, dropped=(), warnings=())
    assert report["model"] is None and report["inference"] is None
    assert report["tumors"]["dropped"] == [] and report["warnings"] == []
    json.dumps(report, allow_nan=False)  # plain JSON types only
    with pytest.raises(ValueError, match="version"):
        _report(labels, model={"name": "no version"})


def test_html_report_lists_every_lesion_and_the_review_note(phantom, tmp_path):
    ct, labels = phantom
    report = _report(labels)
    page = write_html_report(report, ct, labels, None, tmp_path).read_text(encoding="utf-8")
    assert report["lesions"]
    for lesion in report["lesions"]:
        assert f"<td>{lesion['longest_axial_diameter_mm']:.1f}</td>" in page
        assert f"<td>{lesion['short_axis_diameter_mm']:.1f}</td>" in page
        assert f"<td>{lesion['volume_ml']:.2f}</td>" in page
    assert f"{report['liver']['whole_volume_ml']:.1f}" in page
    assert REVIEW_NOTE in page
    assert "lvt-test 1.2" in page
    assert "a &lt;b&gt;bold&lt;/b&gt; warning" in page and "<b>bold</b>" not in page
    assert page.count("data:image/png;base64,") == 6  # no surfaces given: no 3D view


def test_views_are_pngs_in_radiological_orientation_with_true_proportions(phantom, tmp_path):
    ct, labels = phantom
    report = _report(labels)
    write_html_report(report, ct, labels, None, tmp_path)
    views = tmp_path / "views"
    assert sorted(p.name for p in views.iterdir()) == sorted(
        f"{where}_{plane}.png" for where in ("lesion1", "liver") for plane in ("axial", "coronal", "sagittal")
    )
    for plane in (AXIAL, CORONAL, SAGITTAL):
        png = matplotlib.image.imread(views / f"lesion1_{plane.name}.png")[..., :3]
        rgb = png[TITLE_BAND_PX:]  # the title band is above the image
        expected = view_through(ct, plane, TUMOR_CENTRE_LPS)
        assert rgb.shape[:2] == expected.shape
        assert not _green(png[:TITLE_BAND_PX]).any()
        rows, cols = np.nonzero(_green(rgb))
        height, width = rgb.shape[:2]
        # right (axial, coronal) or anterior (sagittal) on the left; anterior or superior up
        assert cols.mean() < width / 2, plane.name
        assert rows.mean() < height / 2, plane.name
        assert np.allclose([cols.mean(), rows.mean()], expected.to_pixel(TUMOR_CENTRE_LPS)[0], atol=4.0)
    coronal = view_through(ct, CORONAL, TUMOR_CENTRE_LPS)
    corners = ct.ijk_to_lps(np.array([[a, b, c] for a in (-0.5, 103.5) for b in (-0.5, 95.5) for c in (-0.5, 35.5)]))
    physical_ratio = np.ptp(corners[:, 2]) / np.ptp(corners[:, 0])
    assert physical_ratio < MIN_SHORT_SIDE_FRACTION  # so the view is widened with background, in proportion
    assert coronal.shape[0] / coronal.shape[1] == pytest.approx(MIN_SHORT_SIDE_FRACTION, abs=2.0 / coronal.shape[1])


def test_axial_lesion_view_draws_the_longest_diameter(phantom, tmp_path):
    ct, labels = phantom
    report = _report(labels)
    write_html_report(report, ct, labels, None, tmp_path)
    rgb = matplotlib.image.imread(tmp_path / "views" / "lesion1_axial.png")[TITLE_BAND_PX:, :, :3]
    ends = np.asarray(report["lesions"][0]["long_axis_endpoints_lps_mm"])
    view = view_through(ct, AXIAL, ends.mean(axis=0))
    yellow = (rgb[..., 0] > 0.85) & (rgb[..., 1] > 0.7) & (rgb[..., 2] < 0.35)
    for fraction in (0.25, 0.5, 0.75):
        col, row = np.round(view.to_pixel(ends[0] + fraction * (ends[1] - ends[0]))[0]).astype(int)
        assert yellow[row - 2 : row + 3, col - 2 : col + 3].any()
    no_line = matplotlib.image.imread(tmp_path / "views" / "liver_coronal.png")[..., :3]
    assert not ((no_line[..., 0] > 0.85) & (no_line[..., 1] > 0.7) & (no_line[..., 2] < 0.35)).any()


def test_three_d_view_is_rendered_when_the_machine_can(phantom, tmp_path):
    try:
        check_offscreen_rendering()
    except OffscreenRenderingError as error:
        pytest.skip(str(error))
    ct, labels = phantom
    report = _report(labels, warnings=[])
    page = write_html_report(report, ct, labels, extract_surfaces(labels), tmp_path).read_text(encoding="utf-8")
    image = matplotlib.image.imread(tmp_path / "views" / "surfaces_3d.png")
    assert image.shape[0] > 100 and _green(image[..., :3]).any()
    assert page.count("data:image/png;base64,") == 7
    assert report["warnings"] == []


def test_missing_3d_renderer_gives_a_warning_not_a_failure(phantom, tmp_path, monkeypatch):
    def no_opengl(*_args, **_kwargs):
        raise OffscreenRenderingError("no EGL here")

    monkeypatch.setattr(lvt.measure.html, "render_surfaces_png", no_opengl)
    labels = phantom[1]
    report = _report(labels, warnings=[])
    page = write_html_report(report, None, labels, {"liver": object()}, tmp_path).read_text(encoding="utf-8")
    assert report["warnings"] == ["3D view not rendered: no EGL here"]
    assert "3D view not rendered: no EGL here" in page
    assert not (tmp_path / "views" / "surfaces_3d.png").exists()
    assert (tmp_path / "views" / "liver_axial.png").exists()  # views without a CT: labels on black
