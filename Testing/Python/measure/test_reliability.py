"""What a report says it can be trusted for: no, small or cut liver; the model's real-CT record; readable views.

Every report here is built by the real measure functions from synthetic label maps.
"""

from __future__ import annotations

import csv
import io
import itertools
import json

import matplotlib.image
import numpy as np
import pytest
from conftest import REPO, rotation

from lvt.image import Image
from lvt.measure.html import write_html_report
from lvt.measure.reliability import (
    MIN_LIVER_ML,
    NO_LIVER_ASSESSMENT,
    REAL_CT_METRICS_KEY,
    model_reliability,
    reliability_problems,
)
from lvt.measure.report import build_report
from lvt.measure.views import CORONAL, MIN_SHORT_SIDE_FRACTION, SAGITTAL, TITLE_BAND_PX, render_view_png, view_figure
from lvt.measure.volumes_and_lesions import measure_labels

MANIFEST = REPO / "Resources" / "Models" / "lvt_default.json"
REAL_CASE_RESULTS = REPO / "Testing" / "Benchmarks" / "real_case" / "results.json"


def _grid(shape_kji: tuple[int, int, int], spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
          direction: np.ndarray | None = None) -> Image:
    return Image(np.zeros(shape_kji, np.uint8), spacing, (0.0, 0.0, 0.0), np.eye(3) if direction is None else direction)


def _liver_with_tumor(shape_kji=(40, 60, 60), box=(slice(5, 35), slice(10, 50), slice(10, 50)), **grid) -> Image:
    """A block liver (1296 mL at 3 mm in the default box) with a vessel and a tumor inside."""
    labels = _grid(shape_kji, **grid)
    array = labels.array.copy()
    array[box] = 1
    k, j, i = (s.start for s in box)
    array[k + 2 : k + 8, j + 2 : j + 8, i + 2 : i + 8] = 3
    array[k + 10 : k + 20, j + 20, i + 20] = 2
    return labels.with_array(array)


def _report(labels: Image, model: dict | None = None) -> dict:
    return build_report(input_path="ct.nii.gz", ct_or_labels_grid=labels, measurements=measure_labels(labels),
                        model=model, inference=None, warnings=["3D view not rendered: test"])


@pytest.mark.parametrize(("direction", "expected"), [
    (np.eye(3), ("inferior", "left")),
    (np.diag([-1.0, -1.0, -1.0]), ("superior", "right")),  # flipped: index 0 of k lies superior, last i right
    (rotation(2, 30.0), ("inferior", "left")),  # rotated about S: i still mostly along L
])
def test_liver_cut_by_the_first_slice_and_last_column_names_the_patient_sides(direction, expected):
    labels = _liver_with_tumor(box=(slice(0, 30), slice(10, 50), slice(10, 60)), direction=direction)
    measured = measure_labels(labels)
    assert measured.liver_cut_sides == expected
    assert measure_labels(_liver_with_tumor(direction=direction)).liver_cut_sides == ()


def test_whole_liver_inside_the_image_gives_no_problem():
    report = _report(_liver_with_tumor())
    assert report["liver"]["whole_volume_ml"] == pytest.approx(30 * 40 * 40 * 27 / 1000)
    assert reliability_problems(report) == []
    assert report["liver_cut_by_image_edge"] == []
    assert report["warnings"] == ["3D view not rendered: test"]


def test_no_liver_is_a_warning_first_and_no_negative_lesion_finding(tmp_path):
    labels = _grid((16, 16, 16), spacing=(1.0, 1.0, 1.0))  # a 16x16x16 image: nothing found in it
    ct = labels.with_array(np.full(labels.array.shape, -50.0, np.float32))
    report = _report(labels)
    assert report["warnings"][0].startswith("No liver found in this image")
    assert "not a negative finding" in report["warnings"][0]
    assert report["warnings"][1:] == ["3D view not rendered: test"]
    assert reliability_problems(report) == report["warnings"][:1]

    page = write_html_report(report, ct, labels, None, tmp_path).read_text(encoding="utf-8")
    assert page.count(NO_LIVER_ASSESSMENT) == 2  # instead of the tumor burden and of the lesion table
    assert "No lesion found" not in page and "Number of lesions" not in page
    assert page.index("No liver found in this image") < page.index("For review.")  # at the top
    assert "through the image centre (no liver found)" in page and "through the liver centre" not in page


def test_small_liver_is_a_warning_with_its_volume():
    labels = _grid((40, 60, 60))
    array = labels.array.copy()
    array[10:14, 20:30, 20:30] = 1  # 400 voxels of 27 mm3
    report = _report(labels.with_array(array))
    assert report["liver"]["whole_volume_ml"] == pytest.approx(10.8)
    assert report["warnings"][0].startswith(f"The liver found is only 10.8 mL, under {MIN_LIVER_ML:.0f} mL")
    assert len(reliability_problems(report)) == 1


def test_cut_liver_volume_is_a_lower_bound_in_json_and_html(tmp_path):
    labels = _liver_with_tumor(box=(slice(0, 30), slice(10, 50), slice(10, 50)))
    report = json.loads(json.dumps(_report(labels)))  # what report.json holds
    volume = report["liver"]["whole_volume_ml"]
    assert report["liver_cut_by_image_edge"] == ["inferior"]
    (problem,) = reliability_problems(report)
    assert problem == report["warnings"][0]
    assert "the inferior end of the scan range" in problem and f"({volume:.1f} mL) is a lower bound" in problem

    page = write_html_report(report, None, labels, None, tmp_path).read_text(encoding="utf-8")
    assert f"<td>&ge; {volume:.1f}</td>" in page
    table_end = page.index("</table>", page.index("Whole liver"))
    assert page.index("Lower bound.") == page.index("<p", table_end) + len('<p class="warnings"><strong>')


def test_bundled_manifest_holds_the_real_case_figures_of_the_benchmark():
    figures = json.loads(MANIFEST.read_text(encoding="utf-8"))["metrics"][REAL_CT_METRICS_KEY]
    results = json.loads(REAL_CASE_RESULTS.read_text(encoding="utf-8"))
    rows = {row["class"]: row for row in csv.DictReader(io.StringIO(results["per_case_csv"]))}
    for key in ("liver", "vessel", "tumor"):
        assert figures["dice"][key] == round(float(rows[key]["dice"]), 3)
    assert (figures["lesions_found"], figures["lesions_true"]) == (
        int(rows["tumor"]["detected_lesions"]), int(rows["tumor"]["true_lesions"]))


def test_model_reliability_sentence_from_the_bundled_manifest_in_json_and_html(tmp_path):
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    model = {"name": manifest["name"], "version": manifest["version"], "metrics": manifest["metrics"]}
    labels = _liver_with_tumor()
    report = _report(labels, model)
    expected = ("On 1 real CT with expert labels this model found 1 of 2 tumors (tumor Dice 0.23; liver 0.89, "
                "vessels 0.50): the tumor burden is not a measurement; review every lesion.")
    assert report["model_reliability"] == expected
    assert report["model"] == {"name": "lvt_default", "version": manifest["version"]}

    page = write_html_report(report, None, labels, None, tmp_path).read_text(encoding="utf-8")
    burden = page.index("<h2>Tumor burden</h2>")
    assert burden < page.index(expected) < page.index("Number of lesions")


@pytest.mark.parametrize("metrics", [{}, {"validation_phantoms_model_grid": {"dice": {"tumor": 0.46}}},
                                     {REAL_CT_METRICS_KEY: {"dice": {"tumor": 0.9}, "lesions_true": 2}},
                                     {REAL_CT_METRICS_KEY: {"dice": {"liver": 0.9, "vessel": 0.6, "tumor": 0.5},
                                                            "lesions_true": 0, "lesions_found": 0}}])
def test_model_without_real_ct_figures_says_so(metrics):
    sentence = model_reliability({"name": "m", "version": "1", "metrics": metrics})
    assert sentence == ("This model has no validation on real CT with expert tumor labels: the tumor burden is not a "
                        "measurement; review every lesion.")


def test_model_that_found_every_tumor_well_is_still_to_be_reviewed():
    figures = {"dice": {"liver": 0.96, "vessel": 0.7, "tumor": 0.81}, "lesions_true": 40, "lesions_found": 40,
               "cases": ["a", "b", "c"]}
    sentence = model_reliability({"name": "m", "version": "1", "metrics": {REAL_CT_METRICS_KEY: figures}})
    assert sentence == ("On 3 real CTs with expert labels this model found 40 of 40 tumors (tumor Dice 0.81; "
                        "liver 0.96, vessels 0.70); review every lesion.")
    assert model_reliability(None) is None
    assert _report(_liver_with_tumor())["model_reliability"] is None  # lvt measure: no model ran


def _short_scan() -> tuple[Image, Image]:
    """A CT of 20 slices of 5 mm (100 mm) over a 358 mm field of view, with a liver in it."""
    shape = (20, 128, 128)
    labels = _liver_with_tumor(shape, box=(slice(2, 18), slice(30, 90), slice(20, 80)), spacing=(2.8, 2.8, 5.0))
    ct = labels.with_array(np.where(labels.array > 0, 100.0, 0.0).astype(np.float32))
    return ct, labels


@pytest.mark.parametrize("plane", [CORONAL, SAGITTAL])
def test_views_of_a_short_scan_are_no_strips(plane, tmp_path):
    ct, labels = _short_scan()
    path = render_view_png(ct, labels, plane, np.array([100.0, 170.0, 50.0]), tmp_path / "view.png",
                           title=f"{plane.name.capitalize()}, through the liver centre")
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width == 512  # the long side (358 mm) at the minimum of 512 px
    assert height - TITLE_BAND_PX == round(MIN_SHORT_SIDE_FRACTION * width)  # 100 mm shown in 256 px, not 143


@pytest.mark.parametrize("shape_spacing", [((20, 128, 128), (2.8, 2.8, 5.0)), ((200, 16, 16), (1.0, 1.0, 1.0))])
def test_view_letters_and_title_do_not_overlap(shape_spacing):
    shape, spacing = shape_spacing  # a short wide scan, and a tall narrow one
    labels = _grid(shape, spacing)
    title = "Sagittal, through the image centre (no liver found)"
    for plane in (CORONAL, SAGITTAL):
        figure = view_figure(None, labels, plane, np.zeros(3), title=title)
        renderer = figure.canvas.get_renderer()
        texts = [*figure.texts, *figure.axes[0].texts]
        assert [t.get_text() for t in texts] == [title, *plane.edge_letters]
        boxes = [t.get_window_extent(renderer) for t in texts]
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), plane.name
        for box in boxes:
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= figure.bbox.width and box.y1 <= figure.bbox.height
