"""Clinical measurements from an exclusive label map: volumes, tumor burden and a RECIST-style lesion table.

Conventions, fixed here because every number in report.json depends on them:

- Volumes are voxel counts times the voxel volume (mL); the whole liver is labels 1|2|3
  (:data:`lvt.labels.WHOLE_LIVER_LABELS`). When the liver touches a face of the image grid, the
  face's patient side is listed ("liver_cut_by_image_edge"): the liver goes on beyond the image
  there, and its volume is a lower bound.
- A lesion is one connected component of the tumor label under **26-connectivity** (voxels touching
  by a face, an edge or a corner belong together), so a lesion drawn slice by slice with diagonal
  steps is not split. Lesions are numbered 1..N by decreasing volume.
- Diameters are measured on **voxel extents**, not voxel centres: a voxel is the square it covers in
  the slice, so a one-voxel lesion measures one voxel across, and a caliper on the drawn boundary
  reads what this code reads. For a voxelised shape the result lies within about one in-plane voxel
  diagonal of the true diameter (extents add up to half a voxel at each end, sampling removes up to
  as much).
- "Axial" is the grid's index axis most parallel to patient S (:meth:`Image.axial_axis`). Each
  diameter is measured within one slice of that axis, in the plane of that slice, in mm. For the
  usual grids (axes along L, P, S, flipped or not, or rotated about S) that plane *is* the patient's
  axial plane and the result is exact for the voxelised lesion. For a gantry-tilted grid it is the
  tilted acquisition plane, the plane a radiologist measures on; it differs from a true axial
  section only to second order in the tilt angle. End points are voxel corners or points on voxel
  edges of the lesion in that slice, so they always lie on the lesion and their distance is exactly
  the reported diameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist, squareform

from lvt.errors import InputError
from lvt.image import PATIENT_SIDES_LPS, Image
from lvt.labels import LIVER_LABEL, NUM_CLASSES, TUMOR_LABEL, VESSEL_LABEL, WHOLE_LIVER_LABELS, label_components
from lvt.measure.field_of_view import field_of_view_cut_sides
from lvt.measure.region import Box, LabelRegion, shifted

Point3 = tuple[float, float, float]
_TIE_MM = 1e-6
# The patient sides at the low and high end of LPS x, y, z, and the order in which sides are listed.
SIDE_ORDER = ("superior", "inferior", "right", "left", "anterior", "posterior")


def point3(p: np.ndarray) -> Point3:
    """A point as three plain floats (what report.json and the frozen results hold)."""
    return (float(p[0]), float(p[1]), float(p[2]))


@dataclass(frozen=True)
class AxialDiameters:
    """Long and short axis of a lesion in one axial slice, with end points in LPS mm."""

    longest_mm: float
    slice_index: int
    long_axis_endpoints_lps_mm: tuple[Point3, Point3]
    short_axis_mm: float
    short_axis_endpoints_lps_mm: tuple[Point3, Point3]


@dataclass(frozen=True)
class Lesion:
    """One connected tumor component."""

    id: int
    volume_ml: float
    centroid_lps_mm: Point3
    diameters: AxialDiameters
    bbox_min_ijk: tuple[int, int, int]
    bbox_max_ijk: tuple[int, int, int]

    def to_dict(self) -> dict:
        """The lesion entry of report.json."""
        d = self.diameters
        return {
            "id": self.id,
            "volume_ml": self.volume_ml,
            "centroid_lps_mm": list(self.centroid_lps_mm),
            "longest_axial_diameter_mm": d.longest_mm,
            "axial_slice_index": d.slice_index,
            "long_axis_endpoints_lps_mm": [list(p) for p in d.long_axis_endpoints_lps_mm],
            "short_axis_diameter_mm": d.short_axis_mm,
            "short_axis_endpoints_lps_mm": [list(p) for p in d.short_axis_endpoints_lps_mm],
            "bounding_box_ijk": {"min": list(self.bbox_min_ijk), "max": list(self.bbox_max_ijk)},
        }


@dataclass(frozen=True)
class Measurements:
    """Volumes and lesions of one exclusive label map."""

    whole_liver_volume_ml: float
    parenchyma_volume_ml: float
    vessel_volume_ml: float
    tumor_volume_ml: float
    lesions: tuple[Lesion, ...]
    liver_cut_sides: tuple[str, ...] = ()  # patient sides where the liver touches the image's edge

    @property
    def tumor_count(self) -> int:
        return len(self.lesions)

    @property
    def tumor_to_liver_volume_ratio(self) -> float:
        """Tumor volume over whole-liver volume (0 when there is no liver)."""
        return self.tumor_volume_ml / self.whole_liver_volume_ml if self.whole_liver_volume_ml > 0 else 0.0

    def to_dict(self, dropped: Sequence[Mapping] = (), min_volume_ml: float = 0.0) -> dict:
        """The "liver", "liver_cut_by_image_edge", "vessels", "tumors" and "lesions" parts of report.json.

        Args:
            dropped: components removed before measuring (post-processing knows them, this module
                does not), each a mapping with "volume_ml" and "centroid_lps_mm".
            min_volume_ml: the smallest lesion volume kept by post-processing.
        """
        return {
            "liver": {
                "whole_volume_ml": self.whole_liver_volume_ml,
                "parenchyma_volume_ml": self.parenchyma_volume_ml,
            },
            "liver_cut_by_image_edge": list(self.liver_cut_sides),
            "vessels": {"volume_ml": self.vessel_volume_ml},
            "tumors": {
                "count": self.tumor_count,
                "total_volume_ml": self.tumor_volume_ml,
                "tumor_to_liver_volume_ratio": self.tumor_to_liver_volume_ratio,
                "dropped": [
                    {"volume_ml": float(d["volume_ml"]), "centroid_lps_mm": [float(c) for c in d["centroid_lps_mm"]]}
                    for d in dropped
                ],
                "min_volume_ml": float(min_volume_ml),
            },
            "lesions": [lesion.to_dict() for lesion in self.lesions],
        }


def measure_labels(labels: Image, ct: Image | None = None) -> Measurements:
    """Measure liver, vessel and tumor volumes and every lesion of an exclusive label map.

    Everything is counted inside the box of the nonzero voxels (:class:`~lvt.measure.region.LabelRegion`),
    never on whole-image temporaries: a 512 x 512 x 600 map costs about its liver's size of memory.

    Args:
        labels: exclusive label map (0 background, 1 liver parenchyma, 2 vessel, 3 tumor) on any
            grid, oblique, flipped and anisotropic ones included.
        ct: the CT on the labels' grid, when known: a liver cut by the scanner's reconstruction circle is then
            listed in ``liver_cut_sides`` too (:mod:`lvt.measure.field_of_view`).

    Returns:
        The measurements; lesions ordered by decreasing volume.

    Raises:
        InputError: when the map holds values other than 0..3.
    """
    region = LabelRegion.of(_checked_label_array(labels))
    voxel_ml = labels.voxel_volume_ml
    counts = {value: np.count_nonzero(region.array == value) for value in WHOLE_LIVER_LABELS}
    return Measurements(
        whole_liver_volume_ml=float(sum(counts.values()) * voxel_ml),
        parenchyma_volume_ml=float(counts[LIVER_LABEL] * voxel_ml),
        vessel_volume_ml=float(counts[VESSEL_LABEL] * voxel_ml),
        tumor_volume_ml=float(counts[TUMOR_LABEL] * voxel_ml),
        lesions=lesions_in_region(labels, region.array == TUMOR_LABEL, region.offset_kji),
        liver_cut_sides=_in_side_order({*edge_sides(labels, region.box),
                                        *(field_of_view_cut_sides(ct, labels) if ct is not None else ())}),
    )


def edge_sides(grid: Image, box: Box | None) -> tuple[str, ...]:
    """The patient sides (e.g. "inferior") of the grid faces a structure's box touches, in :data:`SIDE_ORDER`.

    A structure that touches a face was cut by the scan range (first or last slice) or by the
    field of view: it goes on beyond the image on that side. It touches a face exactly when the box
    of its voxels (:func:`lvt.measure.region.nonzero_box`) does. A face is named by the patient
    direction its index axis mostly points to, so oblique and flipped grids name it right.
    """
    if box is None:
        return ()
    sides = set()
    for axis in range(3):
        column = grid.direction[:, axis]
        patient = int(np.argmax(np.abs(column)))
        low, high = PATIENT_SIDES_LPS[patient] if column[patient] > 0 else PATIENT_SIDES_LPS[patient][::-1]
        extent = box[2 - axis]
        if extent.start == 0:
            sides.add(low)
        if extent.stop == grid.array.shape[2 - axis]:
            sides.add(high)
    return _in_side_order(sides)


def _in_side_order(sides: set[str]) -> tuple[str, ...]:
    return tuple(side for side in SIDE_ORDER if side in sides)


def _checked_label_array(labels: Image) -> np.ndarray:
    """The label array as uint8, after checking it holds only the labels 0..3."""
    array = labels.array
    if array.size == 0:
        return array.astype(np.uint8)
    is_integral = np.issubdtype(array.dtype, np.integer) or array.dtype == bool
    if not is_integral and not (np.isfinite(array).all() and np.array_equal(array, np.round(array))):
        raise InputError(None, f"label map must hold integer labels 0..3, found non-integer {array.dtype} values")
    if array.min() < 0 or array.max() > NUM_CLASSES:
        raise InputError(None, f"label map must hold labels 0..3, found values {array.min()}..{array.max()}")
    return array.astype(np.uint8, copy=False)


def measure_lesions(tumor: Image) -> tuple[Lesion, ...]:
    """Split a tumor mask into 26-connected lesions and measure each, largest first.

    Args:
        tumor: boolean tumor mask on its grid.

    Returns:
        Lesions with ids 1..N by decreasing volume (ties: lower first voxel index first).
    """
    region = LabelRegion.of(tumor.array.astype(bool, copy=False))
    return lesions_in_region(tumor, region.array, region.offset_kji)


def lesions_in_region(grid: Image, tumor_kji: np.ndarray, offset_kji: np.ndarray) -> tuple[Lesion, ...]:
    """:func:`measure_lesions` of a tumor mask given on a box of ``grid`` that starts at ``offset_kji``.

    Components are numbered in scan order, which a box keeps, so ids, ties and whole-grid indices
    are those of the whole grid.
    """
    components, count = label_components(tumor_kji)
    if count == 0:
        return ()
    sizes = np.bincount(components[tumor_kji], minlength=count + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    boxes = ndimage.find_objects(components)
    lesions = []
    for new_id, old_index in enumerate(order, start=1):
        box = boxes[old_index]
        mask = components[box] == old_index + 1
        lesions.append(_measure_component(grid, mask, shifted(box, offset_kji), new_id))
    return tuple(lesions)


def _measure_component(grid: Image, mask_kji: np.ndarray, box: tuple[slice, ...], lesion_id: int) -> Lesion:
    """Measure one component given as a mask cropped to its bounding box ``box`` (array order)."""
    offset_ijk = np.array([box[2].start, box[1].start, box[0].start])
    centre_ijk = np.argwhere(mask_kji)[:, ::-1].mean(axis=0) + offset_ijk
    return Lesion(
        id=lesion_id,
        volume_ml=float(mask_kji.sum() * grid.voxel_volume_ml),
        centroid_lps_mm=point3(grid.ijk_to_lps(centre_ijk)[0]),
        diameters=axial_diameters(grid, mask_kji, offset_ijk),
        bbox_min_ijk=tuple(int(v) for v in offset_ijk),
        bbox_max_ijk=tuple(int(v) for v in offset_ijk + np.array(mask_kji.shape[::-1]) - 1),
    )


def axial_diameters(grid: Image, mask_kji: np.ndarray, offset_ijk: np.ndarray) -> AxialDiameters:
    """RECIST-style longest axial diameter and its perpendicular short axis of one lesion.

    Args:
        grid: the image grid the mask lives on.
        mask_kji: (Z, Y, X) bool mask of the lesion, cropped (may be the full grid).
        offset_ijk: (3,) index of the crop's first voxel in the full grid, (i, j, k) order.

    Returns:
        The longest in-plane diameter over all axial slices (ties go to the slice nearest the
        lesion's middle), its slice index on the full grid, and the short axis in that slice.
    """
    axis = grid.axial_axis()
    array_axis = 2 - axis
    sections = {
        local: section
        for local in range(mask_kji.shape[array_axis])
        if (section := np.take(mask_kji, local, axis=array_axis)).any()
    }
    planes = {local: _SlicePlane(grid, axis, local + int(offset_ijk[axis]), offset_ijk) for local in sections}
    chords = {local: _longest_chord(planes[local], section) for local, section in sections.items()}
    longest = max(length for length, _ in chords.values())
    middle = float(np.mean(list(sections)))
    local = min((s for s, (length, _) in chords.items() if length >= longest - _TIE_MM), key=lambda s: abs(s - middle))
    length, ends = chords[local]
    short, short_ends = _perpendicular_extent(planes[local], sections[local], ends)
    return AxialDiameters(
        longest_mm=length,
        slice_index=planes[local].slice_index,
        long_axis_endpoints_lps_mm=(point3(ends[0]), point3(ends[1])),
        short_axis_mm=short,
        short_axis_endpoints_lps_mm=(point3(short_ends[0]), point3(short_ends[1])),
    )


class _SlicePlane:
    """Maps pixel corners of one slice of a cropped mask to LPS mm and to 2D in-plane mm coordinates.

    A 2D section of the (Z, Y, X) mask taken along ``array_axis`` is indexed (u, v) where u, v are
    the remaining array axes in order; they are index axes ``axes_uv``.
    """

    def __init__(self, grid: Image, axis: int, slice_index: int, offset_ijk: np.ndarray) -> None:
        self.grid = grid
        self.axis = axis
        self.slice_index = slice_index
        self.offset_ijk = np.asarray(offset_ijk, dtype=float)
        self.axes_uv = tuple(2 - a for a in range(3) if a != 2 - axis)
        linear = grid.direction @ np.diag(grid.spacing_mm)
        basis, _ = np.linalg.qr(linear[:, list(self.axes_uv)])
        self.basis_lps = basis  # (3, 2) orthonormal vectors spanning the slice plane
        self.origin_lps = self.to_lps(np.zeros((1, 2)))[0]

    def to_lps(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) continuous pixel coordinates (u, v) of the section -> (N, 3) LPS mm."""
        ijk = np.empty((len(uv), 3))
        ijk[:, self.axis] = self.slice_index
        for column, index_axis in enumerate(self.axes_uv):
            ijk[:, index_axis] = uv[:, column] + self.offset_ijk[index_axis]
        return self.grid.ijk_to_lps(ijk)

    def to_plane(self, lps: np.ndarray) -> np.ndarray:
        """(N, 3) LPS points of the plane -> (N, 2) orthonormal in-plane mm coordinates."""
        return (lps - self.origin_lps) @ self.basis_lps

    def from_plane(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) in-plane mm coordinates -> (N, 3) LPS mm."""
        return self.origin_lps + xy @ self.basis_lps.T


def _boundary_pixels(section: np.ndarray) -> np.ndarray:
    """(N, 2) (u, v) indices of pixels with at least one 4-neighbour outside the section mask."""
    padded = np.pad(section, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.argwhere(section & ~interior)


_CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, 0.5], [0.5, -0.5]])


def _longest_chord(plane: _SlicePlane, section: np.ndarray) -> tuple[float, np.ndarray]:
    """Largest distance between two voxel corners of a section: convex hull, then all hull pairs."""
    corners_uv = (_boundary_pixels(section)[:, None, :] + _CORNERS[None]).reshape(-1, 2)
    corners_uv = np.unique(corners_uv, axis=0)
    xy = plane.to_plane(plane.to_lps(corners_uv))
    hull_xy = xy[ConvexHull(xy).vertices]
    distances = squareform(pdist(hull_xy))
    a, b = np.unravel_index(np.argmax(distances), distances.shape)
    ends = plane.from_plane(hull_xy[[a, b]])
    return float(distances[a, b]), ends


def _perpendicular_extent(
    plane: _SlicePlane, section: np.ndarray, long_ends_lps: np.ndarray
) -> tuple[float, np.ndarray]:
    """Longest extent of a section along lines perpendicular to its long axis, with end points.

    On each such line the extent runs from the first to the last lesion point (a caliper across
    the lesion). As the line slides along the long axis the extent is piecewise linear and only
    bends downwards at voxel corners, so trying the lines through corners of boundary pixels finds
    the maximum exactly.
    """
    pixels = _boundary_pixels(section)
    corners_lps = plane.to_lps((pixels[:, None, :] + _CORNERS[None]).reshape(-1, 2))
    long_xy = plane.to_plane(long_ends_lps)
    along = (long_xy[1] - long_xy[0]) / np.linalg.norm(long_xy[1] - long_xy[0])
    frame = np.stack([along, [-along[1], along[0]]], axis=1)  # in-plane xy -> (t along, w across)
    quads_tw = (plane.to_plane(corners_lps) @ frame).reshape(-1, 4, 2)
    starts, ends = quads_tw.reshape(-1, 2), np.roll(quads_tw, -1, axis=1).reshape(-1, 2)
    crossing = np.abs(ends[:, 0] - starts[:, 0]) > 1e-12  # edges parallel to the line add no new point
    best = (-1.0, 0.0, 0.0, 0.0)
    for t in np.unique(np.round(quads_tw[..., 0], 9)):
        w = _edge_crossings(starts[crossing], ends[crossing], t)
        if w.max() - w.min() > best[0]:
            best = (float(w.max() - w.min()), float(t), float(w.min()), float(w.max()))
    extent, t, w_min, w_max = best
    return extent, plane.from_plane(np.array([[t, w_min], [t, w_max]]) @ frame.T)


def _edge_crossings(starts: np.ndarray, ends: np.ndarray, t: float) -> np.ndarray:
    """w coordinates where the line ``t = const`` meets the edges (starts -> ends), in (t, w) frames."""
    low, high = np.minimum(starts[:, 0], ends[:, 0]), np.maximum(starts[:, 0], ends[:, 0])
    hit = (low <= t + 1e-9) & (high >= t - 1e-9)
    fraction = np.clip((t - starts[hit, 0]) / (ends[hit, 0] - starts[hit, 0]), 0.0, 1.0)
    return starts[hit, 1] + fraction * (ends[hit, 1] - starts[hit, 1])
