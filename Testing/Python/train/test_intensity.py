"""Intensity augmentation: each transform does what it says, draws stay in range, off means untouched."""

from __future__ import annotations

import pytest
import torch

from lvt.errors import InputError
from lvt.train.config import IntensityAugment, training_config_from_dict
from lvt.train.intensity import COLUMNS, IDENTITY, augment_hu, augment_windowed, draw_intensity_params


def _params(**values: float) -> torch.Tensor:
    row = dict(zip(COLUMNS, IDENTITY, strict=True)) | values
    return torch.tensor([[row[name] for name in COLUMNS]])


def _volume(value: float = 50.0, size: int = 24) -> torch.Tensor:
    return torch.full((1, 1, size, size, size), value)


def test_draws_stay_in_their_ranges_and_probability_zero_keeps_identity() -> None:
    always = IntensityAugment(**{name: (1.0, (0.6, 0.9)) for name in COLUMNS})
    params, _ = draw_intensity_params(500, always, torch.Generator().manual_seed(0))
    assert float(params.min()) >= 0.6 and float(params.max()) <= 0.9
    never = IntensityAugment(**{name: (0.0, (0.6, 0.9)) for name in COLUMNS})
    params, _ = draw_intensity_params(50, never, torch.Generator().manual_seed(0))
    assert torch.equal(params, torch.tensor(IDENTITY).repeat(50, 1))
    share = IntensityAugment(gamma=(0.3, (0.7, 1.5)))
    drawn, _ = draw_intensity_params(4000, share, torch.Generator().manual_seed(1))
    assert abs(float((drawn[:, COLUMNS.index("gamma")] != 1.0).float().mean()) - 0.3) < 0.03


def test_same_generator_state_gives_the_same_augmentation() -> None:
    config = IntensityAugment(noise_hu=(1.0, (5.0, 20.0)))
    first = draw_intensity_params(3, config, torch.Generator().manual_seed(7))
    second = draw_intensity_params(3, config, torch.Generator().manual_seed(7))
    assert torch.equal(first[0], second[0]) and first[1] == second[1]
    hu = _volume().repeat(3, 1, 1, 1, 1)
    liver = torch.zeros(3, 24, 24, 24, dtype=torch.bool)
    assert torch.equal(augment_hu(hu, liver, first[0], first[1]), augment_hu(hu, liver, second[0], second[1]))


def test_noise_has_the_drawn_sd_and_identity_returns_the_input() -> None:
    hu, liver = _volume(), torch.zeros(1, 24, 24, 24, dtype=torch.bool)
    noisy = augment_hu(hu, liver, _params(noise_hu=20.0), seed=3)
    assert abs(float(noisy.std()) - 20.0) < 1.0 and abs(float(noisy.mean()) - 50.0) < 1.0
    assert augment_hu(hu, liver, _params(), seed=3) is hu


def test_contrast_scales_about_the_mean_and_shift_moves_everything() -> None:
    hu = torch.linspace(-100, 200, 24 ** 3).view(1, 1, 24, 24, 24)
    liver = torch.zeros(1, 24, 24, 24, dtype=torch.bool)
    stretched = augment_hu(hu, liver, _params(contrast=1.2), seed=0)
    assert abs(float(stretched.mean() - hu.mean())) < 1e-3
    assert abs(float(stretched.std() / hu.std()) - 1.2) < 1e-4
    shifted = augment_hu(hu, liver, _params(shift_hu=-25.0), seed=0)
    assert torch.allclose(shifted, hu - 25.0)


def test_blur_and_low_resolution_remove_fine_detail_but_keep_the_mean() -> None:
    stripes = (torch.arange(24) % 2).float().view(1, 1, 1, 1, 24).expand(1, 1, 24, 24, 24) * 100.0
    liver = torch.zeros(1, 24, 24, 24, dtype=torch.bool)
    for params in (_params(blur_voxels=1.0), _params(resolution=0.5)):
        smooth = augment_hu(stripes, liver, params, seed=0)
        assert float(smooth[..., 4:20].std()) < 0.35 * float(stripes.std())
        assert abs(float(smooth.mean() - stripes.mean())) < 3.0


def test_liver_shift_changes_the_liver_and_not_the_far_organs() -> None:
    hu = _volume(60.0, 32)
    liver = torch.zeros(1, 32, 32, 32, dtype=torch.bool)
    liver[0, 8:24, 8:24, 8:24] = True
    out = augment_hu(hu, liver, _params(liver_shift_hu=30.0), seed=0)
    assert abs(float(out[0, 0, 12:20, 12:20, 12:20].mean()) - 90.0) < 0.5
    assert float((out[0, 0, :3] - 60.0).abs().max()) < 1e-4


def test_gamma_acts_on_windowed_values() -> None:
    windowed = torch.full((1, 1, 2, 2, 2), 0.25)
    assert torch.allclose(augment_windowed(windowed, _params(gamma=2.0)), torch.full_like(windowed, 0.0625))


def test_config_section_reads_defaults_and_names_bad_fields(tmp_path) -> None:
    base = {"output_dir": str(tmp_path / "run"), "datasets": [
        {"name": "ph", "kind": "phantom", "annotated": [1, 1, 1], "phantom": {"count": 1}}]}
    config = training_config_from_dict(base | {"augment": {"intensity": {}}}, tmp_path, source="cfg.yaml")
    assert config.augment.intensity == IntensityAugment()
    assert training_config_from_dict(base, tmp_path, source="cfg.yaml").augment.intensity is None
    with pytest.raises(InputError, match="gama"):
        training_config_from_dict(base | {"augment": {"intensity": {"gama": [0.3, [0.7, 1.5]]}}}, tmp_path,
                                  source="cfg.yaml")
    with pytest.raises(InputError, match=r"cfg\.yaml"):
        training_config_from_dict(base | {"augment": {"intensity": {"gamma": [1.3, [0.7, 1.5]]}}}, tmp_path,
                                  source="cfg.yaml")
