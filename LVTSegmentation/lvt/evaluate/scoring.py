"""Score one predicted label map against a reference, and summarize the scores over cases.

One case is a predicted exclusive label map (0 bg, 1 liver parenchyma, 2 vessel, 3 tumor) and a
multi-hot reference (liver includes vessels and tumors, as the paper evaluates). Classes the
reference does not annotate are reported as "not annotated" and left out of every mean, never
scored as zero. The metric definitions and empty-mask conventions live in
:mod:`lvt.evaluate.metrics`, :mod:`lvt.evaluate.surface_dice`, :mod:`lvt.evaluate.lesions` and
docs/metrics.md; finding and reading the files is :mod:`lvt.evaluate.files`, writing them
:mod:`lvt.evaluate.write`, and :func:`lvt.evaluate.run.evaluate_folder` ties them together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lvt.evaluate import metrics
from lvt.evaluate.lesions import LESION_SIZE_BINS, f1_score, lesion_detection
from lvt.evaluate.surface_dice import normalized_surface_dice, surfel_distances
from lvt.image import Image
from lvt.labels import CLASS_KEYS, STRUCTURES, TUMOR, masks_from_labels

DEFAULT_TOLERANCES_MM: tuple[float, float, float] = (7.0, 3.0, 3.0)
STATUS_OK = "ok"
STATUS_NOT_ANNOTATED = "not annotated"
# per_case.csv only ever gains columns at its end, so files and readers of earlier versions stay
# valid: the *_FIRST tuples are the original columns, the *_ADDED ones came later.
_CLASS_METRICS_FIRST = (
    "dice", "precision", "recall", "nsd", "hd95_mm", "assd_mm",
    "volume_true_ml", "volume_pred_ml", "relative_volume_error",
)
_CLASS_METRICS_ADDED = ("jaccard", "accuracy")
_LESION_METRICS_FIRST = ("lesion_sensitivity", "lesion_precision")
_LESION_METRICS_ADDED = ("lesion_f1", *(f"lesion_sensitivity_{b}" for b in LESION_SIZE_BINS))
_LESION_COUNTS_FIRST = ("true_lesions", "detected_lesions", "predicted_lesions", "correct_predicted_lesions")
_LESION_COUNTS_ADDED = (*(f"true_lesions_{b}" for b in LESION_SIZE_BINS),
                        *(f"detected_lesions_{b}" for b in LESION_SIZE_BINS))
CLASS_METRICS: tuple[str, ...] = _CLASS_METRICS_FIRST + _CLASS_METRICS_ADDED
LESION_METRICS: tuple[str, ...] = _LESION_METRICS_FIRST + _LESION_METRICS_ADDED
LESION_COUNTS: tuple[str, ...] = _LESION_COUNTS_FIRST + _LESION_COUNTS_ADDED
SUMMARY_METRICS: tuple[str, ...] = CLASS_METRICS + LESION_METRICS
PER_CASE_COLUMNS: tuple[str, ...] = (
    "case", "class", "status", "nsd_tolerance_mm", *_CLASS_METRICS_FIRST, *_LESION_METRICS_FIRST,
    *_LESION_COUNTS_FIRST, *_CLASS_METRICS_ADDED, *_LESION_METRICS_ADDED, *_LESION_COUNTS_ADDED,
)

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
        "nsd": normalized_surface_dice(surfel_distances(pred, truth, spacing_zyx_mm), tolerance_mm),
        "hd95_mm": metrics.hausdorff_distance_95_mm(distances),
        "assd_mm": metrics.average_symmetric_surface_distance_mm(distances),
        "volume_true_ml": float(np.count_nonzero(truth)) * voxel_ml,
        "volume_pred_ml": float(np.count_nonzero(pred)) * voxel_ml,
        "relative_volume_error": metrics.relative_volume_error(pred, truth),
        "jaccard": metrics.jaccard_score(pred, truth),
        "accuracy": metrics.accuracy_score(pred, truth),
    }


def _lesion_metrics(pred_tumor: np.ndarray, truth_tumor: np.ndarray, grid: Image) -> dict[str, float | int | None]:
    detection = lesion_detection(pred_tumor, truth_tumor, grid)
    return {
        "lesion_sensitivity": detection.sensitivity,
        "lesion_precision": detection.precision,
        "lesion_f1": detection.f1,
        **{f"lesion_sensitivity_{b}": v for b, v in zip(LESION_SIZE_BINS, detection.sensitivity_by_size, strict=True)},
        "true_lesions": detection.true_lesions,
        "detected_lesions": detection.detected_lesions,
        "predicted_lesions": detection.predicted_lesions,
        "correct_predicted_lesions": detection.correct_predicted_lesions,
        **{f"true_lesions_{b}": n for b, n in zip(LESION_SIZE_BINS, detection.true_by_size, strict=True)},
        **{f"detected_lesions_{b}": n for b, n in zip(LESION_SIZE_BINS, detection.detected_by_size, strict=True)},
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
        tumor.update(_lesion_metrics(pred_masks[TUMOR], truth[TUMOR], pred_labels))
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


def summarize_values(key: str, metric: str, values: list[float], n_not_annotated: int) -> SummaryRow:
    """Mean ± sample sd of the finite values (over cases, or over runs); infinite ones only counted."""
    finite = [v for v in values if math.isfinite(v)]
    mean = float(np.mean(finite)) if finite else None
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return SummaryRow(key, metric, len(finite), mean, sd, len(values) - len(finite), n_not_annotated)


def _pooled_lesion_rows(rows: Sequence[Row]) -> list[SummaryRow]:
    """Lesion sensitivity (overall and per size), precision and F1 from counts summed over cases.

    Pooling counts lesions rather than cases, so lesion-free cases and cases with one lesion do not
    distort the rates.
    """
    tumor = [r for r in rows if r["class"] == CLASS_KEYS[TUMOR] and r["status"] == STATUS_OK]
    sums = {k: sum(int(r.get(k) or 0) for r in tumor) for k in LESION_COUNTS}
    def rate(detected: str, total: str) -> float | None:
        return sums[detected] / sums[total] if sums[total] else None

    sensitivity, precision = rate("detected_lesions", "true_lesions"), rate("correct_predicted_lesions",
                                                                            "predicted_lesions")
    rates = {"lesion_sensitivity_pooled": sensitivity, "lesion_precision_pooled": precision,
             "lesion_f1_pooled": f1_score(sensitivity, precision),
             **{f"lesion_sensitivity_pooled_{b}": rate(f"detected_lesions_{b}", f"true_lesions_{b}")
                for b in LESION_SIZE_BINS}}
    n_not_annotated = sum(1 for r in rows if r["class"] == CLASS_KEYS[TUMOR]) - len(tumor)
    return [SummaryRow(CLASS_KEYS[TUMOR], name, len(tumor), rate, None, 0, n_not_annotated)
            for name, rate in rates.items()]


def summarize(rows: Sequence[Row]) -> list[SummaryRow]:
    """Per class and metric: mean ± sd over cases where the class is annotated and the value defined."""
    summary = []
    for key in CLASS_KEYS:
        class_rows = [r for r in rows if r["class"] == key]
        scored = [r for r in class_rows if r["status"] == STATUS_OK]
        metric_names = SUMMARY_METRICS if key == CLASS_KEYS[TUMOR] else CLASS_METRICS
        for metric in metric_names:
            values = [float(r[metric]) for r in scored if r.get(metric) is not None]
            summary.append(summarize_values(key, metric, values, len(class_rows) - len(scored)))
    return summary + _pooled_lesion_rows(rows)

