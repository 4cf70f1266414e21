"""Compare two evaluations case by case: a paired Wilcoxon signed-rank test per class and metric.

Reads two ``per_case.csv`` files written by :func:`lvt.evaluate.run.evaluate_folder` (``lvt evaluate
--compare A.csv B.csv``) and pairs the cases scored in both, so a model change is judged on the
same cases.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from lvt.atomic import write_text_atomically
from lvt.errors import InputError
from lvt.evaluate.scoring import LESION_COUNTS, STATUS_OK, SUMMARY_METRICS, Row
from lvt.evaluate.write import csv_text, prepare_output_folder
from lvt.labels import CLASS_KEYS

COMPARISON_FILES: tuple[str, ...] = ("comparison.csv", "comparison.md")


def _parse_cell(text: str) -> float | None:
    text = text.strip()
    return None if text == "" else float(text)


def read_per_case_csv(path: Path) -> list[Row]:
    """Read a per_case.csv written by :func:`lvt.evaluate.run.evaluate_folder` (numbers parsed, empty cells ``None``).

    The metrics and the lesion counts are read, so the pooled lesion rates can be summarized again.

    Raises:
        InputError: when the file is missing, lacks the case/class/status columns, or has a bad number.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            records = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read per-case CSV: {error}") from error
    if not records or not {"case", "class", "status"} <= set(records[0]):
        raise InputError(path, "not a per_case.csv from lvt evaluate (needs case, class and status columns)")
    rows = []
    for record in records:
        row: Row = {"case": record["case"], "class": record["class"], "status": record["status"]}
        try:
            row.update({m: _parse_cell(record[m]) for m in (*SUMMARY_METRICS, *LESION_COUNTS) if m in record})
        except ValueError as error:
            raise InputError(path, f"case '{record['case']}': {error}") from error
        rows.append(row)
    return rows


@dataclass(frozen=True)
class PairedComparison:
    """Paired Wilcoxon signed-rank test of one metric and class between two evaluations.

    ``mean_difference`` is mean(B - A) over the ``n`` cases where both have a finite value;
    ``p_value`` is two-sided (1.0 when every difference is zero).
    """

    class_key: str
    metric: str
    n: int
    mean_a: float
    mean_b: float
    mean_difference: float
    statistic: float
    p_value: float


def _scored_values(rows: Sequence[Row], key: str, metric: str) -> dict[str, float]:
    """Case -> finite value of one metric of one class, for annotated cases only."""
    values = {}
    for row in rows:
        value = row.get(metric)
        if row["class"] == key and row["status"] == STATUS_OK and isinstance(value, float) and math.isfinite(value):
            values[str(row["case"])] = value
    return values


def _paired_values(a: Sequence[Row], b: Sequence[Row], key: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    values_a, values_b = _scored_values(a, key, metric), _scored_values(b, key, metric)
    common = sorted(set(values_a) & set(values_b))
    return np.array([values_a[c] for c in common]), np.array([values_b[c] for c in common])


def wilcoxon_paired(values_a: np.ndarray, values_b: np.ndarray) -> tuple[float, float]:
    """(statistic, two-sided p) of scipy's Wilcoxon signed-rank test; (0, 1) when all differences are 0."""
    differences = values_b - values_a
    if not np.any(differences):
        return 0.0, 1.0
    result = stats.wilcoxon(values_a, values_b)
    return float(result.statistic), float(result.pvalue)


def compare_csv(a_csv: Path, b_csv: Path) -> list[PairedComparison]:
    """Paired Wilcoxon signed-rank test per class and metric over the cases both CSVs scored.

    Args:
        a_csv: per_case.csv of evaluation A (e.g. the baseline).
        b_csv: per_case.csv of evaluation B.

    Returns:
        One row per class and metric with at least one paired case; cases missing from either file,
        not annotated, undefined or infinite there are left out.

    Raises:
        InputError: when either file is not a readable per_case.csv.
    """
    rows_a, rows_b = read_per_case_csv(Path(a_csv)), read_per_case_csv(Path(b_csv))
    table = []
    for key in CLASS_KEYS:
        for metric in SUMMARY_METRICS:
            values_a, values_b = _paired_values(rows_a, rows_b, key, metric)
            if values_a.size == 0:
                continue
            statistic, p_value = wilcoxon_paired(values_a, values_b)
            table.append(PairedComparison(key, metric, int(values_a.size), float(values_a.mean()),
                                          float(values_b.mean()), float((values_b - values_a).mean()),
                                          statistic, p_value))
    return table


def comparison_markdown(table: Sequence[PairedComparison], a_csv: Path, b_csv: Path) -> str:
    """comparison.md: one table row per class and metric."""
    lines = [f"# Paired comparison\n\nA = {a_csv}, B = {b_csv}; Wilcoxon signed-rank test (two-sided) "
             "over cases scored in both.\n", "| class | metric | n | mean A | mean B | mean B−A | p |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {c.class_key} | {c.metric} | {c.n} | {c.mean_a:.4g} | {c.mean_b:.4g} | "
              f"{c.mean_difference:+.4g} | {c.p_value:.4g} |" for c in table]
    return "\n".join(lines) + "\n"


def comparison_csv_text(table: Sequence[PairedComparison]) -> str:
    """comparison.csv: one row per class and metric."""
    columns = ("class", "metric", "n", "mean_a", "mean_b", "mean_difference", "statistic", "p_value")
    rows = [{"class": c.class_key, "metric": c.metric, "n": c.n, "mean_a": c.mean_a, "mean_b": c.mean_b,
             "mean_difference": c.mean_difference, "statistic": c.statistic, "p_value": c.p_value} for c in table]
    return csv_text(columns, rows)



def compare_per_case_files(a_csv: Path, b_csv: Path, out_dir: Path | None = None, overwrite: bool = False) -> str:
    """Compare two per_case.csv files (:func:`compare_csv`); write comparison.csv/.md when ``out_dir`` is given.

    Returns:
        The comparison as a markdown table.

    Raises:
        InputError: unreadable CSVs, or an output folder that already holds the files without ``overwrite``.
    """
    table = compare_csv(a_csv, b_csv)
    markdown = comparison_markdown(table, a_csv, b_csv)
    if out_dir is not None:
        prepare_output_folder(out_dir, COMPARISON_FILES, overwrite)
        write_text_atomically(Path(out_dir) / "comparison.csv", comparison_csv_text(table))
        write_text_atomically(Path(out_dir) / "comparison.md", markdown)
    return markdown
