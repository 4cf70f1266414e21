"""A liver cut by the scanner's reconstruction circle is reported although it touches no face of the grid."""

from __future__ import annotations

import numpy as np
import pytest

from lvt.image import Image
from lvt.labels import LIVER_LABEL
from lvt.measure.field_of_view import field_of_view_cut_sides, padding_value
from lvt.measure.reliability import reliability_problems
from lvt.measure.volumes_and_lesions import measure_labels

SHAPE = (10, 64, 64)  # k, j, i


def ct_with_circle(outside_hu: float) -> Image:
    """Soft tissue inside an in-plane circle of radius 30 voxels, ``outside_hu`` in the corners."""
    j, i = np.mgrid[: SHAPE[1], : SHAPE[2]]
    inside = (j - 31.5) ** 2 + (i - 31.5) ** 2 <= 30**2
    array = np.where(inside, 40.0, outside_hu)[None].repeat(SHAPE[0], axis=0).astype(np.float32)
    return Image(array, (1.0, 1.0, 2.0))


def liver_at(i_range: slice) -> Image:
    """A liver block in slices 2..7 (never the first or last), rows 24..40, columns ``i_range``."""
    array = np.zeros(SHAPE, np.uint8)
    array[2:8, 24:40, i_range] = LIVER_LABEL
    return Image(array, (1.0, 1.0, 2.0))


def test_liver_reaching_the_circle_on_the_low_i_side_is_cut_on_the_right() -> None:
    ct, labels = ct_with_circle(-3024.0), liver_at(slice(1, 20))  # i = 1 lies outside the circle, inside the grid
    assert padding_value(ct) == -3024.0
    assert field_of_view_cut_sides(ct, labels) == ("right",)  # +i is patient left (LPS), so low i is right
    assert measure_labels(labels).liver_cut_sides == ()  # the grid's faces alone do not show it
    assert measure_labels(labels, ct).liver_cut_sides == ("right",)


def test_flipped_axis_names_the_other_side() -> None:
    ct, labels = ct_with_circle(-2048.0), liver_at(slice(1, 20))
    flip = np.diag([-1.0, 1.0, 1.0])
    ct, labels = (Image(image.array, image.spacing_mm, direction=flip) for image in (ct, labels))
    assert field_of_view_cut_sides(ct, labels) == ("left",)


def test_liver_inside_the_circle_is_not_cut() -> None:
    assert field_of_view_cut_sides(ct_with_circle(-3024.0), liver_at(slice(20, 40))) == ()


@pytest.mark.parametrize("outside_hu", [-1024.0, -1000.0])
def test_padding_as_low_as_air_cannot_be_told_from_air(outside_hu: float) -> None:
    ct = ct_with_circle(outside_hu)
    assert padding_value(ct) is None
    assert field_of_view_cut_sides(ct, liver_at(slice(1, 20))) == ()


def test_report_warns_about_a_liver_cut_by_the_circle() -> None:
    ct, labels = ct_with_circle(-3024.0), liver_at(slice(1, 20))
    report = measure_labels(labels, ct).to_dict()
    problems = " ".join(reliability_problems(report))
    assert "the right edge of the field of view" in problems
