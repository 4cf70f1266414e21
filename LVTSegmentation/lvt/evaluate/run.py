"""``lvt evaluate`` as one call: find the cases, score each one, summarize, write the files.

Outputs of :func:`evaluate_folder`: ``per_case.csv`` (one row per case and class), ``summary.csv``
and ``summary.md`` (mean ± sample sd per metric and class over the cases that have a value).
:func:`lvt.evaluate.paired.compare_csv` runs a paired Wilcoxon signed-rank test between two
``per_case.csv`` files.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lvt.evaluate.files import EvaluationCase, find_cases, load_prediction, load_truth
from lvt.evaluate.scoring import DEFAULT_TOLERANCES_MM, Row, SummaryRow, case_rows, evaluate_case, summarize
from lvt.evaluate.write import OUTPUT_FILES, prepare_output_folder, summary_markdown, write_evaluation
from lvt.progress import ProgressCallback, check_cancel, report


def evaluate_loaded_case(case: EvaluationCase, tolerances_mm: tuple[float, float, float]) -> list[Row]:
    """Read one case's prediction and reference, check their grids match, and score it."""
    grid, truth_masks, annotated = load_truth(case)
    pred = load_prediction(case, grid)
    return case_rows(case.name, evaluate_case(pred, truth_masks, annotated, tolerances_mm))


@dataclass(frozen=True)
class FolderEvaluation:
    """What :func:`evaluate_folder` wrote: per-case rows, the summary and the markdown text."""

    rows: list[Row]
    summary: list[SummaryRow]
    markdown: str


def evaluate_folder(
    pred_paths: Sequence[Path],
    truth_path: Path,
    out_dir: Path,
    tolerances_mm: tuple[float, float, float] = DEFAULT_TOLERANCES_MM,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> FolderEvaluation:
    """Evaluate every prediction against its reference and write per_case.csv, summary.csv, summary.md.

    Args:
        pred_paths: prediction label maps, ``lvt segment`` output folders, or folders of either.
        truth_path: folder of exclusive reference label maps with the same case names, or a
            JSON/YAML spec of per-structure masks (see :func:`lvt.evaluate.files.read_truth_spec`).
        out_dir: output folder; each file is written atomically.
        tolerances_mm: NSD tolerance per class (liver, vessel, tumor).
        overwrite: replace existing output files.
        progress: receives one event per case.
        cancel: checked between cases.

    Raises:
        InputError: missing or ambiguous files, bad label values, or mismatched grids (naming the case).
        CancelledError: when ``cancel`` is set; nothing is written then.
    """
    cases = find_cases(pred_paths, truth_path)
    prepare_output_folder(out_dir, OUTPUT_FILES, overwrite)
    rows: list[Row] = []
    for index, case in enumerate(cases):
        check_cancel(cancel)
        report(progress, "evaluate", index, len(cases), f"case {case.name}")
        rows.extend(evaluate_loaded_case(case, tolerances_mm))
    report(progress, "evaluate", len(cases), len(cases), "writing summaries")
    summary = summarize(rows)
    markdown = summary_markdown(summary, len(cases), tolerances_mm)
    write_evaluation(out_dir, rows, summary, markdown)
    return FolderEvaluation(rows, summary, markdown)
