"""K-fold cross-validation: a deterministic, grouped, stratified split; one fold trained for real; bad folds refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lvt.cli.main import run as lvt
from lvt.errors import InputError
from lvt.segment.model_file import read_manifest
from lvt.train.config import load_training_config, training_config_from_dict
from lvt.train.data.folds import split_folds
from lvt.train.data.prepare import prepare_run_cases
from lvt.train.loop import run_training

SPACING = [6.0, 6.0, 6.0]


def _phantoms(name: str, count: int, seed: int, **extra: object) -> dict:
    return {"name": name, "kind": "phantom", "annotated": [1, 1, 1],
            "phantom": {"count": count, "seed": seed, "spacing_mm": SPACING}, **extra}


def _config_dict(tmp_path: Path, **overrides: object) -> dict:
    data = {"model_name": "tiny", "output_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"),
            "spacing_mm": SPACING, "patch_size_zyx": [32, 32, 32], "batch_size": 1, "steps": 2, "validate_every": 2,
            "checkpoint_every": 2, "seed": 7, "use_amp": False,
            "network": {"features_per_stage": [4, 8, 16], "deep_supervision_levels": 2},
            "datasets": [_phantoms("a", 5, 100), _phantoms("b", 3, 200)]}
    return data | overrides


def _config(tmp_path: Path, **overrides: object):
    return training_config_from_dict(_config_dict(tmp_path, **overrides), tmp_path, source="cv.yaml")


def test_the_split_is_stratified_balanced_deterministic_and_covers_every_case_once(tmp_path: Path) -> None:
    config = _config(tmp_path)
    split = split_folds(config.datasets, 3, seed=7)
    names = [name for fold in split.folds for name in fold]
    assert sorted(names) == sorted([f"a/{i:03d}" for i in range(5)] + [f"b/{i:03d}" for i in range(3)])
    assert len(set(names)) == len(names)
    assert sorted(len(fold) for fold in split.folds) == [2, 3, 3]
    for fold in split.folds:  # every fold holds every dataset
        assert {name.split("/")[0] for name in fold} == {"a", "b"}
    assert split_folds(config.datasets, 3, seed=7) == split
    assert split_folds(config.datasets, 3, seed=8) != split  # the seed decides (this pair of seeds differs)
    assert split.training(1) | split.validation(1) == frozenset(names)
    assert not split.training(1) & split.validation(1)


def test_a_case_and_its_synthetic_tumor_variants_stay_in_one_fold(tmp_path: Path) -> None:
    config = _config(tmp_path, datasets=[_phantoms("a", 2, 100, synthetic_tumor_variants=1)], folds=2, fold=0)
    cases = prepare_run_cases(config, skip_bad_cases=False)
    held_out = cases.cross_validation["validation_cases"]
    assert len(held_out) == 1
    assert [case.name for case in cases.validation] == held_out  # validated as it is, without variants
    training = sorted(case.name for case in cases.training)
    (kept,) = set(cases.cross_validation["cases_per_fold"][1])
    assert training == [kept, f"{kept}+tumors0"]
    assert not any(name.startswith(held_out[0]) for name in training)


def test_one_fold_trains_validates_on_the_held_out_cases_and_records_the_split(tmp_path: Path) -> None:
    config = _config(tmp_path, folds=3, fold=1)
    result = run_training(config, device="cpu")
    run = tmp_path / "run" / "fold_1"
    assert result.final_model == run / "final.json"
    recorded = json.loads((run / "folds.json").read_text(encoding="utf-8"))
    split = split_folds(config.datasets, 3, seed=7)
    assert recorded["validation_cases"] == sorted(split.folds[1])
    assert recorded["cases_per_fold"] == [list(fold) for fold in split.folds]
    manifest, _ = read_manifest(result.final_model)
    assert manifest.training["cross_validation"] == recorded
    assert manifest.training["config"]["fold"] == 1
    assert "validation" in result.history[-1]  # the held-out fold was validated


@pytest.mark.parametrize(("overrides", "message"), [
    ({"folds": 5, "fold": 5}, r"fold must be in 0\.\.4 for 5 folds, got 5"),
    ({"folds": 1}, r"folds must be >= 2"),
    ({"fold": 0}, r"fold 0 needs the number of folds"),
    ({"folds": 2, "fold": 0, "validation": [_phantoms("v", 1, 9)]},
     r"with a fold, the held-out fold is the validation set"),
])
def test_bad_fold_settings_are_input_errors_naming_the_config(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(InputError, match=rf"^cv\.yaml: invalid training config: {message}"):
        _config(tmp_path, **overrides)


def test_a_dataset_with_fewer_cases_than_folds_is_refused_by_name(tmp_path: Path) -> None:
    config = _config(tmp_path, folds=4, fold=0)
    with pytest.raises(InputError, match=r"^cv\.yaml: dataset 'b' has 3 case\(s\), fewer than the 4 folds"):
        prepare_run_cases(config, skip_bad_cases=False)


def test_the_command_line_takes_fold_and_folds_and_refuses_bad_ones(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(_config_dict(tmp_path, folds=5)), encoding="utf-8")
    config = load_training_config(path, fold=2, folds=3)
    assert (config.fold, config.folds, config.run_dir) == (2, 3, tmp_path / "run" / "fold_2")
    assert lvt(["train", str(path), "--fold", "5"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"lvt: error: {path}: invalid training config: fold must be")
    assert lvt(["train", str(path), "--fold", "0", "--folds", "4"]) == 2
    assert "dataset 'b' has 3 case(s), fewer than the 4 folds" in capsys.readouterr().err
