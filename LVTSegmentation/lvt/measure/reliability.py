"""What a report can be trusted for: a missing, small or cut liver, and the model's record on real CT.

The checks read report.json, not the label map, so that the report page, ``lvt segment --strict``
and the Slicer module draw the same conclusions from the same file, also from a report written
earlier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real

# Far under any adult liver (1,000 to 2,000 mL): below it the scan misses the liver or the segmentation failed.
MIN_LIVER_ML = 200.0
# The model manifest's "metrics" entry with its figures on real CT with expert labels (see Resources/Models).
REAL_CT_METRICS_KEY = "real_ct_expert_labels"
# Below this tumor Dice on real CT (good published models reach 0.7 to 0.8), a tumor volume is no measurement.
MEASURING_TUMOR_DICE = 0.7
NO_LIVER_ASSESSMENT = "No liver found: no lesion assessment."
NOT_A_MEASUREMENT = "the tumor burden is not a measurement; review every lesion."


def reliability_problems(report: Mapping) -> list[str]:
    """Why the report's numbers must not be used as they stand; empty when nothing is known to be wrong.

    ``lvt segment --strict`` fails (exit 2) on any of them; the report lists them first in "warnings".
    """
    liver_ml = float(report["liver"]["whole_volume_ml"])
    problems = []
    if not liver_found(report):
        problems.append("No liver found in this image (does the scan cover the liver?): no lesion assessment was "
                        "made, so finding no lesion here is not a negative finding.")
    elif liver_ml < MIN_LIVER_ML:
        problems.append(f"The liver found is only {liver_ml:.1f} mL, under {MIN_LIVER_ML:.0f} mL (an adult liver is "
                        "1,000 to 2,000 mL): the scan covers only part of it or the segmentation failed; do not use "
                        "the volumes or the lesion table as they stand.")
    sides = report.get("liver_cut_by_image_edge") or []
    if sides and liver_found(report):
        problems.append(f"The liver reaches {cut_sides_text(sides)}: it goes on beyond the image, so the whole-liver "
                        f"volume ({liver_ml:.1f} mL) is a lower bound and lesions there are not assessed.")
    return problems


def liver_found(report: Mapping) -> bool:
    """Whether the report measured a liver at all (without one, no lesion was looked for)."""
    return float(report["liver"]["whole_volume_ml"]) > 0.0


def cut_sides_text(sides: Sequence[str]) -> str:
    """Patient sides where the liver touches the image's edge, in words ("the inferior end of the scan range")."""
    phrases = [f"the {side} end of the scan range" if side in ("superior", "inferior")
               else f"the {side} edge of the field of view" for side in sides]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1] if len(phrases) > 1 else phrases[0]


def model_reliability(model: Mapping | None) -> str | None:
    """One plain sentence on what the model that made the labels can be trusted for; None when no model ran.

    Args:
        model: the model summary given to the report; its "metrics" are the manifest's, where
            :data:`REAL_CT_METRICS_KEY` holds "dice" (liver, vessel, tumor), "lesions_true",
            "lesions_found" and "cases". Missing or malformed figures count as no validation.
    """
    if model is None:
        return None
    figures = _real_ct_figures((model.get("metrics") or {}).get(REAL_CT_METRICS_KEY))
    if figures is None:
        return f"This model has no validation on real CT with expert tumor labels: {NOT_A_MEASUREMENT}"
    dice, found, true, cases = figures
    where = f"On {cases} real CT{'s' if cases > 1 else ''}" if cases else "On real CT"
    text = (f"{where} with expert labels this model found {found} of {true} tumors (tumor Dice {dice['tumor']:.2f}; "
            f"liver {dice['liver']:.2f}, vessels {dice['vessel']:.2f})")
    if found < true or dice["tumor"] < MEASURING_TUMOR_DICE:
        return f"{text}: {NOT_A_MEASUREMENT}"
    return f"{text}; review every lesion."


def _real_ct_figures(entry: object) -> tuple[dict[str, float], int, int, int] | None:
    """(dice by class, lesions found, lesions true, number of cases) from a manifest entry, or None."""
    if not isinstance(entry, Mapping):
        return None
    dice, found, true = entry.get("dice"), entry.get("lesions_found"), entry.get("lesions_true")
    if not isinstance(dice, Mapping) or not all(isinstance(dice.get(k), Real) for k in ("liver", "vessel", "tumor")):
        return None
    if not (isinstance(found, int) and isinstance(true, int) and 0 <= found <= true and true > 0):
        return None
    cases = entry.get("cases")
    count = len(cases) if isinstance(cases, list) else 0
    return {k: float(dice[k]) for k in ("liver", "vessel", "tumor")}, found, true, count
