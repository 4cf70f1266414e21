"""Sliding-window inference: window placement, Gaussian weights, air skipping, batching, TTA, MONAI agreement."""

from __future__ import annotations

import itertools
import math
import os
import threading

import numpy as np
import pytest
import torch

from lvt.errors import CancelledError
from lvt.labels import exclusive_labels
from lvt.phantom import PhantomConfig, make_phantom
from lvt.segment.device import available_cpu_cores
from lvt.segment.model_file import ModelManifest
from lvt.segment.network import NetworkConfig, build_network
from lvt.segment.postprocess import decode_masks
from lvt.segment.predict import (
    Predictor,
    SlidingWindowConfig,
    body_box,
    compute_window_starts,
    count_windows,
    gaussian_importance_map,
)
from lvt.segment.window import Window, apply_window

PATCH = (16, 16, 16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantom_beside_air() -> np.ndarray:
    """A coarse (12 mm) phantom with 480 mm of air added on its left: whole windows of nothing but air."""
    hu = make_phantom(PhantomConfig(seed=3, spacing_mm=(12.0, 12.0, 12.0), n_tumors=(1, 2))).image.array
    return np.pad(hu, ((0, 0), (0, 0), (0, 40)), constant_values=-1000.0)


def _predictor(config: SlidingWindowConfig | None = None, patch: tuple[int, int, int] = PATCH, seed: int = 0,
               head: str = "sigmoid") -> Predictor:
    """A real (untrained, seeded) small U-Net: sliding-window arithmetic does not depend on the weights."""
    torch.manual_seed(seed)
    network_config = NetworkConfig(features_per_stage=(4, 8, 16), deep_supervision_levels=2, head=head)
    manifest = ModelManifest(name="t", version="0", spacing_mm=(6.0, 6.0, 6.0), patch_size_zyx=patch,
                             window=Window(), network=network_config, target="mc" if head == "softmax" else "ml")
    return Predictor(build_network(network_config), manifest, torch.device("cpu"), config)


def _random_hu(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(40.0, 150.0, shape).astype(np.float32)


def test_window_starts_worked_example_and_small_images() -> None:
    assert compute_window_starts(110, 64, 0.5) == [0, 23, 46]
    assert compute_window_starts(64, 64, 0.5) == [0]
    assert compute_window_starts(20, 64, 0.5) == [0]
    assert compute_window_starts(191, 96, 0.5) == [0, 48, 95]


@pytest.mark.parametrize(("size", "patch", "overlap"), [(65, 64, 0.5), (300, 96, 0.5), (191, 96, 0.5),
                                                        (97, 32, 0.25), (1000, 128, 0.5)])
def test_window_starts_cover_the_image_with_the_fewest_windows_at_the_overlap(size: int, patch: int,
                                                                            overlap: float) -> None:
    starts = compute_window_starts(size, patch, overlap)
    steps = np.diff(starts)
    assert starts[0] == 0 and starts[-1] == size - patch
    assert steps.max() <= math.ceil(patch * (1 - overlap))  # neighbours overlap by at least the fraction asked
    assert steps.max() - steps.min() <= 1  # evenly spread
    if len(starts) > 2:  # one window fewer could not keep the overlap
        assert (size - patch) / (len(starts) - 2) > patch * (1 - overlap)


def test_gaussian_map_is_never_zero_peaks_at_one_and_is_mirror_symmetric() -> None:
    weights = gaussian_importance_map((96, 96, 64))
    assert weights.dtype == np.float32 and weights.shape == (96, 96, 64)
    assert weights.min() >= 1e-3 - 1e-9 and weights.max() == pytest.approx(1.0)
    for axis in range(3):
        np.testing.assert_array_equal(weights, np.flip(weights, axis))
    centre, corner = weights[47, 47, 31], weights[0, 0, 0]
    assert centre > 0.99 and corner < 2e-3


def test_gaussian_map_is_monais_up_to_a_constant() -> None:
    monai_utils = pytest.importorskip("monai.data.utils")
    theirs = monai_utils.compute_importance_map((32, 48, 40), mode="gaussian", sigma_scale=0.125).numpy()
    np.testing.assert_allclose(gaussian_importance_map((32, 48, 40)), theirs / theirs.max(), rtol=1e-5)


@pytest.mark.parametrize("shape", [(32, 40, 24), (10, 40, 20)])
def test_probabilities_agree_with_monai_sliding_window(shape: tuple[int, int, int]) -> None:
    """Same windows, same weights: MONAI's Gaussian sliding window gives our probabilities to 1e-5.

    (32, 40, 24): every axis takes the same window starts under both rules; (10, 40, 20): smaller
    than the patch, padded with air the same way by both.
    """
    inferers = pytest.importorskip("monai.inferers")
    predictor = _predictor(SlidingWindowConfig(skip_air_windows=False, windows_per_batch=2))
    hu = _random_hu(shape)
    ours, stats = predictor.predict_probabilities(hu)
    with torch.inference_mode():
        windowed = apply_window(torch.from_numpy(hu)[None, None], predictor.manifest.window)
        logits = inferers.sliding_window_inference(windowed, PATCH, 2, predictor.network, overlap=0.5, mode="gaussian")
    theirs = torch.sigmoid(logits)[0].numpy()
    assert ours.shape == (3, *shape) and ours.dtype == np.float32
    assert stats.windows_computed == stats.windows_total == math.prod(
        len(compute_window_starts(max(s, p), p, 0.5)) for s, p in zip(shape, PATCH, strict=True))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_windows_per_batch_does_not_change_the_result() -> None:
    hu = _random_hu((40, 30, 24))
    one, stats_one = _predictor(SlidingWindowConfig(windows_per_batch=1)).predict_probabilities(hu)
    five, stats_five = _predictor(SlidingWindowConfig(windows_per_batch=5)).predict_probabilities(hu)
    assert stats_one.windows_computed == stats_five.windows_computed == 4 * 3 * 2  # 4 batches of 5 and one of 4
    np.testing.assert_allclose(one, five, atol=1e-5)


def test_air_windows_are_skipped_and_change_nothing_that_a_computed_window_covers(
        phantom_beside_air: np.ndarray) -> None:
    hu = phantom_beside_air
    skipping, stats = _predictor(SlidingWindowConfig(crop_to_body=False)).predict_probabilities(hu)
    full, stats_full = _predictor(SlidingWindowConfig(skip_air_windows=False, crop_to_body=False)
                                  ).predict_probabilities(hu)
    starts = list(itertools.product(*(compute_window_starts(s, p, 0.5) for s, p in zip(hu.shape, PATCH, strict=True))))
    air = [s for s in starts if hu[tuple(slice(a, a + p) for a, p in zip(s, PATCH, strict=True))].max() < -500]
    assert 0 < stats.windows_skipped_air == len(air) < len(starts)
    assert stats.windows_computed == len(starts) - len(air) and stats_full.windows_computed == len(starts)
    touched_by_air = np.zeros(hu.shape, dtype=bool)
    for start in air:
        touched_by_air[tuple(slice(a, a + p) for a, p in zip(start, PATCH, strict=True))] = True
    assert (hu[~touched_by_air] > -500).any()  # the body lies where only computed windows reach
    np.testing.assert_array_equal(skipping[:, ~touched_by_air], full[:, ~touched_by_air])
    computed = np.zeros(hu.shape, dtype=bool)
    for start in set(starts) - set(air):
        computed[tuple(slice(a, a + p) for a, p in zip(start, PATCH, strict=True))] = True
    assert (skipping[:, ~computed] < 0.5).all()  # air no computed window reached is background


def test_body_box_holds_the_body_and_is_grown_to_a_patch_inside_the_image() -> None:
    hu = np.full((30, 40, 50), -1000.0, dtype=np.float32)
    hu[10:12, 5:30, 45:50] = 40.0
    assert body_box(hu, -500.0, (16, 16, 16)) == (slice(3, 19), slice(5, 30), slice(34, 50))
    assert body_box(hu, -500.0, (30, 1, 1)) == (slice(0, 30), slice(5, 30), slice(45, 50))
    assert body_box(np.full((20, 20, 20), -1000.0), -500.0, (16, 16, 16)) is None


def test_cropping_to_the_body_equals_a_sliding_window_over_the_body_box(phantom_beside_air: np.ndarray) -> None:
    hu = phantom_beside_air
    cropped, stats = _predictor(SlidingWindowConfig()).predict_probabilities(hu)
    box = body_box(hu, -500.0, PATCH)
    assert (hu > -500).sum() == (hu[box] > -500).sum() and box[2].stop - box[2].start < hu.shape[2] - 16
    inside, inside_stats = _predictor(SlidingWindowConfig(crop_to_body=False)).predict_probabilities(hu[box])
    np.testing.assert_array_equal(cropped[(slice(None), *box)], inside)
    outside = np.ones(hu.shape, dtype=bool)
    outside[box] = False
    assert not cropped[:, outside].any()
    assert stats.windows_computed == inside_stats.windows_computed
    assert stats.windows_total == count_windows(hu.shape, PATCH, 0.5)
    assert stats.windows_skipped_air == stats.windows_total - stats.windows_computed > 0


def test_tta_makes_the_prediction_commute_with_flips() -> None:
    """Averaging all flips (with a symmetric Gaussian and symmetric window starts) is flip-equivariant;
    a plain pass of the same untrained network is not, so the check has teeth."""
    hu = _random_hu((32, 40, 24))
    tta = _predictor(SlidingWindowConfig(use_tta=True, skip_air_windows=False))
    plain = _predictor(SlidingWindowConfig(skip_air_windows=False))
    reference_tta, stats = tta.predict_probabilities(hu)
    reference_plain, _ = plain.predict_probabilities(hu)
    for axes in [(0,), (1, 2), (0, 1, 2)]:
        flipped = np.ascontiguousarray(np.flip(hu, axes))
        spatial = tuple(a + 1 for a in axes)
        np.testing.assert_allclose(np.flip(tta.predict_probabilities(flipped)[0], spatial), reference_tta, atol=2e-5)
        assert np.abs(np.flip(plain.predict_probabilities(flipped)[0], spatial) - reference_plain).max() > 1e-3
    assert stats.forward_passes == 8 * stats.windows_computed


def test_softmax_head_gives_three_foreground_probabilities() -> None:
    probabilities, _ = _predictor(SlidingWindowConfig(), head="softmax").predict_probabilities(_random_hu((20, 20, 20)))
    assert probabilities.shape == (3, 20, 20, 20)
    assert (probabilities >= 0).all() and (probabilities.sum(axis=0) < 1.0).all()


def test_softmax_predictions_decode_to_the_networks_argmax() -> None:
    """One window: the stitched probabilities are the network's softmax, and MC decoding takes its argmax
    over background and the three classes (an untrained 4-way softmax rarely reaches 0.5 anywhere)."""
    predictor = _predictor(SlidingWindowConfig(skip_air_windows=False), head="softmax")
    hu = _random_hu(PATCH)
    probabilities, _ = predictor.predict_probabilities(hu)
    with torch.inference_mode():
        logits = predictor.network(apply_window(torch.from_numpy(hu)[None, None], predictor.manifest.window))
    argmax = logits[0].argmax(dim=0).numpy()  # 0 background, k + 1 class k: the label values
    assert len(np.unique(argmax)) == 4
    np.testing.assert_array_equal(exclusive_labels(decode_masks(probabilities, predictor.manifest.target)), argmax)


def test_cancel_stops_before_the_next_batch() -> None:
    cancel = threading.Event()
    seen = []

    def progress(event: object) -> None:
        seen.append(event)
        cancel.set()

    with pytest.raises(CancelledError):
        _predictor(SlidingWindowConfig()).predict_probabilities(_random_hu((40, 40, 40)), progress, cancel)
    assert [event.done for event in seen] == [0]  # the announcement; no batch ran after the cancel


def test_config_validation_and_device_defaults() -> None:
    with pytest.raises(ValueError, match="windows_per_batch"):
        SlidingWindowConfig(windows_per_batch=0)
    with pytest.raises(ValueError, match="overlap"):
        SlidingWindowConfig(overlap=1.0)
    assert SlidingWindowConfig().batch_size_for(torch.device("cpu")) == 1
    assert SlidingWindowConfig().batch_size_for(torch.device("cuda")) == 4
    assert SlidingWindowConfig(windows_per_batch=3).batch_size_for(torch.device("cpu")) == 3
    assert 1 <= available_cpu_cores() <= len(os.sched_getaffinity(0))
