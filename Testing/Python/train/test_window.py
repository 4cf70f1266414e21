"""Random windowing: the authors' base window, their ranges, and a total probability p = 0.3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lvt.segment.window import RandomWindowing, Window, apply_window, apply_windows_batch, sample_windows
from lvt.train.config import AugmentConfig

DRAWS = 40000


def test_defaults_are_the_authors_base_window_ranges_and_total_probability() -> None:
    assert Window() == Window(level_hu=87.1, width_hu=217.3)  # RandomWindower's base_window (width, level)
    windowing = AugmentConfig().random_windowing
    assert windowing == RandomWindowing(0.3, (11.5, 152.9), (141.2, 325.9))


def test_a_window_is_randomised_with_total_probability_p_shift_and_scale_independently() -> None:
    base = Window()
    levels, widths = sample_windows(DRAWS, base, RandomWindowing(), torch.Generator().manual_seed(7))
    shifted = (levels != base.level_hu).numpy()
    scaled = (widths != base.width_hu).numpy()
    each = 1 - np.sqrt(0.7)
    assert abs((shifted | scaled).mean() - 0.3) < 0.01
    assert abs(shifted.mean() - each) < 0.01 and abs(scaled.mean() - each) < 0.01
    assert abs((shifted & scaled).mean() - each**2) < 0.005  # independent: both at once as often as the product
    drawn_levels, drawn_widths = levels.numpy()[shifted], widths.numpy()[scaled]
    assert drawn_levels.min() >= 11.5 and drawn_levels.max() <= 152.9
    assert drawn_widths.min() >= 141.2 and drawn_widths.max() <= 325.9
    # uniform over the range: each quarter of it holds about a quarter of the draws
    for values, (low, high) in ((drawn_levels, (11.5, 152.9)), (drawn_widths, (141.2, 325.9))):
        counts, _ = np.histogram(values, bins=4, range=(low, high))
        assert np.all(np.abs(counts / len(values) - 0.25) < 0.03)
    assert np.all(levels.numpy()[~shifted] == np.float32(base.level_hu))
    assert np.all(widths.numpy()[~scaled] == np.float32(base.width_hu))


@pytest.mark.parametrize("augmentation", [None, RandomWindowing(probability=0.0)])
def test_without_random_windowing_every_sample_gets_the_fixed_window(augmentation: RandomWindowing | None) -> None:
    levels, widths = sample_windows(500, Window(40.0, 400.0), augmentation, torch.Generator().manual_seed(0))
    assert torch.all(levels == 40.0) and torch.all(widths == 400.0)


def test_the_same_seed_draws_the_same_windows() -> None:
    first = sample_windows(64, Window(), RandomWindowing(), torch.Generator().manual_seed(3))
    second = sample_windows(64, Window(), RandomWindowing(), torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_window_edges_map_to_zero_and_one_per_sample() -> None:
    levels, widths = torch.tensor([87.1, 40.0]), torch.tensor([217.3, 100.0])
    hu = torch.tensor([-1000.0, 87.1 - 217.3 / 2, 87.1, 87.1 + 217.3 / 2, 2000.0])
    batch = apply_windows_batch(hu.expand(2, 1, 5).clone(), levels, widths)
    np.testing.assert_allclose(batch[0, 0].numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(batch[1, 0].numpy(), apply_window(hu.numpy(), Window(40.0, 100.0)), atol=1e-6)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"probability": 1.5}, "probability"),
    ({"level_range_hu": (152.9, 11.5)}, "level range"),
    ({"width_range_hu": (-10.0, 100.0)}, "widths must be positive"),
])
def test_bad_random_windowing_settings_are_rejected(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RandomWindowing(**arguments)
