"""Score one predicted label map against a reference, and summarize the scores over cases.

One case is a predicted exclusive label map (0 bg, 1 liver parenchyma, 2 vessel, 3 tumor) and a
multi-hot reference (liver includes vessels and tumors, as the paper evaluates). Classes the
reference does not annotate are reported as "not annotated" and left out of every mean, never
scored as zero. The metric definitions and empty-mask conventions live in :mod:`lvt.evaluate.metrics` and
docs/metrics.md; finding and reading the files is :mod:`lvt.evaluate.files`, writing them
:mod:`lvt.evaluate.write`, and :func:`lvt.evaluate.run.evaluate_folder` ties them together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lvt.evaluate import metrics
from lvt.image import Image
from lvt.labels import CLASS_KEYS, STRUCTURES, TUMOR, masks_from_labels

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

