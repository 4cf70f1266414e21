"""Follow the lesions of one patient through the studies: align on the liver, match, build tracks.

Registration (:mod:`lvt.followup.register`) is used only to decide which lesions are the same; the
numbers are each study's own measurements (:mod:`lvt.followup.studies`):

- Every follow-up is aligned to the first study (the baseline). Lesions are followed as *tracks*
  in the baseline's space: a track's footprint is the union of its lesions mapped there. A
  follow-up lesion joins the track it overlaps most, when the overlap (footprints widened by
  ``match_margin_mm``) covers at least ``min_overlap_fraction`` of the smaller of the two; else it
  starts a new track (a new lesion). Baseline target lesions (:mod:`lvt.followup.recist`) are
  preferred when a lesion overlaps several tracks (RECIST: coalesced target lesions keep their
  diameter in the sum).
- One track may hold several lesions of a study (a lesion that split): its volume and diameter are
  the sums (RECIST 1.1 rule for fragmented lesions). A track whose lesion merged into another
  track's lesion is "coalesced" there and counts 0 mm.
- When a registration is refused, lesions of that study are not matched at all ("not evaluated").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from lvt.errors import InputError
from lvt.followup.recist import RecistConfig, select_targets
from lvt.followup.register import Registration, RegistrationConfig, register_livers, warp_to_fixed
from lvt.followup.studies import Study
from lvt.grid import bounding_box_in, crop, resample_like
from lvt.image import Image
from lvt.labels import TUMOR_LABEL, whole_liver
from lvt.measure.planning import lesion_id_map
from lvt.measure.volumes_and_lesions import Lesion
from lvt.progress import ProgressCallback, check_cancel, report

logger = logging.getLogger(__name__)


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
        """The lesions of a study that belong to a track (several when it split, none when absent)."""
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
    tumor = study.labels.with_array(study.labels.array == TUMOR_LABEL)
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
    liver = whole_liver(baseline.labels.array)
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

