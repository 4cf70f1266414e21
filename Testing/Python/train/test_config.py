"""The training config is strict: a typo, a missing field or a bad dataset fails at load time, naming the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from lvt.errors import InputError
from lvt.train.config import load_training_config, training_config_from_dict
from lvt.train.loop import build_optimizer


def _valid() -> dict:
    return {"output_dir": "run", "datasets": [{"name": "ph", "kind": "phantom", "phantom": {"count": 1}}]}


def _load(tmp_path: Path, data: dict):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_training_config(path)


def _with(section: str, value: object) -> dict:
    return _valid() | {section: value}


@pytest.mark.parametrize(
    ("data", "where", "typo", "meant"),
    [
        (_valid() | {"stepz": 3}, "", "stepz", "steps"),
        (_with("network", {"feature_per_stage": [8, 16]}), "network: ", "feature_per_stage", "features_per_stage"),
        (_with("optimizer", {"name": "sgd", "learning_rat": 0.1}), "optimizer: ", "learning_rat", "learning_rate"),
        (_with("augment", {"flip_probabilty": 0.1}), "augment: ", "flip_probabilty", "flip_probability"),
        (_with("augment", {"random_windowing": {"probabilty": 0.1}}), "augment.random_windowing: ", "probabilty",
         "probability"),
        (_with("window", {"level": 40, "width_hu": 400}), "window: ", "level", "level_hu"),
        (_with("datasets", [{"name": "ph", "kind": "phantom", "synthetic_tumour_variants": 1}]), "datasets\\[0\\]: ",
         "synthetic_tumour_variants", "synthetic_tumor_variants"),
        (_with("validation", [{"builtin": "phantom", "valu_map": {1: "liver"}}]), "validation\\[0\\]: ", "valu_map",
         "value_map"),
    ],
)
def test_an_unknown_field_names_the_file_the_field_and_the_closest_known_one(
    tmp_path: Path, data: dict, where: str, typo: str, meant: str
) -> None:
    file = re.escape(str(tmp_path / "train.yaml"))
    with pytest.raises(InputError, match=rf"^{file}: .*{where}unknown field\(s\) {typo} \(did you mean '{meant}'\?\)"):
        _load(tmp_path, data)


def test_a_config_built_in_code_raises_input_error_naming_its_source(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^run_ablation\.py: .*unknown field\(s\) stepz"):
        training_config_from_dict(_valid() | {"stepz": 3}, tmp_path, source="run_ablation.py")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"output_dir": "run"}, r"missing required field\(s\) datasets"),
        (_with("window", {"level_hu": 40}), r"window: missing required field\(s\) width_hu"),
        (_with("datasets", [{"name": "ph", "annotated": [1, 1, 1]}]), r"dataset 'ph': field 'kind': required"),
    ],
)
def test_a_missing_required_field_is_an_input_error(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(InputError, match=rf"train\.yaml: .*{message}"):
        _load(tmp_path, data)


def test_a_bad_dataset_kind_fails_at_load_time_naming_the_allowed_kinds(tmp_path: Path) -> None:
    data = _with("datasets", [{"name": "mine", "kind": "kits", "root": "data", "image_pattern": "{case}.nii",
                               "label_pattern": "{case}_seg.nii", "value_map": {1: "liver"}, "annotated": [1, 0, 0]}])
    allowed = "lits, msd, ircadb, totalsegmentator, pairs, phantom"
    with pytest.raises(InputError, match=rf"train\.yaml: dataset 'mine': field 'kind': 'kits' is not one of {allowed}"):
        _load(tmp_path, data)


def test_sgd_gets_nnunet_defaults_and_adamw_keeps_its_own(tmp_path: Path) -> None:
    sgd = _load(tmp_path, _with("optimizer", {"name": "sgd", "warmup_steps": 0}))
    assert (sgd.optimizer.learning_rate, sgd.optimizer.momentum, sgd.optimizer.weight_decay) == (1e-2, 0.99, 3e-5)
    optimizer, _ = build_optimizer(torch.nn.Linear(2, 2), sgd)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.99
    assert (optimizer.defaults["lr"], optimizer.defaults["weight_decay"]) == (1e-2, 3e-5)
    given = _load(tmp_path, _with("optimizer", {"name": "sgd", "learning_rate": 0.05})).optimizer
    assert (given.learning_rate, given.weight_decay) == (0.05, 3e-5)
    adamw = _load(tmp_path, _valid()).optimizer
    assert (adamw.name, adamw.learning_rate, adamw.weight_decay) == ("adamw", 1e-3, 1e-2)


def test_the_shipped_training_config_is_valid_and_keeps_its_datasets_as_written() -> None:
    config = load_training_config(REPO / "LVTTraining" / "configs" / "lvt_default.yaml")
    assert [entry.spec.name for entry in config.datasets] == ["phantoms", "ts_example"]
    written = config.to_dict()["datasets"][1]
    assert written["spec"]["root"] == "../../../shared/data/totalsegmentator_example"
    assert written["synthetic_tumor_variants"] == 6 and "synthetic_tumor_variants" not in written["spec"]


def test_training_config_and_dataset_spec_files_are_read_by_one_reader(tmp_path):
    """Missing, undecodable and unparsable files are InputErrors naming the file, for both kinds of file."""
    from lvt.train.config import load_training_config
    from lvt.train.data.specs import load_spec_file

    for load, what in ((load_training_config, "training config"), (load_spec_file, "dataset spec")):
        with pytest.raises(InputError, match=f"{what} not found"):
            load(tmp_path / "absent.yaml")
        latin1 = tmp_path / "latin1.yaml"
        latin1.write_bytes(b"name: f\xf6ie\n")
        with pytest.raises(InputError, match=rf"latin1\.yaml: cannot read the {what}"):
            load(latin1)
        broken = tmp_path / "broken.yaml"
        broken.write_text("name: [unclosed\n", encoding="utf-8")
        with pytest.raises(InputError, match=r"broken\.yaml: is not valid YAML/JSON"):
            load(broken)


def test_the_paper_preset_is_the_final_recipe_and_says_what_it_needs() -> None:
    path = REPO / "LVTTraining" / "configs" / "paper_final.yaml"
    config = load_training_config(path)
    optimizer = config.optimizer
    assert (optimizer.name, optimizer.schedule, optimizer.warmup_steps) == ("sgd", "poly", 0)
    assert (optimizer.learning_rate, optimizer.weight_decay, optimizer.momentum) == (1e-2, 3e-5, 0.99)
    assert config.spacing_mm == (1.0, 1.0, 1.0) and config.patch_size_zyx == (96, 128, 128)
    assert config.batch_size * config.steps == 448_000 and config.folds == 5 and config.fold is None
    assert config.loss == "ml" and config.foreground_probability == 0.333
    weights = {entry.spec.name: entry.spec.annotated for entry in config.datasets}
    assert weights == {"lits": (True, False, True), "msd_task08_hepaticvessel_liver": (True, True, True),
                       "ircadb": (True, True, True)}
    assert config.datasets[1].spec.second_labels.positive_is == ("liver",)
    header = path.read_text(encoding="utf-8").split("\nmodel_name")[0]
    assert "GPU" in header and "public datasets" in header
    assert load_training_config(path, fold=4).run_dir == config.output_dir / "fold_4"
