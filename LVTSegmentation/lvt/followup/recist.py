"""RECIST 1.1 (Eisenhauer et al. 2009), as far as a segmentation can tell it.

Target lesions are at most 5 in all and at most 2 per organ; every lesion here is in the liver, so
there are **at most 2 target lesions**: the measurable baseline lesions (longest axial diameter
>= 10 mm) with the longest diameters. Their sum of longest diameters (SLD) gives the category: CR
when every target lesion has disappeared (and no other lesion remains), PR at a decrease of at
least 30 % from baseline, PD at an increase of at least 20 % and at least 5 mm over the smallest
sum so far (nadir) or any new lesion, SD otherwise. A radiologist confirms every category.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lvt.measure.volumes_and_lesions import Lesion

RECIST_NOTE = ("The RECIST 1.1 category is computed from the automatic segmentation and its automatic lesion "
               "matching. It is a suggestion: a radiologist confirms the target lesions, their measurements, "
               "new lesions and the category before it is used.")
TARGET_RULE = ("RECIST 1.1 allows at most 5 target lesions in all and at most 2 per organ. All lesions here are "
               "liver lesions, so at most 2 target lesions are used: the measurable baseline lesions (longest "
               "axial diameter at least {min_mm:g} mm) with the longest diameters.")
_EPS = 1e-9


@dataclass(frozen=True)
class RecistConfig:
    """RECIST 1.1 thresholds (defaults are the guideline's)."""

    max_targets: int = 5
    max_targets_per_organ: int = 2
    min_measurable_mm: float = 10.0
    partial_response_percent: float = -30.0
    progression_percent: float = 20.0
    progression_mm: float = 5.0

    @property
    def max_liver_targets(self) -> int:
        """All lesions are in one organ (the liver): the per-organ limit applies."""
        return min(self.max_targets, self.max_targets_per_organ)


@dataclass(frozen=True)
class RecistAssessment:
    """A RECIST 1.1 category ("CR", "PR", "SD", "PD", "non-CR/non-PD" or "NED") and why."""

    category: str
    reason: str


def select_targets(lesions: Sequence[Lesion], config: RecistConfig | None = None) -> tuple[int, ...]:
    """Ids of the baseline target lesions: measurable ones with the longest axial diameters, at most 2 in the liver."""
    config = config or RecistConfig()
    measurable = [lesion for lesion in lesions if lesion.diameters.longest_mm >= config.min_measurable_mm - _EPS]
    measurable.sort(key=lambda lesion: (-lesion.diameters.longest_mm, lesion.id))
    return tuple(lesion.id for lesion in measurable[: config.max_liver_targets])


def recist_category(baseline_sld_mm: float, nadir_sld_mm: float, current_sld_mm: float, *, new_lesions: bool,
                    non_targets_present: bool, had_non_targets: bool,
                    config: RecistConfig | None = None) -> RecistAssessment:
    """Overall RECIST 1.1 response of one follow-up from sums of longest diameters (SLD).

    Args:
        baseline_sld_mm: SLD of the target lesions at baseline (0 when there is none).
        nadir_sld_mm: the smallest SLD so far (baseline and earlier follow-ups).
        current_sld_mm: SLD of the same target lesions now (0 for a vanished one).
        new_lesions: a lesion not seen at baseline has appeared.
        non_targets_present: a non-target lesion (baseline lesion that is not a target) is present now.
        had_non_targets: the baseline had non-target lesions.
        config: thresholds.

    Returns:
        The category and a sentence saying which rule decided it.
    """
    config = config or RecistConfig()
    if new_lesions:
        return RecistAssessment("PD", "a new lesion appeared")
    if baseline_sld_mm <= 0:
        return _non_target_only(non_targets_present, had_non_targets)
    increase = current_sld_mm - nadir_sld_mm
    if (increase >= config.progression_percent / 100.0 * nadir_sld_mm - _EPS
            and increase >= config.progression_mm - _EPS):
        return RecistAssessment("PD", f"sum of diameters grew {increase:.1f} mm over the nadir {nadir_sld_mm:.1f} mm "
                                      f"(at least {config.progression_percent:g} % and {config.progression_mm:g} mm)")
    if current_sld_mm <= 0:
        if non_targets_present:
            return RecistAssessment("PR", "all target lesions disappeared but other lesions remain")
        return RecistAssessment("CR", "all lesions disappeared")
    change = 100.0 * (current_sld_mm - baseline_sld_mm) / baseline_sld_mm
    if change <= config.partial_response_percent + _EPS:
        return RecistAssessment("PR", f"sum of diameters changed {change:+.1f} % from baseline "
                                      f"(at most {config.partial_response_percent:g} %)")
    return RecistAssessment("SD", f"sum of diameters changed {change:+.1f} % from baseline and "
                                  f"{increase:+.1f} mm from the nadir: neither PR nor PD")


def _non_target_only(non_targets_present: bool, had_non_targets: bool) -> RecistAssessment:
    if non_targets_present:
        return RecistAssessment("non-CR/non-PD", "no measurable target lesion at baseline; other lesions remain")
    if had_non_targets:
        return RecistAssessment("CR", "no measurable target lesion at baseline; all lesions disappeared")
    return RecistAssessment("NED", "no lesion at baseline and none now")

