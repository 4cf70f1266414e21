"""Tumor boundary refinement (morphological Chan-Vese inside the liver): better boundaries, never outside
the liver, and off by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lvt.cli.main import build_parser, run
from lvt.evaluate.metrics import dice_score
from lvt.image import Image
from lvt.io import read_label_image, write_image
from lvt.labels import BACKGROUND_LABEL, LIVER_LABEL, TUMOR_LABEL, VESSEL_LABEL, exclusive_labels
from lvt.phantom import PhantomConfig, make_phantom
from lvt.segment.pipeline import SegmentOptions
from lvt.segment.postprocess import PostprocessConfig, clean_masks, postprocess
from lvt.segment.refine import TumorRefinement, refine_tumors

N = 48
CENTER = 24
RADIUS = 8
LIVER_HU, TUMOR_HU, OUTSIDE_HU = 110.0, 60.0, -100.0


def _distance(center: tuple[int, int, int] = (CENTER, CENTER, CENTER)) -> np.ndarray:
    z, y, x = np.mgrid[:N, :N, :N]
    return np.sqrt((z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2)


def _ct(hu: np.ndarray, seed: int = 0) -> Image:
    """A 1 mm CT of ``hu`` with about one voxel of partial-volume blur and 15 HU noise (phantom-like)."""
    noisy = ndimage.gaussian_filter(hu, 0.7) + np.random.default_rng(seed).normal(0.0, 15.0, hu.shape)
    return Image(noisy.astype(np.float32), (1.0, 1.0, 1.0))


def _liver_block() -> np.ndarray:
    liver = np.zeros((N, N, N), dtype=bool)
    liver[4:-4, 4:-4, 4:-4] = True
    return liver


@pytest.mark.parametrize("initial_radius", [RADIUS - 2, RADIUS + 2])
def test_a_too_small_or_too_large_tumor_mask_moves_to_the_true_sphere(initial_radius: int) -> None:
    liver, truth = _liver_block(), _distance() <= RADIUS
    ct = _ct(np.where(truth, TUMOR_HU, np.where(liver, LIVER_HU, OUTSIDE_HU)))
    labels = np.where(liver, LIVER_LABEL, BACKGROUND_LABEL).astype(np.uint8)
    labels[_distance() <= initial_radius] = TUMOR_LABEL
    refined = refine_tumors(labels, ct, TumorRefinement())
    before, after = dice_score(labels == TUMOR_LABEL, truth), dice_score(refined == TUMOR_LABEL, truth)
    assert before < 0.75 and after > 0.9, (before, after)
    assert np.array_equal(refined == BACKGROUND_LABEL, labels == BACKGROUND_LABEL)  # liver stays liver


def test_a_tumor_never_grows_outside_the_liver_or_into_a_vessel() -> None:
    # The lesion sits on the liver's edge, and the tissue outside the liver (55 HU) looks like it: a
    # contour free to move would follow it out. A vessel labelled by the network crosses the lesion with
    # the lesion's HU (as an unenhanced one would): the contour would take it too, were it allowed.
    liver = _liver_block()
    liver[:, :, CENTER:] = False  # the liver's face at x = CENTER cuts the lesion in half
    truth = (_distance() <= RADIUS) & liver
    vessel = np.zeros_like(liver)
    vessel[CENTER, :, CENTER - 4] = True
    vessel &= liver
    hu = np.where(liver, LIVER_HU, 55.0)
    hu[truth] = TUMOR_HU
    labels = np.where(liver, LIVER_LABEL, BACKGROUND_LABEL).astype(np.uint8)
    labels[(_distance() <= RADIUS - 4) & liver] = TUMOR_LABEL
    labels[vessel] = VESSEL_LABEL
    refined = refine_tumors(labels, _ct(hu), TumorRefinement())
    assert not (refined[~liver] == TUMOR_LABEL).any()
    assert np.array_equal(refined[~liver], labels[~liver]) and np.array_equal(refined == VESSEL_LABEL, vessel)
    before = dice_score(labels == TUMOR_LABEL, truth & ~vessel)
    after = dice_score(refined == TUMOR_LABEL, truth & ~vessel)
    assert before < 0.3 and after > 0.75, (before, after)  # it did grow, inside the liver


def test_an_isodense_tumor_keeps_the_network_mask() -> None:
    liver = _liver_block()
    labels = np.where(liver, LIVER_LABEL, BACKGROUND_LABEL).astype(np.uint8)
    labels[_distance() <= RADIUS] = TUMOR_LABEL
    ct = _ct(np.where(liver, LIVER_HU, OUTSIDE_HU))  # nothing in the CT tells the tumor from the liver
    assert np.array_equal(refine_tumors(labels, ct, TumorRefinement()), labels)


def _probabilities() -> tuple[np.ndarray, Image, np.ndarray]:
    """Network-like probabilities with a tumor too small for the CT's true sphere; the CT; the sphere."""
    liver, truth = _liver_block(), _distance() <= RADIUS
    ct = _ct(np.where(truth, TUMOR_HU, np.where(liver, LIVER_HU, OUTSIDE_HU)))
    probabilities = np.zeros((3, N, N, N), dtype=np.float32)
    probabilities[0][liver] = 0.9
    probabilities[2][_distance() <= RADIUS - 3] = 0.8
    return probabilities, ct, truth


def test_refinement_is_off_by_default_and_on_with_the_option() -> None:
    probabilities, ct, truth = _probabilities()
    assert PostprocessConfig().tumor_refinement is None
    parser = build_parser(("segment",))
    assert SegmentOptions.from_args(parser.parse_args(["segment", "ct.nii.gz", "-o", "out"])).postprocess \
        == PostprocessConfig()
    on = SegmentOptions.from_args(parser.parse_args(["segment", "ct.nii.gz", "-o", "out", "--refine-tumors"]))
    assert on.postprocess.tumor_refinement == TumorRefinement()
    default = postprocess(probabilities, ct).labels
    assert np.array_equal(default, exclusive_labels(clean_masks(probabilities, PostprocessConfig())))  # untouched
    refined = postprocess(probabilities, ct, on.postprocess).labels
    assert dice_score(refined == TUMOR_LABEL, truth) > dice_score(default == TUMOR_LABEL, truth) + 0.2


@pytest.mark.slow
def test_lvt_segment_refine_tumors_says_so_in_the_report(tmp_path: Path, tiny_trained_model: Path) -> None:
    phantom = make_phantom(PhantomConfig(seed=90001, spacing_mm=(6.0, 6.0, 6.0), n_tumors=(2, 2),
                                         tumor_diameter_mm=(30.0, 40.0)))
    write_image(phantom.image, tmp_path / "ct.nii.gz")
    outputs = {}
    for name, extra in (("plain", []), ("refined", ["--refine-tumors"])):
        out = tmp_path / name
        assert run(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(out), "--model", str(tiny_trained_model),
                    "--device", "cpu", "--progress", "none", "--no-surfaces", *extra]) == 0
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        assert report["inference"]["refine_tumors"] is (name == "refined")
        outputs[name] = read_label_image(out / "labels.nii.gz").array
    # refinement moves tumor boundaries only inside the liver: background and vessels are as without it
    for value in (BACKGROUND_LABEL, VESSEL_LABEL):
        assert np.array_equal(outputs["plain"] == value, outputs["refined"] == value)
