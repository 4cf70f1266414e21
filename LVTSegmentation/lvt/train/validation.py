"""Scores on held-out cases: Dice per class, and lesions found and false, by the sliding window of inference.

One function scores a predictor (one network or an ensemble) on cached cases, so the training loop's
validation (logged in metrics.jsonl; best.json is the highest mean Dice) and the model comparison benchmark
read the same numbers.

- **Dice** per annotated class on the decoded exclusive labels, before the clean-up: the figure every
  validation since model 1.0.0 reports, kept as it was so that runs stay comparable.
- **Lesions** on the tumor-annotated cases, counted on the labels a user is shown: after the clean-up of
  :func:`lvt.segment.postprocess.postprocess` (largest liver, tumors touching it, the volume floor), because
  a false lesion that the clean-up removes never reaches a report. The rule is
  :func:`lvt.evaluate.lesions.lesion_detection`'s (more than 10 % overlap, on both sides). Dice barely moves
  when a model adds a few small false lesions; the lesion counts do, and a false lesion is what a user
  cannot tell from a real one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lvt.evaluate.lesions import LesionDetection, f1_score, lesion_detection
from lvt.evaluate.metrics import dice_score
from lvt.image import Image
from lvt.labels import CLASS_KEYS, TUMOR, TUMOR_LABEL, exclusive_labels, masks_from_labels
from lvt.segment.postprocess import decode_masks, postprocess
from lvt.segment.predict import Predictor, SlidingWindowConfig
from lvt.train.data.cache import CachedCase

VALIDATION_WINDOWS = SlidingWindowConfig(windows_per_batch=2)


def lesion_summary(detections: Sequence[LesionDetection]) -> dict:
    """Pooled lesion counts over cases, with sensitivity, precision and F1 of the pooled counts.

    Pooled rather than averaged per case: a case without any true lesion has no sensitivity, and one
    large case's lesions should not weigh as much as three small cases' together.
    """
    true = sum(d.true_lesions for d in detections)
    detected = sum(d.detected_lesions for d in detections)
    predicted = sum(d.predicted_lesions for d in detections)
    correct = sum(d.correct_predicted_lesions for d in detections)
    sensitivity = detected / true if true else None
    precision = correct / predicted if predicted else None
    return {"cases": len(detections), "true": true, "detected": detected, "predicted": predicted,
            "false": predicted - correct, "sensitivity": sensitivity, "precision": precision,
            "f1": f1_score(sensitivity, precision)}


def score_case(predictor: Predictor, case: CachedCase, spacing_mm: tuple[float, float, float]
               ) -> tuple[dict[str, float], LesionDetection | None]:
    """Dice per annotated class and, when the case has tumor labels, its lesion detection."""
    probabilities, _ = predictor.predict_probabilities(np.asarray(case.image, dtype=np.float32))
    target = predictor.manifest.target
    predicted = masks_from_labels(exclusive_labels(decode_masks(probabilities, target)))
    truth = case.masks()
    dice = {key: dice_score(predicted[k], truth[k]) for k, key in enumerate(CLASS_KEYS) if case.annotated[k]}
    if not case.annotated[TUMOR]:
        return dice, None
    grid = Image(np.asarray(case.image, dtype=np.float32), spacing_mm)
    shown = postprocess(probabilities, grid, target=target).labels == TUMOR_LABEL
    return dice, lesion_detection(shown, truth[TUMOR], grid)


def summarize(scored: Sequence[tuple[dict[str, float], LesionDetection | None]]) -> dict:
    """Mean Dice per class over the cases annotated for it, their mean, and the pooled lesion counts."""
    per_class: dict[str, list[float]] = {key: [] for key in CLASS_KEYS}
    for dice, _ in scored:
        for key, value in dice.items():
            per_class[key].append(value)
    dice_means = {key: float(np.mean(values)) for key, values in per_class.items() if values}
    result: dict = {"dice": dice_means,
                    "mean_dice": float(np.mean(list(dice_means.values()))) if dice_means else 0.0,
                    "cases_per_class": {key: len(values) for key, values in per_class.items()}}
    if detections := [detection for _, detection in scored if detection is not None]:
        result["lesions"] = lesion_summary(detections)
    return result


def score_cases(predictor: Predictor, cases: Sequence[CachedCase], spacing_mm: tuple[float, float, float]) -> dict:
    """:func:`summarize` of every case's :func:`score_case`."""
    return summarize([score_case(predictor, case, spacing_mm) for case in cases])
