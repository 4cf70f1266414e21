"""Resection planning aids: how close each tumor comes to the vessel tree, and the liver left by a resection.

Conventions, fixed here because a surgeon reads these numbers as margins:

- Distances are measured between **voxel extents**, as :mod:`lvt.measure.volumes_and_lesions` measures diameters: a
  voxel is the box it covers, and the distance from a tumor to the vessels is the smallest gap
  between a tumor voxel's box and a vessel voxel's box, in mm (0 when they touch). For a voxelised
  sphere and tube this is the true surface-to-surface gap to within about one voxel, without the
  one-voxel bias of a centre-to-centre distance. The two end points returned are the closest points
  of those two boxes, so their distance is exactly the reported one; they are what the Slicer
  module draws as a line from the tumor to the nearest vessel.
- The vessel tree is the vessel label (2) of the exclusive map. A vessel running through a tumor is
  tumor there, so the tree may be cut into pieces. Each 26-connected piece is a **branch**, numbered
  1..N by decreasing volume (ties: first voxel in array order first): branch 1 is the largest
  connected tree (usually the portal or hepatic venous trunk), small numbers with small volumes
  are isolated twigs. No skeleton is computed; the branch of the nearest vessel voxel and its
  volume tell the surgeon whether the nearest vessel is part of a main tree.
- "Vessels within 10 mm" (``VESSEL_MARGIN_MM``, a common margin in liver surgery) holds when the
  distance above is at most 10 mm; the branches within the margin are listed too.
- The remnant is the whole liver (labels 1, 2, 3) outside the resection region, a mask the user
  draws (any grid; resampled onto the labels' grid by nearest neighbour).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from lvt.grid import resample_like
from lvt.image import Image
from lvt.labels import TUMOR_LABEL, VESSEL_LABEL, boundary_voxels, label_components, whole_liver
from lvt.measure.region import LabelRegion, shifted
from lvt.measure.volumes_and_lesions import Lesion, Point3, lesions_in_region, point3

VESSEL_MARGIN_MM = 10.0


def lesion_id_map(tumor: Image, lesions: Sequence[Lesion]) -> np.ndarray:
    """Voxel map of lesion ids (0 elsewhere) for the lesions :func:`~lvt.measure.volumes_and_lesions.measure_lesions`
    found.

    Each 26-connected component of the tumor mask is identified with its lesion by bounding box and
    voxel count, so the ids are exactly those of the report.

    Args:
        tumor: the tumor mask (bool or 0/1) the lesions were measured on.
        lesions: from ``measure_lesions(tumor)`` (or ``measure_labels(labels).lesions``).

    Returns:
        (Z, Y, X) int32 array.

    Raises:
        ValueError: when a lesion does not correspond to a component of the mask.
    """
    region = LabelRegion.of(tumor.array.astype(bool, copy=False))
    in_region = _lesion_ids(region.array, region.offset_kji, lesions, tumor.voxel_volume_ml)
    ids = np.zeros(tumor.array.shape, dtype=np.int32)
    if region.box is not None:
        ids[region.box] = in_region
    return ids


def _lesion_ids(tumor_kji: np.ndarray, offset_kji: np.ndarray, lesions: Sequence[Lesion],
                voxel_ml: float) -> np.ndarray:
    """:func:`lesion_id_map` of a tumor mask given on a box of its grid that starts at ``offset_kji``."""
    components, count = label_components(tumor_kji)
    sizes = np.bincount(components[tumor_kji], minlength=count + 1)
    by_key = {}
    for index, box in enumerate(ndimage.find_objects(components) if count else [], start=1):
        box = shifted(box, offset_kji)
        low = tuple(int(box[a].start) for a in (2, 1, 0))
        high = tuple(int(box[a].stop) - 1 for a in (2, 1, 0))
        by_key[(low, high, int(sizes[index]))] = index
    lookup = np.zeros(count + 1, dtype=np.int32)
    for lesion in lesions:
        voxels = round(lesion.volume_ml / voxel_ml)
        index = by_key.get((tuple(lesion.bbox_min_ijk), tuple(lesion.bbox_max_ijk), voxels))
        if index is None:
            raise ValueError(f"lesion {lesion.id} is not a component of this tumor mask")
        lookup[index] = lesion.id
    return lookup[components]


@dataclass(frozen=True, eq=False)
class VesselBranches:
    """The vessel tree split into 26-connected branches, numbered by decreasing volume.

    Attributes:
        id_map: int32, 0 outside the vessels, else the branch id 1..N, on the box of the label map's
            nonzero voxels (:class:`~lvt.measure.region.LabelRegion`), which holds every vessel.
        volumes_ml: volume of branch ``n`` at index ``n - 1``.
        offset_kji: whole-grid index (k, j, i) of ``id_map``'s first voxel.
    """

    id_map: np.ndarray
    volumes_ml: tuple[float, ...]
    offset_kji: np.ndarray


def vessel_branches(labels: Image) -> VesselBranches:
    """Number the connected pieces of the vessel label by decreasing volume (see module docstring)."""
    return _branches(LabelRegion.of(labels.array), labels.voxel_volume_ml)


def _branches(region: LabelRegion, voxel_ml: float) -> VesselBranches:
    """:func:`vessel_branches` inside the labels' nonzero box (every vessel voxel lies in it)."""
    vessel = region.array == VESSEL_LABEL
    components, count = label_components(vessel)
    sizes = np.bincount(components[vessel], minlength=count + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    lookup = np.zeros(count + 1, dtype=np.int32)
    lookup[order + 1] = np.arange(1, count + 1, dtype=np.int32)
    volumes = tuple(float(sizes[i] * voxel_ml) for i in order)
    return VesselBranches(lookup[components], volumes, region.offset_kji)


@dataclass(frozen=True)
class VesselProximity:
    """How close one lesion comes to the vessel tree (all ``None`` when there are no vessels)."""

    lesion_id: int
    distance_mm: float | None
    lesion_surface_point_lps_mm: Point3 | None
    nearest_vessel_point_lps_mm: Point3 | None
    nearest_branch_id: int | None
    nearest_branch_volume_ml: float | None
    branches_within_margin: tuple[int, ...]
    margin_mm: float

    @property
    def vessels_within_margin(self) -> bool:
        return self.distance_mm is not None and self.distance_mm <= self.margin_mm


class _GridPoints:
    """Voxel centres in the grid's own millimetre frame: (i, j, k) * spacing.

    The direction matrix is orthonormal, so distances in this frame are patient distances and a
    voxel's box is axis-aligned with half-widths spacing / 2.
    """

    def __init__(self, grid: Image) -> None:
        self.grid = grid
        self.spacing = np.asarray(grid.spacing_mm, dtype=float)
        self.diagonal_mm = float(np.linalg.norm(self.spacing))

    def of(self, voxels_kji: np.ndarray) -> np.ndarray:
        """(N, 3) frame coordinates of (N, 3) voxel indices in array order (k, j, i)."""
        return voxels_kji[:, ::-1] * self.spacing

    def to_lps(self, points: np.ndarray) -> np.ndarray:
        return self.grid.ijk_to_lps(np.atleast_2d(points) / self.spacing)

    def box_gaps(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distance between the voxel boxes centred at ``a`` and ``b`` (broadcast (..., 3) arrays)."""
        return np.linalg.norm(np.maximum(np.abs(b - a) - self.spacing, 0.0), axis=-1)

    def closest_points(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Closest points of the voxel boxes centred at ``a`` and ``b`` (single (3,) points)."""
        delta = b - a
        separated = np.abs(delta) > self.spacing
        step = np.sign(delta) * self.spacing / 2.0
        middle = (a + b) / 2.0
        return np.where(separated, a + step, middle), np.where(separated, b - step, middle)


def _boundary_indices(mask_kji: np.ndarray) -> np.ndarray:
    """(N, 3) array indices (k, j, i) of the boundary voxels of a mask, found on its bounding box only."""
    boxes = ndimage.find_objects(mask_kji.astype(np.uint8))
    if not boxes:
        return np.zeros((0, 3), dtype=int)
    box = boxes[0]
    return np.argwhere(boundary_voxels(mask_kji[box])) + np.array([s.start for s in box])


def vessel_proximity(labels: Image, lesions: Sequence[Lesion] | None = None, margin_mm: float = VESSEL_MARGIN_MM,
                     branches: VesselBranches | None = None) -> list[VesselProximity]:
    """Shortest distance from each lesion's surface to the vessel tree, with end points and branch.

    Args:
        labels: exclusive label map (0..3) on any grid with orthonormal directions.
        lesions: the lesions of ``labels`` (from :func:`lvt.measure.volumes_and_lesions.measure_labels`); measured here
            when None.
        margin_mm: the safety margin for ``branches_within_margin`` and ``vessels_within_margin``.
        branches: :func:`vessel_branches` of ``labels`` when the caller has it already.

    Returns:
        One entry per lesion, in the order of ``lesions``.
    """
    region = LabelRegion.of(labels.array)
    branches = _branches(region, labels.voxel_volume_ml) if branches is None else branches
    return _proximities(labels, region, lesions, margin_mm, branches)


def _proximities(labels: Image, region: LabelRegion, lesions: Sequence[Lesion] | None, margin_mm: float,
                 branches: VesselBranches) -> list[VesselProximity]:
    """:func:`vessel_proximity` computed inside the labels' nonzero box, on whole-grid indices."""
    tumor = region.array == TUMOR_LABEL
    lesions = lesions_in_region(labels, tumor, region.offset_kji) if lesions is None else lesions
    ids = _lesion_ids(tumor, region.offset_kji, lesions, labels.voxel_volume_ml)
    points = _GridPoints(labels)
    vessel_voxels = _boundary_indices(branches.id_map > 0)
    vessel_points, vessel_ids = points.of(vessel_voxels + branches.offset_kji), branches.id_map[tuple(vessel_voxels.T)]
    vessel_tree = cKDTree(vessel_points) if len(vessel_points) else None
    results = []
    for lesion in lesions:
        low, high = np.array(lesion.bbox_min_ijk[::-1]), np.array(lesion.bbox_max_ijk[::-1])
        box = tuple(slice(a, b + 1) for a, b in zip(low - region.offset_kji, high - region.offset_kji, strict=True))
        lesion_points = points.of(_boundary_indices(ids[box] == lesion.id) + low)
        if vessel_tree is None:
            results.append(VesselProximity(lesion.id, None, None, None, None, None, (), margin_mm))
            continue
        results.append(_proximity(lesion.id, lesion_points, vessel_points, vessel_tree, vessel_ids, branches,
                                  points, margin_mm))
    return results


def _proximity(lesion_id: int, lesion_points: np.ndarray, vessel_points: np.ndarray, vessel_tree: cKDTree,
               vessel_ids: np.ndarray, branches: VesselBranches, points: _GridPoints,
               margin_mm: float) -> VesselProximity:
    """The exact smallest box gap: only pairs whose centres lie within (nearest + diagonal) can win."""
    centre_distance, _ = vessel_tree.query(lesion_points)
    reach = float(centre_distance.min()) + points.diagonal_mm
    candidates = np.flatnonzero(centre_distance <= reach)
    pairs = [(a, b) for a in candidates for b in vessel_tree.query_ball_point(lesion_points[a], reach)]
    a_index, b_index = np.array(pairs).T
    gaps = points.box_gaps(lesion_points[a_index], vessel_points[b_index])
    centres = np.linalg.norm(vessel_points[b_index] - lesion_points[a_index], axis=1)
    best = np.lexsort((centres, gaps))[0]  # smallest gap; ties to the closest centres
    on_lesion, on_vessel = points.closest_points(lesion_points[a_index[best]], vessel_points[b_index[best]])
    branch = int(vessel_ids[b_index[best]])
    lesion_lps, vessel_lps = points.to_lps(np.stack([on_lesion, on_vessel]))
    return VesselProximity(
        lesion_id=lesion_id,
        distance_mm=float(gaps[best]),
        lesion_surface_point_lps_mm=point3(lesion_lps),
        nearest_vessel_point_lps_mm=point3(vessel_lps),
        nearest_branch_id=branch,
        nearest_branch_volume_ml=branches.volumes_ml[branch - 1],
        branches_within_margin=_branches_within(lesion_points, vessel_points, vessel_ids, points, margin_mm),
        margin_mm=margin_mm,
    )


def _branches_within(lesion_points: np.ndarray, vessel_points: np.ndarray, vessel_ids: np.ndarray,
                     points: _GridPoints, margin_mm: float) -> tuple[int, ...]:
    """Branches with a voxel whose box lies within the margin of its nearest lesion voxel's box."""
    distance, nearest = cKDTree(lesion_points).query(vessel_points, distance_upper_bound=margin_mm + points.diagonal_mm)
    close = np.isfinite(distance)
    gaps = points.box_gaps(lesion_points[nearest[close]], vessel_points[close])
    return tuple(int(b) for b in np.unique(vessel_ids[close][gaps <= margin_mm]))


def planning_summary(labels: Image, lesions: Sequence[Lesion] | None = None) -> dict:
    """The "planning" section of report.json: tumor-to-vessel distances with a 10 mm margin.

    Args:
        labels: exclusive label map (0..3).
        lesions: the report's lesions (``measurements.lesions``); measured again when None.

    Returns:
        ``{"vessel_margin_mm", "distance_definition", "branches": {"count", "volumes_ml"},
        "lesions": [{"id", "distance_to_vessels_mm", "nearest_vessel_point_lps_mm",
        "lesion_surface_point_lps_mm", "vessels_within_10mm", "nearest_branch_id",
        "nearest_branch_volume_ml", "branches_within_10mm"}]}``; distances, points and branch are
        null when the map has no vessel.
    """
    region = LabelRegion.of(labels.array)
    branches = _branches(region, labels.voxel_volume_ml)
    proximity = _proximities(labels, region, lesions, VESSEL_MARGIN_MM, branches)
    return {
        "vessel_margin_mm": VESSEL_MARGIN_MM,
        "distance_definition": "smallest gap between tumor and vessel voxels (voxel extents), mm; "
                               "branches are connected vessel pieces numbered by decreasing volume",
        "branches": {"count": len(branches.volumes_ml), "volumes_ml": list(branches.volumes_ml)},
        "lesions": [
            {"id": p.lesion_id,
             "distance_to_vessels_mm": p.distance_mm,
             "nearest_vessel_point_lps_mm": _as_list(p.nearest_vessel_point_lps_mm),
             "lesion_surface_point_lps_mm": _as_list(p.lesion_surface_point_lps_mm),
             "vessels_within_10mm": p.vessels_within_margin,
             "nearest_branch_id": p.nearest_branch_id,
             "nearest_branch_volume_ml": p.nearest_branch_volume_ml,
             "branches_within_10mm": list(p.branches_within_margin)}
            for p in proximity
        ],
    }


def _as_list(point: Point3 | None) -> list[float] | None:
    return None if point is None else list(point)


@dataclass(frozen=True)
class Remnant:
    """Liver volumes around a planned resection region (mL), and how much of each lesion it removes."""

    whole_liver_ml: float
    resected_liver_ml: float
    remnant_ml: float
    remnant_percent: float
    tumor_in_remnant_ml: float
    lesion_fraction_resected: tuple[tuple[int, float], ...]

    def to_dict(self) -> dict:
        return {"whole_liver_ml": self.whole_liver_ml, "resected_liver_ml": self.resected_liver_ml,
                "remnant_ml": self.remnant_ml, "remnant_percent": self.remnant_percent,
                "tumor_in_remnant_ml": self.tumor_in_remnant_ml,
                "lesions": [{"id": i, "fraction_resected": f} for i, f in self.lesion_fraction_resected]}


def liver_remnant(labels: Image, resection: Image, lesions: Sequence[Lesion] | None = None) -> Remnant:
    """Liver volume outside a user-drawn resection region (the future liver remnant).

    Args:
        labels: exclusive label map (0..3).
        resection: the region to be removed, nonzero inside, on any grid (nearest-neighbour
            resampled onto the labels' grid when it is another one).
        lesions: the lesions of ``labels``; measured here when None.

    Returns:
        Volumes and the fraction of each lesion inside the region.

    Raises:
        ValueError: when the label map has no liver.
    """
    region = LabelRegion.of(labels.array)
    if region.box is None:
        raise ValueError("the label map has no liver; there is no remnant to compute")
    if not resection.same_grid(labels):
        resection = resample_like(resection.with_array((resection.array != 0).astype(np.uint8)), labels,
                                  interpolation="nearest")
    inside = resection.array[region.box] != 0
    liver = whole_liver(region.array)
    voxel_ml = labels.voxel_volume_ml
    whole, resected = np.count_nonzero(liver), np.count_nonzero(liver & inside)
    tumor = region.array == TUMOR_LABEL
    lesions = lesions_in_region(labels, tumor, region.offset_kji) if lesions is None else lesions
    ids = _lesion_ids(tumor, region.offset_kji, lesions, voxel_ml)
    total = np.bincount(ids[tumor], minlength=len(lesions) + 1)
    removed = np.bincount(ids[tumor & inside], minlength=len(lesions) + 1)
    return Remnant(
        whole_liver_ml=float(whole * voxel_ml),
        resected_liver_ml=float(resected * voxel_ml),
        remnant_ml=float((whole - resected) * voxel_ml),
        remnant_percent=float(100.0 * (whole - resected) / whole),
        tumor_in_remnant_ml=float(np.count_nonzero(tumor & ~inside) * voxel_ml),
        lesion_fraction_resected=tuple((lesion.id, float(removed[lesion.id] / total[lesion.id])) for lesion in lesions),
    )
