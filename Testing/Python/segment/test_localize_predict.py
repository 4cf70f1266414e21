"""The liver-box sliding window with trained models: fewer windows, the same liver, the fallbacks, the flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lvt.cli.main import run as lvt
from lvt.evaluate.metrics import dice_score
from lvt.io import write_image
from lvt.phantom import PhantomConfig, make_phantom
from lvt.segment.localize import body_box
from lvt.segment.model_file import bundled_model_path
from lvt.segment.pipeline import SegmentOptions, segment_image
from lvt.segment.postprocess import liver_region
from lvt.segment.predict import Predictor, SlidingWindowConfig, compute_window_starts

LIVER_BOX = SlidingWindowConfig(liver_box=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def localizing_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained here on 6 mm phantoms, long enough (120 steps) to find a liver at 12 mm as well.

    The shared tiny model (30 steps) calls most of the body liver, so it cannot show a liver box.
    """
    from lvt.train.config import training_config_from_dict
    from lvt.train.loop import run_training

    folder = tmp_path_factory.mktemp("localizing-model")
    config = training_config_from_dict({
        "model_name": "localizing", "output_dir": str(folder / "run"), "spacing_mm": [6.0, 6.0, 6.0],
        "patch_size_zyx": [32, 32, 32], "batch_size": 2, "steps": 120, "validate_every": 120, "seed": 5,
        "network": {"features_per_stage": [8, 16, 32], "deep_supervision_levels": 2},
        "optimizer": {"learning_rate": 0.01, "warmup_steps": 2},
        "datasets": [{"name": "ph", "kind": "phantom", "annotated": [1, 1, 1],
                      "phantom": {"count": 3, "seed": 21, "spacing_mm": [6.0, 6.0, 6.0]}}],
    }, folder, source="localizing model fixture")
    torch.manual_seed(0)
    return run_training(config, device="cpu").final_model


@pytest.fixture(scope="module")
def long_scan() -> np.ndarray:
    """A 500 mm long, wide scan at 6 mm: the liver is a small part of it."""
    config = PhantomConfig(seed=3, spacing_mm=(6.0, 6.0, 6.0), field_of_view_mm=(420.0, 340.0, 500.0))
    return make_phantom(config).image.array


def test_window_count_falls_when_the_liver_is_a_small_part_of_the_image(localizing_model: Path,
                                                                        long_scan: np.ndarray) -> None:
    full, full_stats = Predictor.from_file(localizing_model, "cpu").predict_probabilities(long_scan)
    predictor = Predictor.from_file(localizing_model, "cpu", LIVER_BOX)
    boxed, stats = predictor.predict_probabilities(long_scan)
    assert full_stats.mode == "full" and stats.mode == "liver box"
    assert 0 < stats.windows_computed < full_stats.windows_computed
    assert stats.windows_outside_liver_box == full_stats.windows_computed - stats.windows_computed
    assert stats.windows_skipped_air == full_stats.windows_skipped_air
    assert stats.windows_localize >= 1 and stats.forward_passes == stats.windows_computed + stats.windows_localize
    box, body = predictor.liver_box(long_scan), body_box(long_scan, -500.0, (32, 32, 32))
    reached = boxed.max(axis=0) > 0
    saved_on = []
    for axis, (inner, outer) in enumerate(zip(box, body, strict=True)):
        if len(compute_window_starts(inner.stop - inner.start, 32, 0.5)) < \
                len(compute_window_starts(outer.stop - outer.start, 32, 0.5)):
            saved_on.append(axis)  # no window beyond the liver box along this axis
            beyond = np.ones(long_scan.shape[axis], dtype=bool)
            beyond[inner] = False
            assert not np.take(reached, np.flatnonzero(beyond), axis=axis).any()
    assert saved_on
    assert (liver_region(boxed) & liver_region(full)).sum() > 0.5 * liver_region(full).sum()


def test_no_liver_in_the_first_pass_falls_back_to_the_full_sliding_window(localizing_model: Path) -> None:
    """A block of fat (no liver for this model at 12 mm) larger than a window along x."""
    hu = np.full((40, 40, 90), -1000.0, dtype=np.float32)
    hu[4:36, 4:36, 4:86] = -100.0 + np.random.default_rng(0).normal(0.0, 20.0, (32, 32, 82))
    full, full_stats = Predictor.from_file(localizing_model, "cpu").predict_probabilities(hu)
    fallback, stats = Predictor.from_file(localizing_model, "cpu", LIVER_BOX).predict_probabilities(hu)
    assert stats.mode == "full: the first pass found no liver"
    assert stats.windows_computed == full_stats.windows_computed >= 3 and stats.windows_localize >= 1
    np.testing.assert_array_equal(fallback, full)


def test_the_full_window_flag_forces_the_full_sliding_window(localizing_model: Path, long_scan: np.ndarray,
                                                             tmp_path: Path) -> None:
    ct = tmp_path / "long.nii.gz"
    config = PhantomConfig(seed=3, spacing_mm=(6.0, 6.0, 6.0), field_of_view_mm=(420.0, 340.0, 500.0))
    write_image(make_phantom(config).image, ct)
    inference = {}
    for name, flags in (("box", []), ("full", ["--full-window"])):
        args = ["segment", str(ct), "-o", str(tmp_path / name), "--model", str(localizing_model), "--device", "cpu",
                "--no-surfaces", "--progress", "none", *flags]
        assert lvt(args) == 0
        inference[name] = json.loads((tmp_path / name / "report.json").read_text(encoding="utf-8"))["inference"]
    assert inference["full"]["sliding_window"] == "full" and inference["box"]["sliding_window"] == "liver box"
    assert inference["full"]["windows_localize"] == inference["full"]["windows_outside_liver_box"] == 0
    assert inference["box"]["windows_computed"] + inference["box"]["windows_outside_liver_box"] \
        == inference["full"]["windows_computed"]
    assert SegmentOptions.from_args(object()).full_window is False


@pytest.mark.slow
def test_the_liver_box_keeps_the_liver_labels_of_the_full_sliding_window() -> None:
    """The bundled model on a 2 mm phantom 400 mm long whose field of view holds the liver side of the body.

    The liver box moves the windows along z, which flips labels only where the model is unsure, at
    the liver's edge: measured 1.2 % of the full run's liver voxels (liver Dice 0.99 between the
    runs); Testing/Benchmarks/inference/liver_box_windows.md measures the real CTs.
    """
    config = PhantomConfig(seed=11, field_of_view_mm=(190.0, 190.0, 400.0), center_lps_mm=(-60.0, 0.0, 0.0))
    ct = make_phantom(config).image
    full = segment_image(ct, Predictor.from_file(bundled_model_path(), "cpu"))
    boxed = segment_image(ct, Predictor.from_file(bundled_model_path(), "cpu", LIVER_BOX))
    assert boxed.window_stats.mode == "liver box"
    assert boxed.window_stats.windows_computed < full.window_stats.windows_computed
    liver = full.labels.array > 0
    assert ((full.labels.array != boxed.labels.array) & liver).sum() < 0.02 * liver.sum()
    assert dice_score(boxed.labels.array > 0, liver) > 0.98
