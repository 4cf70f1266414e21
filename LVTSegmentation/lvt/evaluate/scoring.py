"""Evaluate predicted label maps against reference segmentations (``lvt evaluate``).

One case is a predicted exclusive label map (0 bg, 1 liver parenchyma, 2 vessel, 3 tumor) and a
multi-hot reference (liver includes vessels and tumors, as the paper evaluates). Classes the
reference does not annotate are reported as "not annotated" and left out of every mean, never
scored as zero. The metric definitions and empty-mask conventions live in :mod:`lvt.evaluate.metrics` and
docs/metrics.md.

Outputs of :func:`evaluate_folder`: ``per_case.csv`` (one row per case and class), ``summary.csv``
and ``summary.md`` (mean ± sample sd per metric and class over the cases that have a value).
:func:`compare_csv` runs a paired Wilcoxon signed-rank test between two ``per_case.csv`` files.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from lvt.atomic import write_text_atomically
from lvt.errors import InputError
from lvt.evaluate import metrics
from lvt.image import Image
from lvt.io import read_label_image, read_segmentation
from lvt.labels import CLASS_KEYS, LIVER, STRUCTURES, TUMOR, VESSEL, apply_hierarchy, masks_from_labels
from lvt.progress import ProgressCallback, check_cancel, report

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCES_MM: tuple[float, float, float] = (7.0, 3.0, 3.0)
STATUS_OK = "ok"
STATUS_NOT_ANNOTATED = "not annotated"
CLASS_METRICS: tuple[str, ...] = (
    "dice", "precision", "recall", "nsd", "hd95_mm", "assd_mm",
    "volume_true_ml", "volume_pred_ml", "relative_volume_error",
)
LESION_METRICS: tuple[str, ...] = ("lesion_sensitivity", "lesion_precision")
LESION_COUNTS: tuple[str, ...] = ("true_lesions", "detected_lesions", "predicted_lesions", "correct_predicted_lesions")
SUMMARY_METRICS: tuple[str, ...] = CLASS_METRICS + LESION_METRICS
PER_CASE_COLUMNS: tuple[str, ...] = ("case", "class", "status", "nsd_tolerance_mm", *SUMMARY_METRICS, *LESION_COUNTS)
OUTPUT_FILES: tuple[str, ...] = ("per_case.csv", "summary.csv", "summary.md")
SEGMENT_OUTPUT_LABELS = "labels.nii.gz"
LABEL_SUFFIXES: tuple[str, ...] = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SPEC_SUFFIXES: tuple[str, ...] = (".json", ".yaml", ".yml")

Row = dict[str, object]


# ---------------------------------------------------------------------------------------------- one case


def _class_metrics(pred: np.ndarray, truth: np.ndarray, spacing_zyx_mm: tuple, tolerance_mm: float,
                   voxel_ml: float) -> dict[str, float]:
    """Every per-class metric for one annotated class (see :mod:`lvt.evaluate.metrics` for the conventions)."""
    distances = metrics.surface_distances(pred, truth, spacing_zyx_mm)
    return {
        "dice": metrics.dice_score(pred, truth),
        "precision": metrics.precision_score(pred, truth),
        "recall": metrics.recall_score(pred, truth),
        "nsd": metrics.normalized_surface_dice(distances, tolerance_mm),
        "hd95_mm": metrics.hausdorff_distance_95_mm(distances),
        "assd_mm": metrics.average_symmetric_surface_distance_mm(distances),
        "volume_true_ml": float(np.count_nonzero(truth)) * voxel_ml,
        "volume_pred_ml": float(np.count_nonzero(pred)) * voxel_ml,
        "relative_volume_error": metrics.relative_volume_error(pred, truth),
    }


def _lesion_metrics(pred_tumor: np.ndarray, truth_tumor: np.ndarray) -> dict[str, float | int | None]:
    detection = metrics.lesion_detection(pred_tumor, truth_tumor)
    return {
        "lesion_sensitivity": detection.sensitivity,
        "lesion_precision": detection.precision,
        "true_lesions": detection.true_lesions,
        "detected_lesions": detection.detected_lesions,
        "predicted_lesions": detection.predicted_lesions,
        "correct_predicted_lesions": detection.correct_predicted_lesions,
    }


def evaluate_case(
    pred_labels: Image,
    truth_masks: np.ndarray,
    annotated: tuple[bool, bool, bool],
    tolerances_mm: tuple[float, float, float] = DEFAULT_TOLERANCES_MM,
) -> dict[str, dict[str, object]]:
    """Score one predicted label map against a multi-hot reference.

    Args:
        pred_labels: exclusive label map (0 bg, 1 liver parenchyma, 2 vessel, 3 tumor) on the
            reference grid; converted to multi-hot masks, so "liver" is the whole liver.
        truth_masks: (3, Z, Y, X) bool multi-hot reference in channel order (liver, vessel, tumor),
            liver already including vessels and tumors.
        annotated: whether the reference annotates each class; unannotated classes get ``None``.
        tolerances_mm: NSD tolerance per class in mm (METHOD.md: 7, 3, 3).

    Returns:
        ``{class key: {"annotated": bool, "nsd_tolerance_mm": float, metric: value}}`` with the
        metrics of :data:`CLASS_METRICS` (``None`` when not annotated); the tumor entry also holds
        :data:`LESION_METRICS` and :data:`LESION_COUNTS`.

    Raises:
        ValueError: when the reference shape does not match the prediction grid.
    """
    if truth_masks.shape != (3, *pred_labels.array.shape):
        raise ValueError(f"truth masks {truth_masks.shape} do not match the prediction grid {pred_labels.array.shape}")
    pred_masks = masks_from_labels(pred_labels.array)
    truth = truth_masks.astype(bool, copy=False)
    spacing_zyx_mm = tuple(pred_labels.spacing_mm[::-1])
    result: dict[str, dict[str, object]] = {}
    for structure in STRUCTURES:
        channel = structure.channel
        entry: dict[str, object] = {"annotated": bool(annotated[channel]),
                                    "nsd_tolerance_mm": float(tolerances_mm[channel])}
        if annotated[channel]:
            entry.update(_class_metrics(pred_masks[channel], truth[channel], spacing_zyx_mm,
                                        tolerances_mm[channel], pred_labels.voxel_volume_ml))
        else:
            entry.update(dict.fromkeys(CLASS_METRICS))
        result[structure.key] = entry
    tumor = result[CLASS_KEYS[TUMOR]]
    if annotated[TUMOR]:
        tumor.update(_lesion_metrics(pred_masks[TUMOR], truth[TUMOR]))
    else:
        tumor.update(dict.fromkeys(LESION_METRICS + LESION_COUNTS))
    return result


def case_rows(case: str, result: Mapping[str, Mapping[str, object]]) -> list[Row]:
    """Flatten an :func:`evaluate_case` result into one per-case CSV row per class."""
    rows = []
    for key in CLASS_KEYS:
        entry = result[key]
        row: Row = dict.fromkeys(PER_CASE_COLUMNS)
        row.update({k: v for k, v in entry.items() if k in PER_CASE_COLUMNS})
        row.update(case=case, **{"class": key}, status=STATUS_OK if entry["annotated"] else STATUS_NOT_ANNOTATED)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------- finding the files


@dataclass(frozen=True)
class TruthSource:
    """Where one case's reference lives: an exclusive label map, or binary masks per structure.

    Attributes:
        labels_path: exclusive label map (0..3), every class annotated; ``None`` for structure masks.
        structure_paths: class key -> mask files whose union (voxels > 0) is that class; a class
            without an entry is not annotated.
    """

    labels_path: Path | None = None
    structure_paths: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationCase:
    name: str
    pred_path: Path
    truth: TruthSource


def case_name_of(path: Path) -> str | None:
    """Case name of a label file (its name without a known suffix); ``None`` for other files."""
    lower = path.name.lower()
    for suffix in LABEL_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def _predictions_in_folder(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and (child / SEGMENT_OUTPUT_LABELS).is_file():
            found.append((child.name, child / SEGMENT_OUTPUT_LABELS))
        elif child.is_file() and (name := case_name_of(child)) is not None:
            found.append((name, child))
    return found


def find_predictions(paths: Sequence[Path]) -> dict[str, Path]:
    """Case name -> predicted label map, from files, ``lvt segment`` output folders, or folders of either.

    Raises:
        InputError: for a missing path, a case found twice, or when nothing was found.
    """
    found: list[tuple[str, Path]] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append((case_name_of(path) or path.name, path))
        elif (path / SEGMENT_OUTPUT_LABELS).is_file():
            found.append((path.name, path / SEGMENT_OUTPUT_LABELS))
        elif path.is_dir():
            found.extend(_predictions_in_folder(path))
        else:
            raise InputError(path, "prediction path does not exist")
    cases: dict[str, Path] = {}
    for name, path in found:
        if name in cases:
            raise InputError(path, f"case '{name}' is given twice (also {cases[name]}); keep one prediction per case")
        cases[name] = path
    if not cases:
        raise InputError(paths[0] if paths else None, f"no prediction label maps found ({', '.join(LABEL_SUFFIXES)})")
    return cases


def _truth_label_file(folder: Path, name: str) -> Path:
    candidates = [folder / f"{name}{suffix}" for suffix in LABEL_SUFFIXES] + [folder / name / SEGMENT_OUTPUT_LABELS]
    existing = [c for c in candidates if c.is_file()]
    if len(existing) != 1:
        problem = "no reference label map" if not existing else f"several reference files {existing}"
        raise InputError(folder, f"case '{name}': {problem}; expected {name}.nii.gz (or .nrrd, .mha, ...)")
    return existing[0]


def _as_paths(value: object, spec_path: Path, case: str, key: str) -> tuple[Path, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise InputError(spec_path, f"case '{case}', {key}: expected a path or a non-empty list of paths")
    return tuple((spec_path.parent / item).resolve() for item in items)


def read_truth_spec(spec_path: Path) -> dict[str, TruthSource]:
    """Read a JSON/YAML spec ``{case: {liver: path | [paths], vessel: ..., tumor: ...}}``.

    Relative paths are relative to the spec file. A missing class is not annotated for that case.

    Raises:
        InputError: for unreadable files, unknown class keys or malformed entries.
    """
    try:
        text = spec_path.read_text(encoding="utf-8")
        spec = json.loads(text) if spec_path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise InputError(spec_path, f"cannot read the truth spec: {error}") from error
    if not isinstance(spec, dict) or not spec:
        raise InputError(spec_path, "expected a mapping from case name to {liver: ..., vessel: ..., tumor: ...}")
    sources = {}
    for case, entry in spec.items():
        if not isinstance(entry, dict) or not entry:
            raise InputError(spec_path, f"case '{case}': expected a mapping of {', '.join(CLASS_KEYS)} to paths")
        unknown = set(entry) - set(CLASS_KEYS)
        if unknown:
            raise InputError(
                spec_path, f"case '{case}': unknown classes {sorted(unknown)}; use {', '.join(CLASS_KEYS)}"
            )
        paths = {key: _as_paths(value, spec_path, str(case), key) for key, value in entry.items()}
        sources[str(case)] = TruthSource(structure_paths=paths)
    return sources


def find_cases(pred_paths: Sequence[Path], truth_path: Path) -> list[EvaluationCase]:
    """Pair every prediction with its reference, checking that all files exist before any is read.

    Args:
        pred_paths: prediction files or folders (see :func:`find_predictions`).
        truth_path: a folder of exclusive label maps named like the cases, or a JSON/YAML spec
            (see :func:`read_truth_spec`).

    Raises:
        InputError: naming the case and the missing or ambiguous file.
    """
    predictions = find_predictions(pred_paths)
    truth_path = Path(truth_path)
    if truth_path.is_file() and truth_path.suffix.lower() in SPEC_SUFFIXES:
        spec = read_truth_spec(truth_path)
        missing = sorted(set(predictions) - set(spec))
        if missing:
            raise InputError(truth_path, f"no reference for cases {missing}")
        sources = {name: spec[name] for name in predictions}
    elif truth_path.is_dir():
        sources = {name: TruthSource(labels_path=_truth_label_file(truth_path, name)) for name in predictions}
    else:
        raise InputError(truth_path, "reference must be a folder of label maps or a .json/.yaml spec")
    cases = [EvaluationCase(name, predictions[name], sources[name]) for name in sorted(predictions)]
    for case in cases:
        for path in case.truth.structure_paths.values():
            for file in path:
                if not file.is_file():
                    raise InputError(file, f"case '{case.name}': reference mask does not exist")
    return cases


# ---------------------------------------------------------------------------------------- loading a case


def _check_same_grid(reference: Image, other: Image, path: Path, case: str, what: str) -> None:
    if not reference.same_grid(other):
        raise InputError(
            path,
            f"case '{case}': {what} grid (size {other.size_ijk}, spacing {other.spacing_mm}, origin "
            f"{other.origin_lps_mm}) does not match the reference grid (size {reference.size_ijk}, spacing "
            f"{reference.spacing_mm}, origin {reference.origin_lps_mm}); evaluate on the reference CT grid",
        )


def _read_structure_masks(case: EvaluationCase) -> tuple[Image, np.ndarray, tuple[bool, bool, bool]]:
    """Union of each class's binary masks (> 0); vessels and tumors clipped to the liver when it is annotated."""
    paths = case.truth.structure_paths
    images = {path: read_label_image(path) for key in CLASS_KEYS for path in paths.get(key, ())}
    grid = next(iter(images.values()))
    masks = np.zeros((3, *grid.array.shape), dtype=bool)
    for channel, key in enumerate(CLASS_KEYS):
        for path in paths.get(key, ()):
            _check_same_grid(grid, images[path], path, case.name, "reference mask")
            masks[channel] |= images[path].array > 0
    annotated = tuple(key in paths for key in CLASS_KEYS)
    if annotated[LIVER]:
        # The classes are *intrahepatic* vessels and *liver* tumors (IRCAD's portal vein runs outside).
        masks[VESSEL] &= masks[LIVER]
        masks[TUMOR] &= masks[LIVER]
    return grid, apply_hierarchy(masks), annotated  # type: ignore[return-value]


def load_truth(case: EvaluationCase) -> tuple[Image, np.ndarray, tuple[bool, bool, bool]]:
    """Read a case's reference: (grid, (3, Z, Y, X) bool multi-hot masks, annotated per class)."""
    if case.truth.labels_path is not None:
        labels = read_segmentation(case.truth.labels_path)
        return labels, masks_from_labels(labels.array), (True, True, True)
    return _read_structure_masks(case)


def evaluate_loaded_case(case: EvaluationCase, tolerances_mm: tuple[float, float, float]) -> list[Row]:
    """Read one case's prediction and reference, check their grids match, and score it."""
    grid, truth_masks, annotated = load_truth(case)
    pred = read_segmentation(case.pred_path)
    _check_same_grid(grid, pred, case.pred_path, case.name, "prediction")
    return case_rows(case.name, evaluate_case(pred, truth_masks, annotated, tolerances_mm))


# ------------------------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class SummaryRow:
    """Mean and sample standard deviation of one metric of one class over the cases with a value.

    ``n`` counts finite values; infinite values (a distance or volume error with one empty mask) are
    counted in ``n_infinite`` and left out of the mean. Pooled lesion rows carry the ratio of summed
    counts in ``mean`` and no ``sd``.
    """

    class_key: str
    metric: str
    n: int
    mean: float | None
    sd: float | None
    n_infinite: int
    n_not_annotated: int


def _summarize_values(key: str, metric: str, values: list[float], n_not_annotated: int) -> SummaryRow:
    finite = [v for v in values if math.isfinite(v)]
    mean = float(np.mean(finite)) if finite else None
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return SummaryRow(key, metric, len(finite), mean, sd, len(values) - len(finite), n_not_annotated)


def _pooled_lesion_rows(rows: Sequence[Row]) -> list[SummaryRow]:
    """Lesion sensitivity and precision from counts summed over cases (robust to lesion-free cases)."""
    tumor = [r for r in rows if r["class"] == CLASS_KEYS[TUMOR] and r["status"] == STATUS_OK]
    sums = {k: sum(int(r[k] or 0) for r in tumor) for k in LESION_COUNTS}
    pairs = (("lesion_sensitivity_pooled", "detected_lesions", "true_lesions"),
             ("lesion_precision_pooled", "correct_predicted_lesions", "predicted_lesions"))
    return [
        SummaryRow(CLASS_KEYS[TUMOR], name, len(tumor), sums[num] / sums[den] if sums[den] else None, None, 0,
                   sum(1 for r in rows if r["class"] == CLASS_KEYS[TUMOR]) - len(tumor))
        for name, num, den in pairs
    ]


def summarize(rows: Sequence[Row]) -> list[SummaryRow]:
    """Per class and metric: mean ± sd over cases where the class is annotated and the value defined."""
    summary = []
    for key in CLASS_KEYS:
        class_rows = [r for r in rows if r["class"] == key]
        scored = [r for r in class_rows if r["status"] == STATUS_OK]
        metric_names = SUMMARY_METRICS if key == CLASS_KEYS[TUMOR] else CLASS_METRICS
        for metric in metric_names:
            values = [float(r[metric]) for r in scored if r.get(metric) is not None]
            summary.append(_summarize_values(key, metric, values, len(class_rows) - len(scored)))
    return summary + _pooled_lesion_rows(rows)


# ---------------------------------------------------------------------------------------- file writing


def _format_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(float(value))  # round-trips exactly, so a comparison reads back what was computed
    return str(value)


def _csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_format_cell(row.get(c)) for c in columns] for row in rows])
    return buffer.getvalue()


def summary_csv_text(summary: Sequence[SummaryRow]) -> str:
    columns = ("class", "metric", "n", "mean", "sd", "n_infinite", "n_not_annotated")
    rows = [dict(zip(columns, (s.class_key, s.metric, s.n, s.mean, s.sd, s.n_infinite, s.n_not_annotated),
                     strict=True)) for s in summary]
    return _csv_text(columns, rows)


def _metric_format(metric: str) -> str:
    return ".1f" if metric.endswith("_ml") else ".2f" if metric.endswith("_mm") else ".3f"


def _summary_cell(row: SummaryRow | None) -> str:
    if row is None:
        return "–"
    if row.mean is None:
        return STATUS_NOT_ANNOTATED if row.n_not_annotated and not row.n else f"undefined (n={row.n})"
    fmt = _metric_format(row.metric)
    text = f"{row.mean:{fmt}}" + (f" ± {row.sd:{fmt}}" if row.sd is not None else "") + f" (n={row.n}"
    return text + (f", {row.n_infinite} inf" if row.n_infinite else "") + ")"


def summary_markdown(summary: Sequence[SummaryRow], n_cases: int, tolerances_mm: Sequence[float]) -> str:
    """Markdown table: one row per metric, one column per class, cells "mean ± sd (n=...)"."""
    by_key = {(s.class_key, s.metric): s for s in summary}
    metric_names = list(dict.fromkeys(s.metric for s in summary))
    header = "| metric | " + " | ".join(s.segment_name for s in STRUCTURES) + " |"
    lines = ["# Evaluation summary", "", f"{n_cases} case{'' if n_cases == 1 else 's'}. NSD tolerances: "
             + ", ".join(f"{k} {t:g} mm" for k, t in zip(CLASS_KEYS, tolerances_mm, strict=True))
             + ". Mean ± sample sd over cases where the class is annotated and the metric is defined; "
             "infinite distances (one mask empty) are counted, not averaged. See docs/metrics.md.", "",
             header, "|" + "---|" * (len(STRUCTURES) + 1)]
    for metric in metric_names:
        cells = [_summary_cell(by_key.get((key, metric))) for key in CLASS_KEYS]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _prepare_output(out_dir: Path, names: Sequence[str], overwrite: bool) -> None:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output exists and is not a folder")
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not overwrite:
        raise InputError(out_dir, f"already holds {', '.join(existing)}; pass --overwrite to replace them")
    out_dir.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------------------------ the folder


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
            JSON/YAML spec of per-structure masks (see :func:`read_truth_spec`).
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
    _prepare_output(out_dir, OUTPUT_FILES, overwrite)
    rows: list[Row] = []
    for index, case in enumerate(cases):
        check_cancel(cancel)
        report(progress, "evaluate", index, len(cases), f"case {case.name}")
        rows.extend(evaluate_loaded_case(case, tolerances_mm))
    report(progress, "evaluate", len(cases), len(cases), "writing summaries")
    summary = summarize(rows)
    markdown = summary_markdown(summary, len(cases), tolerances_mm)
    out_dir = Path(out_dir)
    write_text_atomically(out_dir / "per_case.csv", _csv_text(PER_CASE_COLUMNS, rows))
    write_text_atomically(out_dir / "summary.csv", summary_csv_text(summary))
    write_text_atomically(out_dir / "summary.md", markdown)
    return FolderEvaluation(rows, summary, markdown)


# ---------------------------------------------------------------------------------------- comparison


def _parse_cell(text: str) -> float | None:
    text = text.strip()
    return None if text == "" else float(text)


def read_per_case_csv(path: Path) -> list[Row]:
    """Read a per_case.csv written by :func:`evaluate_folder` (numbers parsed, empty cells ``None``).

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
            row.update({m: _parse_cell(record[m]) for m in SUMMARY_METRICS if m in record})
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
    lines = [f"# Paired comparison\n\nA = {a_csv}, B = {b_csv}; Wilcoxon signed-rank test (two-sided) "
             "over cases scored in both.\n", "| class | metric | n | mean A | mean B | mean B−A | p |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {c.class_key} | {c.metric} | {c.n} | {c.mean_a:.4g} | {c.mean_b:.4g} | "
              f"{c.mean_difference:+.4g} | {c.p_value:.4g} |" for c in table]
    return "\n".join(lines) + "\n"


def comparison_csv_text(table: Sequence[PairedComparison]) -> str:
    columns = ("class", "metric", "n", "mean_a", "mean_b", "mean_difference", "statistic", "p_value")
    rows = [{"class": c.class_key, "metric": c.metric, "n": c.n, "mean_a": c.mean_a, "mean_b": c.mean_b,
             "mean_difference": c.mean_difference, "statistic": c.statistic, "p_value": c.p_value} for c in table]
    return _csv_text(columns, rows)


# ------------------------------------------------------------------------------------------- the door


def parse_tolerances(items: Sequence[str]) -> tuple[float, float, float]:
    """``["liver=7", "tumor=2.5"]`` -> (7.0, 3.0, 2.5): defaults for classes not named.

    Raises:
        InputError: for an unknown class or a tolerance that is not a non-negative number.
    """
    tolerances = dict(zip(CLASS_KEYS, DEFAULT_TOLERANCES_MM, strict=True))
    for item in items:
        key, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if key not in tolerances or not math.isfinite(number) or number < 0:
            raise InputError(None, f"--tolerance-mm {item!r}: expected CLASS=MM with CLASS in {', '.join(CLASS_KEYS)}")
        tolerances[key] = number
    return tuple(tolerances[k] for k in CLASS_KEYS)  # type: ignore[return-value]


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``lvt evaluate`` options to a (sub)parser."""
    parser.add_argument("--pred", nargs="+", type=Path, metavar="PATH",
                        help="prediction label maps (0..3), `lvt segment` output folders, or folders of either")
    parser.add_argument("--truth", type=Path, metavar="PATH",
                        help="folder of reference label maps (0..3) with the same case names, or a JSON/YAML "
                             "spec {case: {liver: path|[paths], vessel: ..., tumor: ...}} of binary masks")
    parser.add_argument("-o", "--output", type=Path, metavar="OUTDIR",
                        help="folder for per_case.csv, summary.csv, summary.md (or comparison.csv/.md)")
    parser.add_argument("--tolerance-mm", nargs="+", default=[], metavar="CLASS=MM",
                        help="NSD tolerances, default liver=7 vessel=3 tumor=3")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A_CSV", "B_CSV"),
                        help="instead of evaluating: paired Wilcoxon test between two per_case.csv files")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _log_progress(event: object) -> None:
    logger.info("%s", getattr(event, "message", event))


def _run_compare(args: argparse.Namespace) -> str:
    a_csv, b_csv = args.compare
    table = compare_csv(a_csv, b_csv)
    markdown = comparison_markdown(table, a_csv, b_csv)
    if args.output is not None:
        _prepare_output(args.output, ("comparison.csv", "comparison.md"), args.overwrite)
        write_text_atomically(Path(args.output) / "comparison.csv", comparison_csv_text(table))
        write_text_atomically(Path(args.output) / "comparison.md", markdown)
    return markdown


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``lvt evaluate`` from parsed arguments; print the summary table.

    Returns:
        0 on success, 2 for bad input (the message, naming file and problem, goes to stderr).
    """
    try:
        if args.compare is not None:
            if args.pred or args.truth:
                raise InputError(None, "give either --compare A.csv B.csv or --pred/--truth, not both")
            sys.stdout.write(_run_compare(args))
            return 0
        if not args.pred or args.truth is None or args.output is None:
            raise InputError(None, "lvt evaluate needs --pred, --truth and -o (or --compare A.csv B.csv)")
        tolerances = parse_tolerances(args.tolerance_mm)
        result = evaluate_folder(args.pred, args.truth, args.output, tolerances, args.overwrite, _log_progress)
        sys.stdout.write(result.markdown)
        return 0
    except InputError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
