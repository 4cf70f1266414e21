"""CTs without labels (kind "images"): read and cached with no class annotated, kept out of the supervised
loss, validation and folds, and refused where they would do nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, shared_file

from lvt.errors import InputError
from lvt.image import AIR_THRESHOLD_HU, Image
from lvt.io import write_image
from lvt.train.augment import apply_augment, draw_augment_params
from lvt.train.config import ConsistencyConfig, load_training_config, training_config_from_dict
from lvt.train.data.cache import CachedCase
from lvt.train.data.discovery import discover_cases
from lvt.train.data.loading import load_case
from lvt.train.data.prepare import prepare_run_cases
from lvt.train.data.specs import DatasetSpec, spec_fingerprint
from lvt.train.losses import LOSS_TERMS, lvt_loss
from lvt.train.sampling import PatchSampler

SPACING = [6.0, 6.0, 6.0]


def _write_ct(path: Path, shape: tuple[int, int, int] = (12, 14, 16)) -> Path:
    """Soft tissue (40 HU, with structure) inside air, so lvt.io reads it as CT."""
    array = np.full(shape, -1000.0, dtype=np.float32)
    array[2:-2, 3:-3, 3:-3] = 40.0 + np.arange(shape[2] - 6, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(Image(array, tuple(SPACING)), path)
    return path


def _images(root: Path, **fields: object) -> dict:
    return {"name": "unl", "kind": "images", "root": str(root), **fields}


def _phantoms(name: str = "ph", count: int = 3) -> dict:
    return {"name": name, "kind": "phantom", "annotated": [1, 1, 1],
            "phantom": {"count": count, "seed": 40, "spacing_mm": SPACING}}


def _config(tmp_path: Path, **overrides: object):
    data = {"output_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"), "spacing_mm": SPACING,
            "patch_size_zyx": [16, 16, 16], "network": {"features_per_stage": [4, 8, 16], "deep_supervision_levels": 2},
            "datasets": [_phantoms(), _images(tmp_path / "cts", image_pattern="{case}_ct.nii.gz")],
            "consistency": {"weight": 1.0}}
    return training_config_from_dict(data | overrides, tmp_path, source="semi.yaml")


def test_listed_and_globbed_unlabelled_cts_load_with_no_class_annotated(tmp_path: Path) -> None:
    _write_ct(tmp_path / "a_ct.nii.gz")
    _write_ct(tmp_path / "b_ct.nii.gz")
    listed = DatasetSpec.from_dict(_images(tmp_path, cases={"a": {"image": "a_ct.nii.gz"}}), source="t")
    globbed = DatasetSpec.from_dict(_images(tmp_path, image_pattern="{case}_ct.nii.gz", exclude_cases=["b"]),
                                    source="t")
    for spec in (listed, globbed):
        assert spec.is_unlabelled and spec.annotated == (False, False, False)
        (ref,) = discover_cases(spec)
        case = load_case(ref)
        assert (ref.name, ref.label_path) == ("unl/a", None)
        assert case.masks.shape == (3, 12, 14, 16) and not case.masks.any()
        assert case.annotated == (False, False, False)
    assert DatasetSpec.from_dict(listed.to_dict(), source="t") == listed
    assert listed.to_dict()["cases"] == {"a": {"image": "a_ct.nii.gz"}}
    assert spec_fingerprint(listed) != spec_fingerprint(globbed)
    (missing,) = discover_cases(DatasetSpec.from_dict(_images(tmp_path, cases={"c": {"image": "c.nii.gz"}}), "t"))
    assert "does not exist" in (missing.problem or "")


@pytest.mark.parametrize(("change", "message"), [
    ({"annotated": [1, 0, 0]}, r"annotated.*has no labels"),
    ({"label_pattern": "{case}_seg.nii.gz"}, r"label_pattern.*reads no labels"),
    ({"value_map": {1: "liver"}}, r"value_map.*reads no labels"),
    ({"image_pattern": None, "cases": {"a": {"image": "a.nii.gz", "label": "a_seg.nii.gz"}}}, r"'image' \(no label\)"),
    ({"image_pattern": None}, r"image_pattern.*required"),
])
def test_an_unlabelled_spec_with_anything_about_labels_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    data = _images(tmp_path, image_pattern="{case}.nii.gz") | change
    with pytest.raises(InputError, match=message):
        DatasetSpec.from_dict({k: v for k, v in data.items() if v is not None}, source="t")


def test_a_labelled_kind_still_needs_a_label_for_each_listed_case(tmp_path: Path) -> None:
    data = {"name": "p", "kind": "pairs", "root": str(tmp_path), "cases": {"a": {"image": "a.nii.gz"}},
            "value_map": {1: "liver"}, "annotated": [1, 0, 0]}
    with pytest.raises(InputError, match=r"case 'a' of kind 'pairs' needs exactly the key\(s\) 'image' and 'label'"):
        DatasetSpec.from_dict(data, source="t")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"consistency": None}, r"semi.yaml.*'unl' is unlabelled.*would do nothing without a consistency section"),
    ({"datasets": [_phantoms()]}, r"consistency: needs an unlabelled training dataset"),
    ({"validation": [{"name": "v", "kind": "images", "root": ".", "image_pattern": "{case}.nii.gz"}]},
     r"validation: an unlabelled dataset.*no labels"),
    ({"datasets": [{"name": "unl", "kind": "images", "root": ".", "image_pattern": "{case}.nii.gz"}]},
     r"at least one labelled training dataset"),
    ({"datasets": [_phantoms(), {"name": "unl", "kind": "images", "root": ".", "image_pattern": "{case}.nii.gz",
                                 "synthetic_tumor_variants": 2}]}, r"'unl' is unlabelled; synthetic_tumor_variants"),
    ({"consistency": {"weight": -1.0}}, r"consistency: weight must be finite and >= 0"),
    ({"consistency": {"ema_decay": 1.5}}, r"ema_decay in \[0, 1\]"),
    ({"consistency": {"batch_size": 0}}, r"batch_size >= 1"),
    ({"consistency": {"ramp_up_steps": 2.5}}, r"ramp_up_steps >= 0"),
    ({"consistency": {"wieght": 1.0}}, r"consistency: unknown field.*wieght.*did you mean 'weight'"),
    ({"consistency": {"intensity": {"gama": [0.3, [0.7, 1.5]]}}}, r"consistency.intensity: unknown field.*gama"),
])
def test_config_errors_about_unlabelled_data_and_consistency(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        _config(tmp_path, **overrides)


def test_consistency_defaults_and_sections(tmp_path: Path) -> None:
    config = _config(tmp_path, consistency={"weight": 2, "ramp_up_steps": 10, "intensity": None})
    assert config.consistency is not None
    assert (config.consistency.weight, config.consistency.ramp_up_steps, config.consistency.intensity) == (2, 10, None)
    default = _config(tmp_path, consistency={}).consistency
    assert default is not None and (default.ema_decay, default.batch_size) == (0.99, 1)
    assert default.intensity is not None and default.intensity.liver_shift_hu[0] > 0  # contrast phases by default
    assert config.to_dict()["consistency"]["ramp_up_steps"] == 10


def test_unlabelled_cts_are_cached_apart_from_training_folds_and_validation(tmp_path: Path) -> None:
    _write_ct(tmp_path / "cts" / "a_ct.nii.gz")
    _write_ct(tmp_path / "cts" / "b_ct.nii.gz", (10, 12, 12))
    cases = prepare_run_cases(_config(tmp_path), skip_bad_cases=False)
    assert [c.name for c in cases.unlabelled] == ["unl/a", "unl/b"]
    assert all(not c.name.startswith("unl/") for c in cases.training)
    assert all(c.annotated == (False, False, False) and not np.asarray(c.bits).any() for c in cases.unlabelled)
    # one fold of three: the phantoms are split, the two unlabelled CTs (fewer than the folds) all used
    fold = prepare_run_cases(_config(tmp_path, folds=3, fold=1), skip_bad_cases=False)
    assert len(fold.training) == 2 and len(fold.validation) == 1
    assert [c.name for c in fold.unlabelled] == ["unl/a", "unl/b"]
    assert not any(name.startswith("unl/") for names in fold.cross_validation["cases_per_fold"] for name in names)


def test_a_batch_of_unlabelled_patches_adds_exactly_nothing_to_any_supervised_loss(tmp_path: Path) -> None:
    _write_ct(tmp_path / "cts" / "a_ct.nii.gz")
    config = _config(tmp_path)
    case = prepare_run_cases(config, skip_bad_cases=False).unlabelled[0]
    batch = PatchSampler([case], (16, 16, 16), 0.5, seed=1).sample(2)
    assert not batch.class_weights.any()
    params = draw_augment_params(2, config.augment, config.window, torch.Generator().manual_seed(0))
    _, masks = apply_augment(torch.from_numpy(batch.hu), torch.from_numpy(batch.bits), params, (16, 16, 16))
    for loss in LOSS_TERMS:
        logits = torch.randn(2, 4 if loss == "mc" else 3, 16, 16, 16, requires_grad=True)
        value = lvt_loss([logits], masks, torch.from_numpy(batch.class_weights), loss)
        value.backward()
        assert value.item() == 0.0 and not logits.grad.any(), loss


def test_unlabelled_centres_fall_inside_the_body() -> None:
    image = np.full((20, 20, 20), -1000, dtype=np.int16)
    image[4:16, 4:16, 2:18] = 50  # a body of 29 % of the voxels
    empty = tuple(np.zeros((0, 3), dtype=np.int32) for _ in range(3))
    case = CachedCase("u/a", "u", image, np.zeros_like(image, dtype=np.uint8), (False, False, False), empty)

    def centres_in_body(sampler: PatchSampler) -> int:
        return int((sampler.sample(200).hu[:, 0, 2, 2, 2] > AIR_THRESHOLD_HU).sum())  # a 5^3 box's centre

    assert centres_in_body(PatchSampler([case], (5, 5, 5), 0.0, seed=3, inside_body=True)) == 200
    assert centres_in_body(PatchSampler([case], (5, 5, 5), 0.0, seed=3)) < 100


def test_lvt_default_2c_is_2b_plus_the_consistency_lever_on_four_unlabelled_cts() -> None:
    folder = REPO / "LVTTraining" / "configs"
    two_b, two_c = (load_training_config(folder / f"lvt_default_{name}.yaml") for name in ("2b", "2c"))
    differ = {"datasets", "consistency", "output_dir", "source"}
    assert {k: v for k, v in two_c.to_dict().items() if k not in differ} == \
        {k: v for k, v in two_b.to_dict().items() if k not in differ}
    assert two_c.labelled_datasets == two_b.datasets
    (unlabelled,) = two_c.unlabelled_datasets
    # HCC_009_004 and HCC_009_103 stay out: the inter-phase evaluation pair
    assert [c.case_id for c in unlabelled.spec.cases] == ["CRLM_1004", "CRLM_1006", "HCC_006_AP103", "HCC_048_PV"]
    assert two_c.consistency == ConsistencyConfig(weight=1.0, ramp_up_steps=200, ema_decay=0.99, batch_size=1)
    assert (two_c.output_dir.name, two_c.cache_dir) == ("lvt_default_2c", two_b.cache_dir)
    shared_file("tcia_unlabeled")
    assert all(ref.problem is None for ref in discover_cases(unlabelled.spec))
