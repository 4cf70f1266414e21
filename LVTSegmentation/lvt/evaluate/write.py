"""Write what an evaluation found: CSV and markdown text, into a folder never overwritten by accident.

Numbers are written with ``repr`` so a later comparison (:mod:`lvt.evaluate.paired`) reads back
exactly what was computed; every file is written atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from lvt.atomic import write_text_atomically
from lvt.errors import InputError
from lvt.evaluate.scoring import PER_CASE_COLUMNS, STATUS_NOT_ANNOTATED, Row, SummaryRow
from lvt.labels import CLASS_KEYS, STRUCTURES

OUTPUT_FILES: tuple[str, ...] = ("per_case.csv", "summary.csv", "summary.md")


def format_cell(value: object) -> str:
    """A CSV cell: empty for ``None``, floats exactly (``repr``)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> str:
    """CSV with a header row; empty cells for ``None``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[format_cell(row.get(c)) for c in columns] for row in rows])
    return buffer.getvalue()


SUMMARY_COLUMNS: tuple[str, ...] = ("class", "metric", "n", "mean", "sd", "n_infinite", "n_not_annotated")


def summary_records(summary: Sequence[SummaryRow]) -> list[dict[str, object]]:
    """Summary rows as CSV records of :data:`SUMMARY_COLUMNS`."""
    return [dict(zip(SUMMARY_COLUMNS, (s.class_key, s.metric, s.n, s.mean, s.sd, s.n_infinite, s.n_not_annotated),
                     strict=True)) for s in summary]


def summary_csv_text(summary: Sequence[SummaryRow]) -> str:
    """summary.csv: one row per class and metric."""
    return csv_text(SUMMARY_COLUMNS, summary_records(summary))


def _metric_format(metric: str) -> str:
    """Decimals that show a difference: accuracy sits near 1 because background dominates it."""
    if metric == "accuracy":
        return ".4f"
    return ".1f" if metric.endswith("_ml") else ".2f" if metric.endswith("_mm") else ".3f"


def _summary_cell(row: SummaryRow | None) -> str:
    if row is None:
        return "–"
    if row.mean is None:
        return STATUS_NOT_ANNOTATED if row.n_not_annotated and not row.n else f"undefined (n={row.n})"
    fmt = _metric_format(row.metric)
    text = f"{row.mean:{fmt}}" + (f" ± {row.sd:{fmt}}" if row.sd is not None else "") + f" (n={row.n}"
    return text + (f", {row.n_infinite} inf" if row.n_infinite else "") + ")"


def summary_table(summary: Sequence[SummaryRow]) -> list[str]:
    """Markdown table lines: one row per metric, one column per class, cells "mean ± sd (n=...)"."""
    by_key = {(s.class_key, s.metric): s for s in summary}
    metric_names = list(dict.fromkeys(s.metric for s in summary))
    lines = ["| metric | " + " | ".join(s.segment_name for s in STRUCTURES) + " |",
             "|" + "---|" * (len(STRUCTURES) + 1)]
    for metric in metric_names:
        cells = [_summary_cell(by_key.get((key, metric))) for key in CLASS_KEYS]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(summary: Sequence[SummaryRow], n_cases: int, tolerances_mm: Sequence[float]) -> str:
    """summary.md: what was averaged, then :func:`summary_table`."""
    lines = ["# Evaluation summary", "", f"{n_cases} case{'' if n_cases == 1 else 's'}. NSD tolerances: "
             + ", ".join(f"{k} {t:g} mm" for k, t in zip(CLASS_KEYS, tolerances_mm, strict=True))
             + ". Mean ± sample sd over cases where the class is annotated and the metric is defined; "
             "infinite distances (one mask empty) are counted, not averaged; `*_pooled` rows are ratios of lesion "
             "counts summed over cases. See docs/metrics.md.", ""]
    return "\n".join(lines + summary_table(summary)) + "\n"


def prepare_output_folder(out_dir: Path, names: Sequence[str], overwrite: bool) -> None:
    """Create the folder; refuse (before any work) when it already holds one of ``names`` and ``overwrite`` is off."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output exists and is not a folder")
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not overwrite:
        raise InputError(out_dir, f"already holds {', '.join(existing)}; pass --overwrite to replace them")
    out_dir.mkdir(parents=True, exist_ok=True)


def write_evaluation(out_dir: Path, rows: Sequence[Row], summary: Sequence[SummaryRow], markdown: str) -> None:
    """Write per_case.csv, summary.csv and summary.md (see :data:`OUTPUT_FILES`) into a prepared folder."""
    out_dir = Path(out_dir)
    write_text_atomically(out_dir / "per_case.csv", csv_text(PER_CASE_COLUMNS, rows))
    write_text_atomically(out_dir / "summary.csv", summary_csv_text(summary))
    write_text_atomically(out_dir / "summary.md", markdown)
