"""The partial-label ablation's design (Testing/Benchmarks/partial_labels): split, labels and budgets.

No training here: the benchmark itself trains; these tests make sure its comparison is fair.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from lvt.phantom import PhantomConfig, make_phantom
from lvt.train.data.discovery import discover_cases
from lvt.train.data.loading import load_case
from lvt.train.data.specs import DatasetSpec

SCRIPT = REPO / "Testing" / "Benchmarks" / "partial_labels" / "run_ablation.py"


def _load_runner():
    spec = importlib.util.spec_from_file_location("run_ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


ablation = _load_runner()


@pytest.mark.parametrize("size", sorted(ablation.SIZES))
def test_split_has_five_disjoint_parts(size: str) -> None:
    preset = ablation.SIZES[size]
    split = ablation.make_split(preset.cases_per_part, preset.test_cases)
    groups = [set(split.test_seeds)] + [set(part.seeds) for part in split.parts]
    assert len(groups) == 5
    assert sum(len(g) for g in groups) == len(set().union(*groups))
    assert set(split.test_seeds).isdisjoint(split.training_seeds)
    assert [len(part.seeds) for part in split.parts] == [preset.cases_per_part] * 4
    assert len(split.test_seeds) == preset.test_cases


def test_fs_is_a_quarter_fully_labelled_and_each_ps_part_annotates_one_class() -> None:
    split = ablation.make_split(3, 2)
    fs, *ps = split.parts
    assert fs.annotated == (True, True, True)
    assert len(fs.seeds) * 4 == len(split.training_seeds)
    assert [sum(part.annotated) for part in ps] == [1, 1, 1]
    assert sorted(part.annotated.index(True) for part in ps) == [0, 1, 2]


def test_data_settings_use_the_right_parts_and_labels(tmp_path: Path) -> None:
    split = ablation.make_split(2, 2)
    fs_only = ablation.dataset_specs(split, "fs", tmp_path)
    fs_ps = ablation.dataset_specs(split, "fs_ps", tmp_path)
    full = ablation.dataset_specs(split, "full", tmp_path)
    assert [s["annotated"] for s in fs_only] == [[1, 1, 1]]
    assert [s["annotated"] for s in fs_ps] == [[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert [s["annotated"] for s in full] == [[1, 1, 1]] * 4
    assert [s["root"] for s in fs_ps] == [s["root"] for s in full]  # same images, only the labels differ
    assert all("labels_partial" in s["label_pattern"] for s in fs_ps[1:])
    assert all("labels_full" in s["label_pattern"] for s in full)
    for spec in fs_ps + full:  # every spec is a valid dataset whose value map yields its annotated classes
        DatasetSpec.from_dict(spec, source="test")
    with pytest.raises(ValueError, match="data setting"):
        ablation.dataset_specs(split, "half", tmp_path)


@pytest.mark.parametrize("size_name", sorted(ablation.SIZES))
def test_every_method_gets_the_same_budget_and_seed(size_name: str, tmp_path: Path) -> None:
    size = ablation.SIZES[size_name]
    split = ablation.make_split(size.cases_per_part, size.test_cases)
    configs = [ablation.build_config(e, 7, size, split, tmp_path) for e in ablation.EXPERIMENTS]
    varying = {"datasets", "loss", "output_dir", "model_name", "network"}
    shared = [{k: v for k, v in c.to_dict().items() if k not in varying} for c in configs]
    assert all(s == shared[0] for s in shared)
    assert shared[0]["seed"] == 7 and shared[0]["steps"] == size.steps
    networks = [{k: v for k, v in c.to_dict()["network"].items() if k != "head"} for c in configs]
    assert all(n == networks[0] for n in networks)
    assert {c.loss: c.network.head for c in configs} == {"mc": "softmax", "mlx": "sigmoid", "ml": "sigmoid"}
    assert len({c.output_dir for c in configs}) == len(configs)
    assert {(e.method, e.data) for e in ablation.EXPERIMENTS} >= {
        ("MC", "fs"), ("MLx", "fs"), ("MC", "fs_ps"), ("MLx", "fs_ps"), ("ML", "fs_ps"), ("MC", "full"),
        ("MLx", "full")}


def test_a_partial_part_reads_back_with_only_its_class(tmp_path: Path) -> None:
    spacing, seed = (12.0, 12.0, 12.0), 3
    settings = {"min_vessel_radius_mm": 3.0, "n_tumors": (1, 1), "tumor_diameter_mm": (40.0, 40.0)}
    part = ablation.Part("liver_only", (True, False, False), (seed,))
    ablation._write_case(seed, tmp_path / part.name, part.annotated, spacing, settings)
    truth = make_phantom(PhantomConfig(seed=seed, spacing_mm=spacing, **settings)).truth
    partial = load_case(discover_cases(DatasetSpec.from_dict(ablation.part_spec(part, tmp_path, False), "t"))[0])
    assert partial.annotated == (True, False, False)
    np.testing.assert_array_equal(partial.masks[0], truth[0])  # the whole liver, tumors included
    assert not partial.masks[1:].any()
    full = load_case(discover_cases(DatasetSpec.from_dict(ablation.part_spec(part, tmp_path, True), "t"))[0])
    assert full.annotated == (True, True, True)
    np.testing.assert_array_equal(full.masks[2], truth[2])
    assert truth[2].any()


def test_lesion_detection_is_pooled_over_cases() -> None:
    base = {f"{k}_{m}": 0.5 for k in ("liver", "vessel", "tumor") for m in ("dice", "precision", "recall")}
    counts = ("true_lesions", "detected_lesions", "predicted_lesions", "correct_predicted_lesions")
    records = [{**base, **dict(zip(counts, (3, 3, 4, 2), strict=True))},
               {**base, **dict(zip(counts, (1, 0, 0, 0), strict=True))}]
    scores = ablation.run_scores(records)
    assert scores["lesion_sensitivity"] == pytest.approx(0.75)
    assert scores["lesion_precision"] == pytest.approx(0.5)
