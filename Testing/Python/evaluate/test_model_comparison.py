"""The model comparison benchmark (Testing/Benchmarks/model_comparison): its numbers, its rule and its pictures.

No model runs here: the benchmark runs the models; these tests check what it makes of their outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, load_module_file

from lvt.errors import InputError
from lvt.image import Image
from lvt.io.write import write_image
from lvt.segment.model_file import bundled_model_path, read_manifest
from lvt.train.config import training_config_from_dict

compare = load_module_file(REPO / "Testing" / "Benchmarks" / "model_comparison" / "compare_models.py",
                           "compare_models")
REAL_CASE_RESULTS = REPO / "Testing" / "Benchmarks" / "real_case" / "results.json"


def _config(tmp_path: Path, spacing: float = 2.0):
    phantoms = {"name": "ph", "kind": "phantom", "annotated": [1, 1, 1],
                "phantom": {"count": 1, "seed": 1, "spacing_mm": [spacing] * 3}}
    return training_config_from_dict({"output_dir": str(tmp_path), "spacing_mm": [spacing] * 3,
                                      "patch_size_zyx": [64, 64, 64], "window": {"level_hu": 40, "width_hu": 400},
                                      "datasets": [phantoms]}, tmp_path, source="test")


def test_ircadb_scores_count_missed_and_false_positive_lesions() -> None:
    per_case_csv = json.loads(REAL_CASE_RESULTS.read_text())["per_case_csv"]
    scores = compare.ircadb_scores(per_case_csv)
    rows = {line.split(",")[1]: line.split(",") for line in per_case_csv.splitlines()[1:]}
    true, found, predicted, correct = (int(rows["tumor"][i]) for i in range(15, 19))
    assert scores["lesions_found"] == found
    assert scores["lesions_missed"] == true - found
    assert scores["false_positive_lesions"] == predicted - correct
    assert scores["liver_volume_error_pct"] == pytest.approx(100 * float(rows["liver"][12]))
    assert scores["mean_dice"] == pytest.approx(np.mean([float(rows[k][4]) for k in ("liver", "vessel", "tumor")]))


def test_a_model_from_another_grid_is_refused_before_validation(tmp_path: Path) -> None:
    manifest, _ = read_manifest(bundled_model_path())
    compare.check_spacing(_config(tmp_path), manifest)  # the bundled model's 2 mm grid
    with pytest.raises(InputError, match="spacing"):
        compare.check_spacing(_config(tmp_path, spacing=3.0), manifest)


def test_validation_lesion_lines_appear_when_both_models_were_scored_on_lesions() -> None:
    lesions = {"true": 4, "detected": 3, "false": 2, "sensitivity": 0.75, "precision": 0.6, "f1": 2 / 3}
    side = {"dice": {"liver": 0.9}, "mean_dice": 0.9}
    without = compare._validation_lines({"baseline": side, "candidate": side})
    with_lesions = compare._validation_lines({"baseline": {**side, "lesions": lesions},
                                              "candidate": {**side, "lesions": {**lesions, "false": 7}}})
    assert [line.metric for line in with_lesions[:len(without)]] == [line.metric for line in without]
    false_line = next(line for line in with_lesions if line.metric == "validation lesions false")
    assert (false_line.baseline, false_line.candidate) == (2, 7)


def test_models_take_turns_first() -> None:
    models = ("baseline", "candidate")
    assert [compare.in_turn(models, i)[0] for i in range(4)] == ["baseline", "candidate"] * 2


def test_hcc_pair_difference_is_relative_to_the_mean_of_both_phases() -> None:
    phase = {"tumor_ml": 50.0, "largest_lesion_ml": 40.0, "largest_lesion_mm": 60.0}
    pair = compare.hcc_pair({"HCC_009_103": {**phase, "liver_ml": 1000.0, "largest_lesion_centre_lps": [0, 0, 0]},
                             "HCC_009_004": {**phase, "liver_ml": 1100.0, "largest_lesion_centre_lps": [3, 4, 0]}})
    assert pair["liver_difference_pct"] == pytest.approx(100 * 100 / 1050)
    assert pair["largest_lesions_apart_mm"] == pytest.approx(5.0)


def _results(candidate_val: float, candidate_irc: float, candidate_found: int, *, volume_error: float = -3.0,
             false_positives: int = 1, phase_difference: float = 12.0) -> dict:
    return {"validation": {"baseline": {"mean_dice": 0.6}, "candidate": {"mean_dice": candidate_val}},
            "ircadb01_17": {"baseline": {"mean_dice": 0.5, "lesions_found": 1, "liver_volume_error_pct": -8.9,
                                         "false_positive_lesions": 1},
                            "candidate": {"mean_dice": candidate_irc, "lesions_found": candidate_found,
                                          "liver_volume_error_pct": volume_error,
                                          "false_positive_lesions": false_positives}},
            "hcc_009": {"baseline": {"liver_difference_pct": 18.5},
                        "candidate": {"liver_difference_pct": phase_difference}}}


def test_ships_only_when_the_candidate_beats_the_baseline_everywhere_the_rule_says() -> None:
    assert compare.verdict(_results(0.7, 0.6, 2)) is True
    assert compare.verdict(_results(0.7, 0.6, 0)) is False
    assert compare.verdict(_results(0.5, 0.6, 2)) is False
    assert compare.verdict(_results(0.7, 0.4, 2)) is False
    assert compare.verdict({"validation": _results(0.7, 0.6, 2)["validation"]}) is None


def test_a_better_mean_dice_does_not_ship_a_model_that_regresses_where_users_look() -> None:
    # the 2026-12-03 candidate: higher Dice, but the spleen labelled liver and many invented lesions
    assert compare.verdict(_results(0.7, 0.6, 2, volume_error=13.6)) is False
    assert compare.verdict(_results(0.7, 0.6, 2, false_positives=15)) is False
    assert compare.verdict(_results(0.7, 0.6, 2, phase_difference=43.5)) is False
    assert compare.verdict(_results(0.7, 0.6, 2, volume_error=4.0, false_positives=0, phase_difference=7.0)) is True


def test_missing_shared_data_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compare, "TCIA", tmp_path / "tcia_unlabeled")
    with pytest.raises(FileNotFoundError, match=r"HCC_009_103_ct\.nii\.gz.*shared/data"):
        compare.check_inputs(_config(tmp_path), [], quick=True)


def test_picture_shows_both_models_per_case_and_stays_under_the_size_limit(tmp_path: Path) -> None:
    hu = np.full((40, 60, 60), -1000.0, dtype=np.float32)
    hu[5:35, 8:52, 8:52] = 40.0
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[10:30, 15:45, 15:45] = 1
    labels[18:24, 25:31, 25:31] = 3
    write_image(Image(hu, (1.5, 1.5, 2.5)), tmp_path / "ct.nii.gz")
    write_image(Image(labels, (1.5, 1.5, 2.5)), tmp_path / "labels.nii.gz")
    manifest, path = read_manifest(bundled_model_path())
    models = (compare.Model("baseline", path, manifest), compare.Model("candidate", path, manifest))
    case = {"folder": str(tmp_path), "ct": str(tmp_path / "ct.nii.gz"), "liver_ml": 1.0, "tumor_ml": 0.1,
            "lesions": 1, "largest_lesion_mm": 9.0, "largest_lesion_centre_lps": None}
    size = compare.picture(models, {"baseline": {"a": case}, "candidate": {"a": case}}, ["a"], tmp_path / "p.png")
    assert 0 < size <= compare.MAX_PICTURE_BYTES
    assert (tmp_path / "p.png").stat().st_size == size
    from matplotlib.image import imread

    height, width = imread(tmp_path / "p.png").shape[:2]
    assert width > 3 * height  # one row of four panels
