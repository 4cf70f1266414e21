"""Tests of lvt.evaluate: per-case scoring, not-annotated classes, CSV/summary files, Wilcoxon, the CLI door.

The CLI door is lvt.cli.evaluate.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from scipy import stats

from lvt.cli import evaluate as evaluate_cli
from lvt.errors import InputError
from lvt.evaluate.files import EvaluationCase, find_cases, load_truth, read_truth_spec
from lvt.evaluate.paired import compare_csv
from lvt.evaluate.run import evaluate_folder
from lvt.evaluate.scoring import CLASS_METRICS, PER_CASE_COLUMNS, case_rows, evaluate_case
from lvt.evaluate.write import csv_text
from lvt.image import Image
from lvt.io import write_image
from lvt.labels import exclusive_labels, masks_from_labels

DATA = SHARED_DATA / "ircadb01_17"
SPACING_XYZ_MM = (0.8, 0.8, 2.0)


def _phantom_labels(shift_x: int = 0) -> np.ndarray:
    """(Z, Y, X) labels: a 10^3 liver cube holding a 4^3 tumor and a vessel line, shifted along x."""
    labels = np.zeros((16, 16, 24), dtype=np.uint8)
    labels[3:13, 3:13, 3 + shift_x:13 + shift_x] = 1
    labels[5:9, 5:9, 5 + shift_x:9 + shift_x] = 3
    labels[10, 10, 3 + shift_x:13 + shift_x] = 2
    return labels


def _image(labels: np.ndarray, spacing=SPACING_XYZ_MM) -> Image:
    return Image(labels, spacing)


def test_perfect_prediction_scores_one_everywhere():
    labels = _phantom_labels()
    result = evaluate_case(_image(labels), masks_from_labels(labels), (True, True, True))
    for key in ("liver", "vessel", "tumor"):
        entry = result[key]
        assert (entry["dice"], entry["precision"], entry["recall"], entry["nsd"]) == (1.0, 1.0, 1.0, 1.0)
        assert (entry["hd95_mm"], entry["assd_mm"], entry["relative_volume_error"]) == (0.0, 0.0, 0.0)
        assert (entry["jaccard"], entry["accuracy"]) == (1.0, 1.0)
    tumor = result["tumor"]
    assert (tumor["lesion_sensitivity"], tumor["lesion_precision"], tumor["lesion_f1"]) == (1.0, 1.0, 1.0)
    # The 4^3 tumor is 3.2 x 3.2 mm in-plane: its longest axial diameter (4.5 mm) is under 10 mm.
    assert (tumor["true_lesions_under_10mm"], tumor["detected_lesions_under_10mm"]) == (1, 1)
    assert (tumor["lesion_sensitivity_under_10mm"], tumor["lesion_sensitivity_over_20mm"]) == (1.0, None)
    assert result["liver"]["volume_true_ml"] == pytest.approx(1000 * 0.8 * 0.8 * 2.0 / 1000)


def test_shifted_prediction_has_the_expected_dice():
    truth = _phantom_labels()
    pred = _phantom_labels(shift_x=2)  # 2 of 10 liver columns and 2 of 4 tumor columns move out
    result = evaluate_case(_image(pred), masks_from_labels(truth), (True, True, True))
    assert result["liver"]["dice"] == pytest.approx(0.8)
    assert result["tumor"]["dice"] == pytest.approx(0.5)
    assert result["vessel"]["dice"] == pytest.approx(0.8)
    assert result["liver"]["jaccard"] == pytest.approx(800 / 1200)
    assert result["liver"]["accuracy"] == pytest.approx(1 - 400 / (16 * 16 * 24))  # 2 x 200 voxels differ
    assert result["tumor"]["lesion_sensitivity"] == 1.0  # 50 % overlap > 10 %
    assert result["liver"]["hd95_mm"] == pytest.approx(2 * 0.8)  # shifted faces are 2 columns of 0.8 mm away
    assert result["liver"]["nsd"] == 1.0  # every boundary voxel is within 1.6 mm < 7 mm of the other boundary


def test_not_annotated_class_is_none_not_zero():
    labels = _phantom_labels()
    wrong = labels.copy()
    wrong[wrong == 2] = 1  # no vessel predicted at all
    result = evaluate_case(_image(wrong), masks_from_labels(labels), (True, False, True))
    assert result["vessel"]["annotated"] is False
    assert all(result["vessel"][m] is None for m in CLASS_METRICS)
    rows = case_rows("a", result)
    assert [r["status"] for r in rows] == ["ok", "not annotated", "ok"]


def _write_case(folder: Path, name: str, labels: np.ndarray, spacing=SPACING_XYZ_MM) -> Path:
    path = folder / f"{name}.nii.gz"
    write_image(_image(labels, spacing), path)
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_folder_evaluation_writes_csvs_and_excludes_not_annotated_from_the_mean(tmp_path):
    """Case b annotates no vessel and predicts none: it must not pull the vessel mean to zero."""
    pred_dir, truth_dir = tmp_path / "pred", tmp_path / "truth"
    good, shifted = _phantom_labels(), _phantom_labels(shift_x=2)
    _write_case(pred_dir, "a", shifted)
    segment_output = pred_dir / "b"
    segment_output.mkdir(parents=True)
    write_image(_image(np.where(good == 2, 1, good).astype(np.uint8)), segment_output / "labels.nii.gz")
    masks = masks_from_labels(good)
    for name, channels in (("a", (0, 1, 2)), ("b", (0, 2))):
        for channel, key in enumerate(("liver", "vessel", "tumor")):
            if channel in channels:
                _write_case(truth_dir, f"{name}_{key}", masks[channel].astype(np.uint8) * 255)
    spec = {n: {k: f"truth/{n}_{k}.nii.gz" for k in keys} for n, keys in
            (("a", ("liver", "vessel", "tumor")), ("b", ("liver", "tumor")))}
    (tmp_path / "truth.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    result = evaluate_folder([pred_dir], tmp_path / "truth.json", out)
    per_case = _read_csv(out / "per_case.csv")
    vessel_b = next(r for r in per_case if r["case"] == "b" and r["class"] == "vessel")
    assert vessel_b["status"] == "not annotated" and vessel_b["dice"] == ""
    summary = {(r["class"], r["metric"]): r for r in _read_csv(out / "summary.csv")}
    assert summary[("vessel", "dice")]["n"] == "1" and float(summary[("vessel", "dice")]["mean"]) == pytest.approx(0.8)
    assert summary[("vessel", "dice")]["n_not_annotated"] == "1"
    assert float(summary[("liver", "dice")]["mean"]) == pytest.approx(0.9)
    assert float(summary[("liver", "dice")]["sd"]) == pytest.approx(np.std([0.8, 1.0], ddof=1))
    assert "| dice | 0.900 ± 0.141 (n=2) | 0.800 (n=1) |" in result.markdown
    assert float(summary[("liver", "jaccard")]["sd"]) == pytest.approx(np.std([2 / 3, 1.0], ddof=1))
    assert float(summary[("liver", "accuracy")]["mean"]) < 1.0
    assert float(summary[("tumor", "lesion_f1_pooled")]["mean"]) == 1.0  # both tumors found, nothing else
    assert float(summary[("tumor", "lesion_sensitivity_pooled_under_10mm")]["mean"]) == 1.0
    assert summary[("tumor", "lesion_sensitivity_pooled_over_20mm")]["mean"] == ""  # no lesion that large
    assert (out / "summary.md").read_text(encoding="utf-8") == result.markdown


# The columns per_case.csv had before Jaccard, accuracy, lesion F1 and lesion sizes were added.
ORIGINAL_PER_CASE_COLUMNS = (
    "case", "class", "status", "nsd_tolerance_mm", "dice", "precision", "recall", "nsd", "hd95_mm", "assd_mm",
    "volume_true_ml", "volume_pred_ml", "relative_volume_error", "lesion_sensitivity", "lesion_precision",
    "true_lesions", "detected_lesions", "predicted_lesions", "correct_predicted_lesions",
)


def test_per_case_csv_keeps_its_columns_and_appends_the_new_ones(tmp_path):
    _write_case(tmp_path / "pred", "c1", _phantom_labels(shift_x=2))
    _write_case(tmp_path / "truth", "c1", _phantom_labels())
    evaluate_folder([tmp_path / "pred"], tmp_path / "truth", tmp_path / "out")
    with open(tmp_path / "out" / "per_case.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header[:len(ORIGINAL_PER_CASE_COLUMNS)]) == ORIGINAL_PER_CASE_COLUMNS
    added = header[len(ORIGINAL_PER_CASE_COLUMNS):]
    assert {"jaccard", "accuracy", "lesion_f1", "lesion_sensitivity_10_to_20mm", "true_lesions_over_20mm"} <= set(added)
    liver = next(r for r in _read_csv(tmp_path / "out" / "per_case.csv") if r["class"] == "liver")
    assert float(liver["jaccard"]) == pytest.approx(2 / 3) and liver["lesion_f1"] == ""


def test_mismatched_grid_names_the_case(tmp_path):
    labels = _phantom_labels()
    _write_case(tmp_path / "pred", "case07", labels, spacing=(1.0, 1.0, 2.0))
    _write_case(tmp_path / "truth", "case07", labels)
    with pytest.raises(InputError, match="case07"):
        evaluate_folder([tmp_path / "pred"], tmp_path / "truth", tmp_path / "out")
    assert not (tmp_path / "out" / "per_case.csv").exists()


def test_missing_reference_names_the_case(tmp_path):
    _write_case(tmp_path / "pred", "case09", _phantom_labels())
    (tmp_path / "truth").mkdir()
    with pytest.raises(InputError, match="case09"):
        find_cases([tmp_path / "pred"], tmp_path / "truth")


def _write_per_case(path: Path, dice_by_case: dict[str, float]) -> None:
    rows = [{"case": c, "class": "liver", "status": "ok", "dice": d} for c, d in dice_by_case.items()]
    path.write_text(csv_text(PER_CASE_COLUMNS, rows))


def test_wilcoxon_comparison_matches_scipy_on_common_cases(tmp_path):
    a = [0.90, 0.85, 0.88, 0.92, 0.80, 0.95, 0.70, 0.83]
    b = [0.93, 0.86, 0.87, 0.96, 0.86, 0.955, 0.79, 0.88]
    _write_per_case(tmp_path / "a.csv", {f"c{i}": v for i, v in enumerate(a)})
    _write_per_case(tmp_path / "b.csv", {**{f"c{i}": v for i, v in enumerate(b)}, "extra": 0.1})
    (row,) = compare_csv(tmp_path / "a.csv", tmp_path / "b.csv")
    expected = stats.wilcoxon(a, b)
    assert (row.class_key, row.metric, row.n) == ("liver", "dice", 8)
    assert row.p_value == pytest.approx(expected.pvalue) and row.statistic == pytest.approx(expected.statistic)
    assert row.mean_difference == pytest.approx(np.mean(np.subtract(b, a)))


def test_wilcoxon_with_identical_values_gives_p_one(tmp_path):
    values = {f"c{i}": 0.5 + 0.01 * i for i in range(5)}
    _write_per_case(tmp_path / "a.csv", values)
    _write_per_case(tmp_path / "b.csv", values)
    (row,) = compare_csv(tmp_path / "a.csv", tmp_path / "b.csv")
    assert (row.statistic, row.p_value, row.mean_difference) == (0.0, 1.0, 0.0)


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    return evaluate_cli.run(parser.parse_args(list(argv)))


def test_cli_door_exit_codes_overwrite_and_tolerances(tmp_path, capsys):
    _write_case(tmp_path / "pred", "c1", _phantom_labels(shift_x=2))
    _write_case(tmp_path / "truth", "c1", _phantom_labels())
    args = ("--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"), "-o", str(tmp_path / "out"))
    assert _run(*args, "--tolerance-mm", "liver=1") == 0
    liver = next(r for r in _read_csv(tmp_path / "out" / "per_case.csv") if r["class"] == "liver")
    assert float(liver["nsd_tolerance_mm"]) == 1.0 and float(liver["nsd"]) < 1.0  # faces 1.6 mm apart
    assert _run(*args) == 2 and "--overwrite" in capsys.readouterr().err
    assert _run(*args, "--overwrite") == 0
    liver = next(r for r in _read_csv(tmp_path / "out" / "per_case.csv") if r["class"] == "liver")
    assert float(liver["nsd"]) == 1.0  # default 7 mm
    assert _run(*args, "--overwrite", "--tolerance-mm", "spleen=3") == 2
    csv_path = str(tmp_path / "out" / "per_case.csv")
    assert _run("--compare", csv_path, csv_path) == 0 and "| liver | dice | 1 |" in capsys.readouterr().out


def test_parse_tolerances_keeps_defaults():
    assert evaluate_cli.parse_tolerances(["tumor=2.5"]) == (7.0, 3.0, 2.5)
    with pytest.raises(InputError):
        evaluate_cli.parse_tolerances(["liver=-1"])


@pytest.mark.slow
def test_ircadb_spec_perfect_prediction(tmp_path):
    if not (DATA / "ircadb01_17_liver.nii.gz").is_file():
        pytest.skip("shared ircadb01_17 data not present")
    spec = {"ircadb01_17": {
        "liver": str(DATA / "ircadb01_17_liver.nii.gz"),
        "vessel": [str(DATA / "ircadb01_17_portalvein.nii.gz"), str(DATA / "ircadb01_17_venoussystem.nii.gz")],
        "tumor": [str(DATA / "ircadb01_17_livertumor1.nii.gz"), str(DATA / "ircadb01_17_livertumor2.nii.gz")],
    }}
    (tmp_path / "truth.yaml").write_text(json.dumps(spec))  # JSON is valid YAML
    truth = read_truth_spec(tmp_path / "truth.yaml")["ircadb01_17"]
    grid, masks, annotated = load_truth(EvaluationCase("ircadb01_17", DATA, truth))
    assert annotated == (True, True, True) and grid.size_ijk == (512, 512, 119)
    # Only the intrahepatic part of portal vein + venous system (about 157 mL) is vessel.
    assert masks[1].sum() * grid.voxel_volume_ml == pytest.approx(47.2, abs=0.5)
    assert not np.any(masks[1] & ~masks[0])
    write_image(grid.with_array(exclusive_labels(masks)), tmp_path / "pred" / "ircadb01_17.nii.gz")
    result = evaluate_folder([tmp_path / "pred"], tmp_path / "truth.yaml", tmp_path / "out")
    scores = {(r["class"], m): r[m] for r in result.rows for m in ("dice", "nsd", "lesion_sensitivity")}
    assert scores[("liver", "dice")] == 1.0 and scores[("vessel", "nsd")] == 1.0
    assert scores[("tumor", "lesion_sensitivity")] == 1.0
    assert not math.isnan(float(scores[("tumor", "dice")]))
