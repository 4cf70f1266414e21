"""Mean ± sd over runs or folds: how much a result moves between trainings, not only between cases.

Each run is an ``lvt evaluate`` output (its ``per_case.csv``). Per run, every class and metric is
summarized as in its ``summary.csv`` (the mean over its cases, pooled lesion rates over its lesions);
then the per-run values are summarized the same way over the runs: mean ± sample sd, n = runs with a
value. The paper reports its cross-validation so (METHOD.md, Evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lvt.atomic import write_text_atomically
from lvt.errors import InputError
from lvt.evaluate.paired import read_per_case_csv
from lvt.evaluate.scoring import SummaryRow, summarize, summarize_values
from lvt.evaluate.write import (
    SUMMARY_COLUMNS,
    csv_text,
    prepare_output_folder,
    summary_csv_text,
    summary_records,
    summary_table,
)

RUNS_FILES: tuple[str, ...] = ("per_run.csv", "runs_summary.csv", "runs_summary.md")


@dataclass(frozen=True)
class RunsSummary:
    """Each run's summary (by the name given for it) and the summary over the runs."""

    runs: list[tuple[str, list[SummaryRow]]]
    summary: list[SummaryRow]


def _per_case_csv(path: Path) -> Path:
    """An evaluation folder's per_case.csv, or the CSV itself."""
    return path / "per_case.csv" if path.is_dir() else path


def summarize_runs(paths: Sequence[Path]) -> RunsSummary:
    """Mean ± sd over runs of each run's summary value, per class and metric.

    A run where a class was never annotated, or a metric never defined, adds no value to that row;
    the runs where the class was not annotated at all are counted in ``n_not_annotated``.

    Raises:
        InputError: fewer than two runs, or a run that is not a readable per_case.csv (or a folder with one).
    """
    if len(paths) < 2:
        raise InputError(None, f"a summary over runs needs at least two evaluations, got {len(paths)}")
    runs = [(str(path), summarize(read_per_case_csv(_per_case_csv(Path(path))))) for path in paths]
    summary = []
    for index, first in enumerate(runs[0][1]):  # summarize lists the same rows in the same order for every run
        rows = [run[index] for _, run in runs]
        values = [row.mean for row in rows if row.mean is not None]
        not_annotated = sum(1 for row in rows if row.mean is None and row.n_not_annotated and not row.n)
        summary.append(summarize_values(first.class_key, first.metric, values, not_annotated))
    return RunsSummary(runs, summary)


def runs_markdown(result: RunsSummary) -> str:
    """runs_summary.md: which runs, what was averaged, then the table."""
    names = ", ".join(f"`{name}`" for name, _ in result.runs)
    lines = ["# Summary over runs", "", f"{len(result.runs)} runs: {names}. Per run, the mean over its cases "
             "(`*_pooled`: the rate over its lesions), as in its summary.csv; here mean ± sample sd of those "
             "per-run values over the runs that have one (n = runs). See docs/metrics.md.", ""]
    return "\n".join(lines + summary_table(result.summary)) + "\n"


def summarize_run_folders(paths: Sequence[Path], out_dir: Path | None = None, overwrite: bool = False) -> str:
    """:func:`summarize_runs`; write per_run.csv, runs_summary.csv and runs_summary.md when ``out_dir`` is given.

    Returns:
        The summary as markdown.

    Raises:
        InputError: as :func:`summarize_runs`, or an output folder that already holds the files
            without ``overwrite``.
    """
    result = summarize_runs(paths)
    markdown = runs_markdown(result)
    if out_dir is not None:
        prepare_output_folder(out_dir, RUNS_FILES, overwrite)
        per_run = [{"run": name, **record} for name, rows in result.runs for record in summary_records(rows)]
        write_text_atomically(Path(out_dir) / "per_run.csv", csv_text(("run", *SUMMARY_COLUMNS), per_run))
        write_text_atomically(Path(out_dir) / "runs_summary.csv", summary_csv_text(result.summary))
        write_text_atomically(Path(out_dir) / "runs_summary.md", markdown)
    return markdown
