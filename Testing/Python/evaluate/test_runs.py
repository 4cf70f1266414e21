"""Mean ± sd over runs or folds, from hand-made per_case.csv files whose answers are known."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from lvt.cli.main import run as lvt
from lvt.errors import InputError
from lvt.evaluate.runs import summarize_run_folders, summarize_runs
from lvt.evaluate.scoring import PER_CASE_COLUMNS
from lvt.evaluate.write import csv_text


def _evaluation(folder: Path, liver_dice: list[float], lesions: list[tuple[int, int]] | None = None) -> Path:
    """An lvt evaluate folder: liver Dice per case; tumor (true, detected) lesion counts, or not annotated."""
    rows = []
    for index, dice in enumerate(liver_dice):
        rows.append({"case": f"c{index}", "class": "liver", "status": "ok", "dice": dice})
        true, detected = lesions[index] if lesions else (None, None)
        rows.append({"case": f"c{index}", "class": "tumor", "status": "ok" if lesions else "not annotated",
                     "true_lesions": true, "detected_lesions": detected,
                     "lesion_sensitivity": detected / true if lesions and true else None})
    folder.mkdir(parents=True)
    (folder / "per_case.csv").write_text(csv_text(PER_CASE_COLUMNS, rows), encoding="utf-8")
    return folder


def _row(summary: list, key: str, metric: str):
    return next(row for row in summary if (row.class_key, row.metric) == (key, metric))


def test_mean_and_sd_are_over_the_runs_means(tmp_path: Path) -> None:
    runs = [_evaluation(tmp_path / "f0", [0.8, 0.9], [(2, 1), (2, 2)]),  # run means 0.85, 0.75, 0.95
            _evaluation(tmp_path / "f1", [0.7, 0.8], [(4, 1), (0, 0)]),
            _evaluation(tmp_path / "f2", [0.95], None) / "per_case.csv"]  # a CSV path works too
    result = summarize_runs(runs)
    dice = _row(result.summary, "liver", "dice")
    assert (dice.n, dice.mean) == (3, pytest.approx(0.85))
    assert dice.sd == pytest.approx(statistics.stdev([0.85, 0.75, 0.95]))
    # the per-case sensitivity means are 0.75 and 0.25; the third run does not annotate tumors
    sensitivity = _row(result.summary, "tumor", "lesion_sensitivity")
    assert (sensitivity.n, sensitivity.mean, sensitivity.n_not_annotated) == (2, pytest.approx(0.5), 1)
    # pooled per run over its lesions: 3/4 and 1/4
    pooled = _row(result.summary, "tumor", "lesion_sensitivity_pooled")
    assert (pooled.n, pooled.mean) == (2, pytest.approx(0.5))
    assert pooled.sd == pytest.approx(statistics.stdev([0.75, 0.25]))


def test_the_files_and_the_command_line(tmp_path: Path, capsys) -> None:
    runs = [str(_evaluation(tmp_path / f"f{k}", [0.6 + 0.1 * k])) for k in range(2)]
    assert lvt(["evaluate", "--runs", *runs, "-o", str(tmp_path / "out")]) == 0
    assert "| dice | 0.650 ± 0.071 (n=2)" in capsys.readouterr().out
    with open(tmp_path / "out" / "per_run.csv", newline="", encoding="utf-8") as handle:
        per_run = [r for r in csv.DictReader(handle) if (r["class"], r["metric"]) == ("liver", "dice")]
    assert [(r["run"], float(r["mean"])) for r in per_run] == [(runs[0], pytest.approx(0.6)), (runs[1], 0.7)]
    with open(tmp_path / "out" / "runs_summary.csv", newline="", encoding="utf-8") as handle:
        dice = next(r for r in csv.DictReader(handle) if (r["class"], r["metric"]) == ("liver", "dice"))
    assert (dice["n"], float(dice["mean"])) == ("2", pytest.approx(0.65))
    assert float(dice["sd"]) == pytest.approx(statistics.stdev([0.6, 0.7]))
    assert (tmp_path / "out" / "runs_summary.md").read_text(encoding="utf-8").startswith("# Summary over runs")
    assert lvt(["evaluate", "--runs", *runs, "-o", str(tmp_path / "out")]) == 2  # files there, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert lvt(["evaluate", "--runs", runs[0]]) == 2
    assert capsys.readouterr().err.startswith("lvt: error: a summary over runs needs at least two evaluations")
    assert lvt(["evaluate", "--runs", *runs, "--compare", runs[0], runs[1]]) == 2


def test_a_run_that_is_not_an_evaluation_is_named(tmp_path: Path) -> None:
    good = _evaluation(tmp_path / "f0", [0.9])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty/per_case\.csv: cannot read per-case CSV"):
        summarize_run_folders([good, tmp_path / "empty"])
