"""compare.json: the follow-up as a JSON-ready document (volumes mL, lengths mm, points LPS mm).

Per study its measurements, per follow-up its registration, the liver volume change, every lesion
track, and per consecutive pair of studies the matched, new and vanished lesions with the RECIST
1.1 category (:mod:`lvt.followup.recist`). The reports (:mod:`lvt.followup.report`) and the Slicer
module read this document; nothing is recomputed there.
"""

from __future__ import annotations

from collections.abc import Sequence

from lvt import __version__
from lvt.followup.compare import FollowUp, LesionTrack
from lvt.followup.recist import RECIST_NOTE, TARGET_RULE, recist_category


def followup_document(followup: FollowUp, warnings: Sequence[str] = ()) -> dict:
    """The content of compare.json (JSON-ready; volumes mL, lengths mm, points LPS mm)."""
    config = followup.config.recist
    baseline_lesions = {lesion.id: lesion for lesion in followup.studies[0].measurements.lesions}
    return {
        "lvt_version": __version__,
        "studies": [_study_entry(followup, index) for index in range(len(followup.studies))],
        "registrations": [None if r is None else {"study": i, "to_study": 0, **r.to_dict()}
                          for i, r in enumerate(followup.registrations)],
        "liver_volume": _liver_volumes(followup),
        "tracks": [_track_entry(followup, track) for track in followup.tracks],
        "comparisons": [_comparison(followup, index) for index in range(1, len(followup.studies))],
        "recist": {
            "target_rule": TARGET_RULE.format(min_mm=config.min_measurable_mm),
            "note": RECIST_NOTE,
            "targets": [{"track": t, "baseline_lesion_id": t,
                         "baseline_longest_axial_diameter_mm": baseline_lesions[t].diameters.longest_mm}
                        for t in followup.targets],
        },
        "warnings": [str(w) for w in warnings],
    }


def _study_entry(followup: FollowUp, index: int) -> dict:
    study = followup.studies[index]
    return {"index": index, "name": study.name, "source": str(study.source), "has_ct": study.ct is not None,
            "spacing_mm": list(study.labels.spacing_mm), "size_ijk": [int(n) for n in study.labels.size_ijk],
            **study.measurements.to_dict()}


def _liver_volumes(followup: FollowUp) -> list[dict]:
    volumes = [study.measurements.whole_liver_volume_ml for study in followup.studies]
    entries = []
    for index, volume in enumerate(volumes):
        entry = {"study": index, "whole_volume_ml": volume}
        if index > 0:
            entry |= _change("change_from_previous", volumes[index - 1], volume)
            entry |= _change("change_from_baseline", volumes[0], volume)
        entries.append(entry)
    return entries


def _change(prefix: str, before: float, after: float, unit: str = "ml") -> dict:
    percent = 100.0 * (after - before) / before if before > 0 else None
    return {f"{prefix}_{unit}": after - before, f"{prefix}_percent": percent}


def track_status(followup: FollowUp, track: LesionTrack, study: int) -> str:
    """"present", "absent", "coalesced", "not yet seen" or "not evaluated"."""
    if track.lesion_ids[study] is None:
        return "not evaluated"
    if study < track.first_seen:
        return "not yet seen"
    if track.lesion_ids[study]:
        return "present"
    return "coalesced" if track.coalesced_into[study] is not None else "absent"


def _track_entry(followup: FollowUp, track: LesionTrack) -> dict:
    per_study = []
    for study in range(len(followup.studies)):
        volume, diameter = followup.size(track, study)
        status = track_status(followup, track, study)
        measured = status in ("present", "absent", "coalesced")
        per_study.append({"study": study, "status": status, "lesion_ids": list(track.lesion_ids[study] or ()),
                          "volume_ml": volume if measured else None,
                          "longest_axial_diameter_mm": diameter if measured else None,
                          "coalesced_into": track.coalesced_into[study]})
    return {"id": track.id, "first_seen_study": track.first_seen, "target": track.id in followup.targets,
            "per_study": per_study}


def _previous_evaluated(followup: FollowUp, study: int) -> int:
    return max(s for s in range(study) if followup.evaluated(s))


def _comparison(followup: FollowUp, study: int) -> dict:
    before = _previous_evaluated(followup, study)
    entry: dict = {"from_study": before, "to_study": study}
    if not followup.evaluated(study):
        reasons = followup.registrations[study].refusal_reasons  # type: ignore[union-attr]
        return entry | {"status": "refused", "refusal_reasons": list(reasons), "matched": [], "new": [],
                        "vanished": [], "recist": None}
    matched, new, vanished = [], [], []
    for track in followup.tracks:
        was, now = (track_status(followup, track, s) == "present" for s in (before, study))
        if was and now:
            matched.append(_matched_entry(followup, track, before, study))
        elif now:
            new.append(_single_entry(followup, track, study) | {"reappeared": track.first_seen < study})
        elif was:
            vanished.append(_single_entry(followup, track, before) | {"coalesced_into": track.coalesced_into[study]})
    return entry | {"status": "compared", "refusal_reasons": [], "matched": matched, "new": new,
                    "vanished": vanished, "recist": _recist_entry(followup, study)}


def _matched_entry(followup: FollowUp, track: LesionTrack, before: int, after: int) -> dict:
    (volume_a, diameter_a), (volume_b, diameter_b) = followup.size(track, before), followup.size(track, after)
    return {"track": track.id, "target": track.id in followup.targets,
            "lesion_ids": [list(track.lesion_ids[before] or ()), list(track.lesion_ids[after] or ())],
            "volume_ml": [volume_a, volume_b], **_change("volume_change", volume_a, volume_b),
            "longest_axial_diameter_mm": [diameter_a, diameter_b],
            **_change("diameter_change", diameter_a, diameter_b, "mm")}


def _single_entry(followup: FollowUp, track: LesionTrack, study: int) -> dict:
    volume, diameter = followup.size(track, study)
    return {"track": track.id, "target": track.id in followup.targets, "study": study,
            "lesion_ids": list(track.lesion_ids[study] or ()), "volume_ml": volume,
            "longest_axial_diameter_mm": diameter}


def sum_of_diameters(followup: FollowUp, study: int) -> float:
    """Sum of the longest axial diameters of the target tracks in a study (0 mm for a vanished one)."""
    return float(sum(followup.size(track, study)[1] for track in followup.tracks if track.id in followup.targets))


def _recist_entry(followup: FollowUp, study: int) -> dict:
    evaluated = [s for s in range(study) if followup.evaluated(s)]
    baseline, current = sum_of_diameters(followup, 0), sum_of_diameters(followup, study)
    nadir = min(sum_of_diameters(followup, s) for s in evaluated)
    new = [t.id for t in followup.tracks if 0 < t.first_seen <= study]
    non_targets = [t for t in followup.tracks if t.first_seen == 0 and t.id not in followup.targets]
    present = any(track_status(followup, t, study) == "present" for t in non_targets)
    assessment = recist_category(baseline, nadir, current, new_lesions=bool(new), non_targets_present=present,
                                 had_non_targets=bool(non_targets), config=followup.config.recist)
    return {"category": assessment.category, "reason": assessment.reason, "target_tracks": list(followup.targets),
            "sum_of_longest_diameters_mm": {"baseline": baseline, "nadir": nadir, "current": current},
            "change_from_baseline_percent": 100.0 * (current - baseline) / baseline if baseline > 0 else None,
            "change_from_nadir_mm": current - nadir, "new_lesion_tracks": new,
            "non_target_lesions_present": present, "note": RECIST_NOTE}

