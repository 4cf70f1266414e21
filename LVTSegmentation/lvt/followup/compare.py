"""Follow-up of one patient: align the studies on the liver, match lesions, measure change, RECIST 1.1.

Every study is measured on its own grid (:func:`lvt.measure.volumes_and_lesions.measure_labels`), so each number is
exactly what ``lvt segment`` reports for that study. Registration (:mod:`lvt.followup.register`) is used
only to decide which lesions are the same:

- Every follow-up is aligned to the first study (the baseline). Lesions are followed as *tracks*
  in the baseline's space: a track's footprint is the union of its lesions mapped there. A
  follow-up lesion joins the track it overlaps most, when the overlap (footprints widened by
  ``match_margin_mm``) covers at least ``min_overlap_fraction`` of the smaller of the two; else it
  starts a new track (a new lesion). Baseline target lesions are preferred when a lesion overlaps
  several tracks (RECIST: coalesced target lesions keep their diameter in the sum).
- One track may hold several lesions of a study (a lesion that split): its volume and diameter are
  the sums (RECIST 1.1 rule for fragmented lesions). A track whose lesion merged into another
  track's lesion is "coalesced" there and counts 0 mm.
- When a registration is refused, lesions of that study are not matched at all ("not evaluated").

RECIST 1.1 (Eisenhauer et al. 2009), as far as a segmentation can tell it: target lesions are at most
5 in all and at most 2 per organ; every lesion here is in the liver, so there are **at most 2 target
lesions**: the measurable baseline lesions (longest axial diameter >= 10 mm) with the longest
diameters. Their sum of longest diameters (SLD) gives the category: CR when every target lesion has
disappeared (and no other lesion remains), PR at a decrease of at least 30 % from baseline, PD at an
increase of at least 20 % and at least 5 mm over the smallest sum so far (nadir) or any new lesion,
SD otherwise. A radiologist confirms every category.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lvt import __version__
from lvt.errors import InputError
from lvt.followup.register import Registration, RegistrationConfig, register_livers, warp_to_fixed
from lvt.grid import bounding_box_in, crop, resample_like
from lvt.image import Image
from lvt.labels import STRUCTURES, TUMOR
from lvt.measure.planning import lesion_id_map
from lvt.measure.volumes_and_lesions import Lesion, Measurements, measure_labels
from lvt.progress import Progress, ProgressCallback, check_cancel, report

if TYPE_CHECKING:
    from lvt.segment.pipeline import SegmentOptions

logger = logging.getLogger(__name__)

RESULT_FILES = ("segmentation.seg.nrrd", "labels.nii.gz")
RECIST_NOTE = ("The RECIST 1.1 category is computed from the automatic segmentation and its automatic lesion "
               "matching. It is a suggestion: a radiologist confirms the target lesions, their measurements, "
               "new lesions and the category before it is used.")
TARGET_RULE = ("RECIST 1.1 allows at most 5 target lesions in all and at most 2 per organ. All lesions here are "
               "liver lesions, so at most 2 target lesions are used: the measurable baseline lesions (longest "
               "axial diameter at least {min_mm:g} mm) with the longest diameters.")
_EPS = 1e-9


# ------------------------------------------------------------------------------------------- RECIST 1.1


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


# --------------------------------------------------------------------------------------------- studies


@dataclass(frozen=True, eq=False)
class Study:
    """One study: its exclusive labels, the CT when known, and its measurements."""

    name: str
    source: Path
    labels: Image
    ct: Image | None
    measurements: Measurements

    @classmethod
    def of(cls, name: str, source: Path, labels: Image, ct: Image | None = None) -> Study:
        """A study from labels (and CT on the same grid), measured here."""
        if not (labels.array > 0).any():
            raise InputError(source, "the segmentation has no liver; nothing to compare")
        return cls(name, Path(source), labels, ct, measure_labels(labels))


def is_result_folder(path: Path) -> bool:
    """An ``lvt segment`` / ``lvt measure`` output folder (report.json and a segmentation)."""
    return path.is_dir() and (path / "report.json").is_file() and any((path / n).is_file() for n in RESULT_FILES)


def load_result_folder(folder: Path, name: str) -> Study:
    """A study from an output folder: the (possibly edited) segmentation.seg.nrrd, else labels.nii.gz.

    The CT is the report's input when a model produced the folder (``lvt segment``) and the file
    still exists; a segmentation stored cropped (Slicer) is placed back on the CT grid.
    """
    from lvt.io import read_image, read_segmentation

    seg_path = next(folder / n for n in RESULT_FILES if (folder / n).is_file())
    labels = read_segmentation(seg_path)
    try:
        document = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(folder / "report.json", f"cannot be read as JSON ({error})") from error
    ct_path = Path(document.get("input", {}).get("path", "")) if document.get("model") else None
    ct = read_image(ct_path, allow_non_ct=True) if ct_path is not None and ct_path.exists() else None
    if ct is not None and not labels.same_grid(ct):
        labels = resample_like(labels, ct, interpolation="nearest")
    return Study.of(name, folder, labels, ct)


def study_names(inputs: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    """The user's names, else the input names without extensions (numbered when they repeat)."""
    if names:
        if len(names) != len(inputs):
            raise InputError(None, f"--names gives {len(names)} names for {len(inputs)} studies")
        return list(names)
    stems = [Path(p).name.split(".")[0] or str(p) for p in inputs]
    return [f"{n + 1}-{s}" if stems.count(s) > 1 else s for n, s in enumerate(stems)]


def load_studies(inputs: Sequence[Path], names: Sequence[str], staging: Path, options: SegmentOptions,
                 progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> list[Study]:
    """Load result folders as they are; segment CTs (``lvt segment``) into ``staging/studies/NAME``.

    Args:
        inputs: CT files or DICOM folders, or ``lvt segment`` output folders.
        names: one name per input (see :func:`study_names`).
        staging: the output folder being written; per-study segmentations go under ``studies/``.
        options: :class:`lvt.segment.pipeline.SegmentOptions` for the CTs.
        progress: receives "segment" and "read" events per study.
        cancel: checked between studies.
    """
    from lvt.io import read_image
    from lvt.segment.pipeline import segment_file

    studies = []
    for index, (path, name) in enumerate(zip(inputs, names, strict=True)):
        check_cancel(cancel)
        path = Path(path)
        report(progress, "segment", index, len(inputs), f"study {index + 1} of {len(inputs)}: {path}")
        if is_result_folder(path):
            studies.append(load_result_folder(path, name))
            continue
        folder = staging / "studies" / _safe_name(name)
        segment_file(path, folder, options, progress=_study_progress(progress, index, len(inputs)), cancel=cancel)
        study = load_result_folder(folder, name)
        studies.append(replace(study, source=path, ct=study.ct or read_image(path, allow_non_ct=True)))
    report(progress, "segment", len(inputs), len(inputs), "studies loaded")
    return studies


def _study_progress(progress: ProgressCallback | None, index: int, total: int) -> ProgressCallback | None:
    """Forward ``lvt segment`` events of one study as "segment" events over all studies."""
    from lvt.cli.console import overall_fraction

    if progress is None:
        return None

    def forward(event: Progress) -> None:
        progress(Progress("segment", index + overall_fraction(event), total,
                          f"study {index + 1} of {total}, {event.stage}: {event.message}"))

    return forward


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "study"


# --------------------------------------------------------------------------------------------- tracking


@dataclass(frozen=True)
class CompareConfig:
    """Registration, lesion matching and RECIST settings of ``lvt compare``."""

    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    recist: RecistConfig = field(default_factory=RecistConfig)
    match_margin_mm: float = 2.0
    min_overlap_fraction: float = 0.3


@dataclass(frozen=True, eq=False)
class LesionTrack:
    """One lesion followed through the studies.

    Attributes:
        id: 1..N; baseline lesions keep their own ids, new lesions follow in order of appearance.
        first_seen: index of the first study it appears in.
        lesion_ids: per study, the ids (in that study's report) of the lesions that belong to it;
            empty when absent, None when that study could not be matched (registration refused).
        coalesced_into: per study, the track its lesion merged into, else None.
    """

    id: int
    first_seen: int
    lesion_ids: tuple[tuple[int, ...] | None, ...]
    coalesced_into: tuple[int | None, ...]


@dataclass(frozen=True, eq=False)
class FollowUp:
    """Studies, their registrations to the baseline, and the lesion tracks."""

    studies: tuple[Study, ...]
    registrations: tuple[Registration | None, ...]
    tracks: tuple[LesionTrack, ...]
    targets: tuple[int, ...]
    config: CompareConfig

    def evaluated(self, study: int) -> bool:
        """The baseline, or a follow-up whose registration was accepted."""
        registration = self.registrations[study]
        return registration is None or registration.accepted

    def map_point(self, point_lps: np.ndarray, source: int, target: int) -> np.ndarray:
        """A point of study ``source`` in study ``target`` (LPS mm), through the baseline."""
        point = np.asarray(point_lps, dtype=float)
        if self.registrations[source] is not None:
            point = self.registrations[source].moving_to_fixed_points(point)[0]
        if self.registrations[target] is not None:
            point = self.registrations[target].fixed_to_moving_points(point)[0]
        return point

    def lesions_of(self, track: LesionTrack, study: int) -> list[Lesion]:
        ids = track.lesion_ids[study] or ()
        by_id = {lesion.id: lesion for lesion in self.studies[study].measurements.lesions}
        return [by_id[i] for i in ids]

    def size(self, track: LesionTrack, study: int) -> tuple[float, float]:
        """(volume mL, longest axial diameter mm) of a track in a study, summed over its fragments."""
        lesions = self.lesions_of(track, study)
        return (float(sum(lesion.volume_ml for lesion in lesions)),
                float(sum(lesion.diameters.longest_mm for lesion in lesions)))


class _TrackBuilder:
    """Mutable tracks in the baseline's liver crop while the studies are matched one by one."""

    def __init__(self, reference: Image, n_studies: int, config: CompareConfig) -> None:
        self.reference = reference
        self.n_studies = n_studies
        self.config = config
        self.footprints: dict[int, np.ndarray] = {}
        self.widened: dict[int, np.ndarray] = {}
        self.members: dict[int, list[tuple[int, ...] | None]] = {}
        self.coalesced: dict[int, list[int | None]] = {}
        self.first_seen: dict[int, int] = {}
        self.skipped: set[int] = set()

    def add(self, track: int, study: int, lesion_ids: tuple[int, ...], footprint: np.ndarray) -> None:
        if track not in self.members:
            self.members[track] = [None if s in self.skipped else () for s in range(self.n_studies)]
            self.coalesced[track] = [None] * self.n_studies
            self.first_seen[track] = study
            self.footprints[track] = np.zeros(0, dtype=np.int64)
        self.members[track][study] = lesion_ids
        self.footprints[track] = np.union1d(self.footprints[track], footprint)
        self.widened[track] = _widen(self.footprints[track], self.reference, self.config.match_margin_mm)

    def skip(self, study: int) -> None:
        """Mark a study as not matched (its registration was refused)."""
        self.skipped.add(study)
        for members in self.members.values():
            members[study] = None

    def build(self) -> tuple[LesionTrack, ...]:
        return tuple(LesionTrack(t, self.first_seen[t], tuple(self.members[t]), tuple(self.coalesced[t]))
                     for t in sorted(self.members))


def _widen(flat: np.ndarray, grid: Image, margin_mm: float) -> np.ndarray:
    """Flat indices of the voxels within ``margin_mm`` of a footprint (computed on its bounding box)."""
    if margin_mm <= 0 or flat.size == 0:
        return flat
    shape = grid.array.shape
    kji = np.stack(np.unravel_index(flat, shape), axis=1)
    spacing_zyx = np.asarray(grid.spacing_mm[::-1])
    pad = np.ceil(margin_mm / spacing_zyx).astype(int)
    low, high = np.maximum(kji.min(0) - pad, 0), np.minimum(kji.max(0) + pad + 1, shape)
    box = np.zeros(high - low, dtype=bool)
    box[tuple((kji - low).T)] = True
    near = ndimage.distance_transform_edt(~box, sampling=spacing_zyx) <= margin_mm
    return np.ravel_multi_index(tuple((np.argwhere(near) + low).T), shape)


def _footprints(study: Study, reference: Image, registration: Registration | None) -> dict[int, np.ndarray]:
    """Each lesion of a study as flat voxel indices of the baseline crop ``reference``.

    A follow-up lesion is the union of its nearest-neighbour warp (dense when the baseline grid is
    the coarser) and its mapped voxel centres (no lesion is lost when the baseline grid is finer).
    """
    tumor = study.labels.with_array(study.labels.array == STRUCTURES[TUMOR].label_value)
    ids = study.labels.with_array(lesion_id_map(tumor, study.measurements.lesions))
    if registration is None:
        warped = resample_like(ids, reference, interpolation="nearest").array
        centres = np.zeros((0, 3))
    else:
        warped = warp_to_fixed(ids, reference, registration.fixed_to_moving).array
        voxels = np.argwhere(ids.array > 0)
        centres = registration.moving_to_fixed_points(study.labels.ijk_to_lps(voxels[:, ::-1]))
    result = {lesion.id: [np.flatnonzero(warped == lesion.id)] for lesion in study.measurements.lesions}
    if len(centres):
        kji = np.round(reference.lps_to_ijk(centres)[:, ::-1]).astype(int)
        inside = np.all((kji >= 0) & (kji < reference.array.shape), axis=1)
        flat = np.ravel_multi_index(tuple(kji[inside].T), reference.array.shape)
        owners = ids.array[tuple(voxels[inside].T)]
        for lesion_id in result:
            result[lesion_id].append(flat[owners == lesion_id])
    return {lesion_id: np.unique(np.concatenate(parts)) for lesion_id, parts in result.items()}


def _match_study(builder: _TrackBuilder, study_index: int, footprints: dict[int, np.ndarray],
                 targets: Sequence[int]) -> None:
    """Join each lesion of one follow-up to the track it overlaps most (targets first), or start a new one."""
    assigned: dict[int, list[int]] = {}
    candidates_of: dict[int, list[int]] = {}
    for lesion_id, footprint in sorted(footprints.items()):
        candidates = []
        for track, widened in builder.widened.items():
            overlap = int(np.count_nonzero(np.isin(footprint, widened, assume_unique=True)))
            smaller = max(1, min(footprint.size, builder.footprints[track].size))
            if overlap > 0 and overlap / smaller >= builder.config.min_overlap_fraction:
                candidates.append((track in targets, overlap, -track))
        candidates_of[lesion_id] = [-c[2] for c in candidates]
        if candidates:
            assigned.setdefault(-max(candidates)[2], []).append(lesion_id)
    next_id = max(builder.members, default=0) + 1
    for lesion_id, footprint in sorted(footprints.items()):
        if not candidates_of[lesion_id]:
            builder.add(next_id, study_index, (lesion_id,), footprint)
            next_id += 1
    for track, lesion_ids in assigned.items():
        union = np.unique(np.concatenate([footprints[i] for i in lesion_ids]))
        builder.add(track, study_index, tuple(sorted(lesion_ids)), union)
    for lesion_id, tracks in candidates_of.items():
        winner = next((t for t, ids in assigned.items() if lesion_id in ids), None)
        for track in tracks:
            if track != winner and track not in assigned and builder.first_seen[track] < study_index:
                builder.coalesced[track][study_index] = winner


def baseline_reference(baseline: Study, margin_mm: float) -> Image:
    """The baseline grid cropped to its liver plus a margin: where lesion footprints live."""
    liver = baseline.labels.array > 0
    return crop(baseline.labels, bounding_box_in(baseline.labels, baseline.labels, liver, margin_mm))


def follow_up(studies: Sequence[Study], config: CompareConfig | None = None,
              progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> FollowUp:
    """Register every follow-up to the baseline (the first study) and follow the lesions through them.

    Args:
        studies: two or more studies of one patient, oldest first.
        config: registration, matching and RECIST settings.
        progress: receives "register" and "match" events.
        cancel: checked between studies.

    Returns:
        The follow-up; refused registrations leave their study unmatched.

    Raises:
        InputError: fewer than two studies.
    """
    config = config or CompareConfig()
    if len(studies) < 2:
        raise InputError(None, f"compare needs at least two studies, got {len(studies)}")
    baseline = studies[0]
    reference = baseline_reference(baseline, config.match_margin_mm + 10.0)
    builder = _TrackBuilder(reference, len(studies), config)
    for lesion_id, footprint in _footprints(baseline, reference, None).items():
        builder.add(lesion_id, 0, (lesion_id,), footprint)
    targets = select_targets(baseline.measurements.lesions, config.recist)
    registrations: list[Registration | None] = [None]
    for index, study in enumerate(studies[1:], start=1):
        check_cancel(cancel)
        report(progress, "register", index - 1, len(studies) - 1, f"aligning {study.name} to {baseline.name}")
        registration = register_livers(baseline.labels, study.labels, baseline.ct, study.ct, config.registration,
                                       cancel=cancel)
        registrations.append(registration)
        if not registration.accepted:
            logger.warning("%s: registration refused: %s", study.name, "; ".join(registration.refusal_reasons))
            builder.skip(index)
            continue
        report(progress, "match", index - 1, len(studies) - 1, f"matching lesions of {study.name}")
        _match_study(builder, index, _footprints(study, reference, registration), targets)
    report(progress, "match", len(studies) - 1, len(studies) - 1, "lesions matched")
    return FollowUp(tuple(studies), tuple(registrations), builder.build(), targets, config)


# ---------------------------------------------------------------------------------------- compare.json


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


# ------------------------------------------------------------------------------------------- the door


def compare_files(inputs: Sequence[Path], out_dir: Path, options: SegmentOptions,
                  config: CompareConfig | None = None, *, names: Sequence[str] | None = None, overwrite: bool = False,
                  progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> dict:
    """``lvt compare``: load or segment every study, follow the lesions, write compare.json/.html atomically.

    Args:
        inputs: two or more CTs or ``lvt segment`` output folders of one patient, oldest first.
        out_dir: output folder (replaced only with ``overwrite``).
        options: :class:`lvt.segment.pipeline.SegmentOptions` for inputs that are CTs.
        config: registration, matching and RECIST settings.
        names: study names for tables and the plot (default: the input names).
        overwrite: replace an existing output folder.
        progress: receives "segment", "register", "match" and "report" events.
        cancel: checked between steps.

    Returns:
        The compare.json document (also written). Refused registrations are in it, not raised.
    """
    from lvt.followup.report import write_compare_report
    from lvt.segment.pipeline import atomic_output_folder

    if len(inputs) < 2:
        raise InputError(None, f"compare needs at least two studies, got {len(inputs)}")
    labels = study_names(inputs, names)
    with atomic_output_folder(out_dir, overwrite) as staging:
        studies = load_studies(inputs, labels, staging, options, progress, cancel)
        followup = follow_up(studies, config, progress, cancel)
        warnings = _missing_ct_warnings(studies)
        report(progress, "report", 0, 1, "compare.json and compare.html")
        document = followup_document(followup, warnings)
        write_compare_report(staging, document, followup)
        report(progress, "report", 1, 1, "done")
    return document


def _missing_ct_warnings(studies: Sequence[Study]) -> list[str]:
    missing = [s.name for s in studies if s.ct is None]
    if not missing:
        return []
    return [f"no CT for {', '.join(missing)}: the livers were aligned on their masks alone and the views show "
            "the labels without the CT"]


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lvt compare`` (the segmentation options are those of ``lvt segment``)."""
    from lvt.cli.main import _add_common

    parser.add_argument("inputs", nargs="+", type=Path, metavar="STUDY",
                        help="two or more CTs or `lvt segment` output folders of one patient, oldest first")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME",
                        help="one name per study for tables and the plot (e.g. dates)")
    defaults = RegistrationConfig()
    parser.add_argument("--max-residual-mm", type=float, default=defaults.max_residual_mm,
                        help="largest mean liver surface distance after alignment before matching is refused")
    parser.add_argument("--min-liver-dice", type=float, default=defaults.min_liver_dice,
                        help="least liver Dice after alignment before matching is refused")
    parser.add_argument("--min-ct-correlation", type=float, default=defaults.min_ct_correlation,
                        help="least correlation of the CT inside the aligned livers (when both studies have CT)")
    _add_common(parser)


def run_compare(args: argparse.Namespace) -> int:
    """Run ``lvt compare`` from parsed arguments.

    Returns:
        0 when every study was matched; 1 when a registration was refused (compare.json and
        compare.html are written all the same and say why).
    """
    from lvt.cli.console import cancel_on_signals, make_progress
    from lvt.cli.main import EXIT_FAILURE, _done, _fail
    from lvt.segment.pipeline import SegmentOptions

    try:
        registration = RegistrationConfig(max_residual_mm=args.max_residual_mm, min_liver_dice=args.min_liver_dice,
                                          min_ct_correlation=args.min_ct_correlation)
    except ValueError as error:
        raise InputError(None, f"registration thresholds: {error}") from error
    options = replace(SegmentOptions.from_args(args), overwrite=False, write_surfaces=False)
    with cancel_on_signals() as cancel:
        document = compare_files(args.inputs, args.output, options, CompareConfig(registration=registration),
                                 names=args.names, overwrite=args.overwrite, progress=make_progress(args.progress),
                                 cancel=cancel)
    refused = [c for c in document["comparisons"] if c["status"] == "refused"]
    if refused:
        names = [document["studies"][c["to_study"]]["name"] for c in refused]
        reasons = "; ".join(r for c in refused for r in c["refusal_reasons"])
        message = (f"{args.output}: registration refused for {', '.join(names)}, lesions not matched ({reasons}). "
                   "compare.json and compare.html were written with the per-study measurements.")
        return _fail(args, message, EXIT_FAILURE)
    return _done(args, args.output)
