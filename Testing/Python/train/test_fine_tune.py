"""Fine-tuning: ``init_weights`` starts a run from a model file, and refuses one of another network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lvt.errors import InputError
from lvt.segment.model_file import load_model
from lvt.train.config import training_config_from_dict
from lvt.train.loop import run_training


def _config(tmp_path: Path, start: Path, features: list[int]) -> dict:
    phantoms = {"count": 1, "seed": 21, "spacing_mm": [6.0, 6.0, 6.0]}
    return {
        "model_name": "tuned", "output_dir": str(tmp_path / "run"), "spacing_mm": [6.0, 6.0, 6.0],
        "patch_size_zyx": [32, 32, 32], "batch_size": 1, "steps": 1, "validate_every": 1, "seed": 9,
        "init_weights": str(start),
        "network": {"features_per_stage": features, "deep_supervision_levels": 2},
        "optimizer": {"learning_rate": 1e-9, "warmup_steps": 0},
        "datasets": [{"name": "ph", "kind": "phantom", "annotated": [1, 1, 1], "phantom": phantoms}],
    }


def test_a_run_starts_from_the_given_weights(tmp_path: Path, tiny_trained_model: Path) -> None:
    config = training_config_from_dict(_config(tmp_path, tiny_trained_model, [8, 16, 32]), tmp_path, source="t")
    result = run_training(config, device="cpu")
    start, _ = load_model(tiny_trained_model)
    tuned, _ = load_model(result.final_model)
    for name, value in start.state_dict().items():
        assert torch.allclose(value, tuned.state_dict()[name], atol=1e-5), name


def test_weights_of_another_network_are_refused_naming_the_file(tmp_path: Path, tiny_trained_model: Path) -> None:
    config = training_config_from_dict(_config(tmp_path, tiny_trained_model, [8, 16, 24]), tmp_path, source="t")
    with pytest.raises(InputError, match=tiny_trained_model.name):
        run_training(config, device="cpu")
