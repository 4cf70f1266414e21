"""Synthetic contrast-enhanced abdominal CT with exact ground truth: liver, intrahepatic vessels, tumors.

Every structure is an implicit shape, an approximate signed distance in millimetres (negative inside),
defined in LPS patient space and evaluated at the LPS centres of the voxels. All random anatomy comes
from the seed alone, never from the grid, so one seed rendered on two grids (oblique, flipped,
anisotropic, cropped) is the same patient; only the image noise differs. The same seed in another
contrast phase is also the same patient, with other enhancement.

The abdomen is centred at the LPS origin: +x is the patient's left, +y posterior, +z superior.
HU values follow the table in METHOD.md ("Making phantoms look like CT"). Edges are anti-aliased
over one voxel and the image is blurred by about one voxel before noise (partial volume); the truth
masks are the exact shapes at the voxel centres.

Only numpy and scipy are used, so phantoms can be made on a training node without SimpleITK or torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal, get_args

import numpy as np
from scipy import ndimage

from lvt.image import Image
from lvt.labels import LIVER, NUM_CLASSES, TUMOR, VESSEL, exclusive_labels

logger = logging.getLogger(__name__)

Phase = Literal["portal_venous", "arterial", "late", "unenhanced"]
LesionKind = Literal["metastasis", "hcc", "cyst"]
PHASES: tuple[str, ...] = get_args(Phase)
LESION_KINDS: tuple[str, ...] = get_args(LesionKind)

# (low, high) HU per phase, in PHASES order. One quantile per tissue and patient is drawn, so a seed
# keeps its relative enhancement across phases.
_ENHANCING_HU: dict[str, tuple[tuple[float, float], ...]] = {
    "liver": ((100, 130), (80, 100), (85, 105), (55, 65)),
    "portal_vein": ((150, 200), (120, 170), (110, 140), (35, 50)),
    "hepatic_vein": ((130, 180), (50, 90), (110, 140), (35, 50)),
    "aorta": ((150, 180), (250, 350), (120, 150), (35, 50)),
    "ivc": ((120, 160), (70, 110), (110, 140), (35, 50)),
    "heart_blood": ((140, 180), (250, 330), (110, 140), (35, 50)),
    "myocardium": ((95, 120), (110, 140), (85, 105), (40, 55)),
    "spleen": ((110, 130), (120, 160), (95, 115), (40, 50)),
    "kidney_cortex": ((150, 200), (180, 250), (130, 170), (30, 40)),
    "kidney_medulla": ((140, 190), (70, 110), (150, 200), (25, 35)),
    "pancreas": ((90, 115), (110, 150), (75, 95), (35, 45)),
    "bowel_wall": ((90, 125), (100, 140), (80, 100), (35, 45)),
    "muscle": ((45, 60), (45, 60), (45, 60), (40, 55)),
}
_FIXED_HU: dict[str, tuple[float, float]] = {
    "fat": (-115, -85),
    "lung": (-870, -760),
    "bone_cortical": (700, 1200),
    "bone_trabecular": (180, 280),
    "disc": (70, 100),
    "csf": (10, 30),
    "bile": (0, 15),
    "fluid": (5, 25),
    "stool": (-90, 10),
    "oral_contrast": (180, 350),
    "table": (150, 300),
}
_AIR_HU = -1000.0

_LATTICE_MM = 6.0  # texture lattice pitch; the pattern repeats every _LATTICE_N * _LATTICE_MM mm
_LATTICE_N = 64
_TEXTURE_STEP_MM = 4.0  # texture is sampled this coarsely on the grid, then interpolated
_BIG = 1.0e4


# ----------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class PhantomConfig:
    """What to render: the patient (seed), the scanner grid and the contrast phase.

    Attributes:
        seed: the patient; every random choice of anatomy, enhancement, lesions and noise follows it.
        spacing_mm: voxel size along the index axes (i, j, k).
        field_of_view_mm: grid extent along the index axes (i, j, k); the grid is centred on
            ``center_lps_mm``.
        direction: 3x3 LPS direction cosines, one column per index axis; None is the identity.
        center_lps_mm: LPS point at the grid centre; the abdomen is centred at the origin.
        phase: contrast phase, which sets the HU of enhancing tissue and the look of lesions.
        n_tumors: inclusive range of the number of liver lesions drawn for the seed.
        tumor_diameter_mm: range of lesion diameters (drawn log-uniformly, so small ones are common).
        tumor_kinds: lesion kinds to draw from.
        liver_volume_ml: range of the liver volume drawn for the seed.
        noise_hu: standard deviation of the image noise; None draws it in 10..25 HU.
        noise_correlation_voxels: Gaussian correlation of the noise; None draws it in 0..0.8 voxel.
        blur_voxels: Gaussian sigma of the partial-volume blur applied before the noise.
        min_vessel_radius_mm: the vessel trees branch until their radius falls below this.
    """

    seed: int = 0
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    field_of_view_mm: tuple[float, float, float] = (360.0, 300.0, 250.0)
    direction: tuple[tuple[float, float, float], ...] | None = None
    center_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    phase: Phase = "portal_venous"
    n_tumors: tuple[int, int] = (0, 5)
    tumor_diameter_mm: tuple[float, float] = (5.0, 80.0)
    tumor_kinds: tuple[LesionKind, ...] = LESION_KINDS
    liver_volume_ml: tuple[float, float] = (1250.0, 2100.0)
    noise_hu: float | None = None
    noise_correlation_voxels: float | None = None
    blur_voxels: float = 0.5
    min_vessel_radius_mm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("spacing_mm", "field_of_view_mm", "center_lps_mm"):
            object.__setattr__(self, name, _three_floats(name, getattr(self, name)))
        for name in ("n_tumors", "tumor_diameter_mm", "liver_volume_ml", "tumor_kinds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.direction is not None:
            object.__setattr__(self, "direction", _checked_direction(self.direction))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if min(self.spacing_mm) <= 0 or min(self.field_of_view_mm) <= 0:
            raise ValueError("spacing_mm and field_of_view_mm must be positive")
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")
        _check_range("n_tumors", self.n_tumors, 0)
        _check_range("tumor_diameter_mm", self.tumor_diameter_mm, 1.0)
        _check_range("liver_volume_ml", self.liver_volume_ml, 500.0, 4000.0)
        if not self.tumor_kinds or any(kind not in LESION_KINDS for kind in self.tumor_kinds):
            raise ValueError(f"tumor_kinds must be a non-empty subset of {LESION_KINDS}, got {self.tumor_kinds}")
        for name in ("noise_hu", "noise_correlation_voxels"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be None or a number >= 0, got {value!r}")
        if not (0 <= self.blur_voxels <= 5):
            raise ValueError(f"blur_voxels must be in 0..5, got {self.blur_voxels}")
        if not (0.2 <= self.min_vessel_radius_mm <= 5):
            raise ValueError(f"min_vessel_radius_mm must be in 0.2..5, got {self.min_vessel_radius_mm}")

    def to_dict(self) -> dict:
        """JSON-ready fields (tuples become lists)."""
        return {name: _listed(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> PhantomConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown PhantomConfig field(s): {', '.join(unknown)}")
        return cls(**data)  # type: ignore[arg-type]

    @property
    def direction_matrix(self) -> np.ndarray:
        """The 3x3 direction as an array (identity when ``direction`` is None)."""
        return np.eye(3) if self.direction is None else np.asarray(self.direction, dtype=float)


@dataclass(frozen=True, eq=False)
class LesionTruth:
    """One rendered lesion: a perturbed ellipsoid in LPS millimetres.

    Attributes:
        centre_lps_mm: centre of the ellipsoid.
        semi_axes_mm: semi-axes before the surface perturbation (which changes them by < 20 %).
        rotation: (3, 3) rotation whose columns are the lesion's axes in LPS.
        kind: "metastasis", "hcc" or "cyst".
        core_hu: nominal HU of the lesion's core (before texture, rim, blur and noise).
    """

    centre_lps_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    rotation: np.ndarray
    kind: LesionKind
    core_hu: float

    @property
    def diameter_mm(self) -> float:
        """Nominal longest diameter (twice the longest semi-axis)."""
        return 2.0 * max(self.semi_axes_mm)


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic CT and its exact ground truth.

    Attributes:
        image: float32 HU on the requested grid.
        truth: (3, Z, Y, X) bool multi-hot masks in channel order (liver, vessel, tumor); the liver
            includes the vessels and tumors inside it.
        lesions: the lesions, in the order they were placed.
        tissue_hu: nominal (noise- and texture-free) HU of each tissue for this seed and phase.
        noise_hu: standard deviation of the added noise.
        config: the configuration that made it.
    """

    image: Image
    truth: np.ndarray
    lesions: tuple[LesionTruth, ...]
    tissue_hu: Mapping[str, float]
    noise_hu: float
    config: PhantomConfig

    @property
    def labels(self) -> np.ndarray:
        """(Z, Y, X) uint8 exclusive labels: 0 background, 1 liver parenchyma, 2 vessel, 3 tumor."""
        return exclusive_labels(self.truth)


def _listed(value: object) -> object:
    return [_listed(v) for v in value] if isinstance(value, tuple) else value


def _three_floats(name: str, value: object) -> tuple[float, float, float]:
    values = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be three finite numbers, got {value!r}")
    return values  # type: ignore[return-value]


def _checked_direction(direction: object) -> tuple[tuple[float, float, float], ...]:
    matrix = np.asarray(direction, dtype=float)
    if matrix.shape != (3, 3) or not np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-4):
        raise ValueError(f"direction must be a 3x3 orthonormal matrix, got {direction!r}")
    return tuple(tuple(float(v) for v in row) for row in matrix)  # type: ignore[return-value]


def _check_range(name: str, value: tuple, low: float, high: float = math.inf) -> None:
    if len(value) != 2 or not (low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {value!r}")


# ----------------------------------------------------------------------------- grid sampling


@dataclass(frozen=True, eq=False)
class _Grid:
    """Voxel-centre LPS coordinates of an image grid, computed per box so work stays local."""

    shape_zyx: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    matrix: np.ndarray  # direction @ diag(spacing): continuous (i, j, k) -> LPS offset
    inverse: np.ndarray  # LPS offset -> continuous (i, j, k)
    origin: np.ndarray

    @classmethod
    def of(cls, image: Image) -> _Grid:
        matrix = image.direction @ np.diag(image.spacing_mm)
        return cls(image.array.shape, image.spacing_mm, matrix, np.linalg.inv(matrix),
                   np.asarray(image.origin_lps_mm, float))

    @property
    def edge_mm(self) -> float:
        """Width over which edges are anti-aliased (one in-plane voxel)."""
        return min(self.spacing_mm)

    def index_boxes(self, low_lps: np.ndarray, high_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) start and stop (i, j, k) of the index boxes covering N axis-aligned LPS boxes."""
        low, high = np.maximum(low_lps, -_BIG), np.minimum(high_lps, _BIG)
        pick = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], bool)  # (8, 3)
        corners = np.where(pick[None], high[:, None, :], low[:, None, :])  # (N, 8, 3)
        ijk = (corners - self.origin) @ self.inverse.T
        start = np.maximum(np.floor(ijk.min(axis=1)).astype(int), 0)
        stop = np.minimum(np.ceil(ijk.max(axis=1)).astype(int) + 1, np.array(self.shape_zyx[::-1]))
        return start, stop

    def box(self, low_lps: np.ndarray, high_lps: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index box (k, j, i slices) covering an axis-aligned LPS box; None when it misses the grid."""
        start, stop = (v[0] for v in self.index_boxes(np.atleast_2d(low_lps), np.atleast_2d(high_lps)))
        if np.any(start >= stop):
            return None
        return tuple(slice(int(start[a]), int(stop[a])) for a in (2, 1, 0))  # type: ignore[return-value]

    def points(self, index_zyx: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
        """LPS (x, y, z) of the voxels at the outer product of index vectors, as broadcastable arrays."""
        k, j, i = (np.asarray(v, dtype=np.float32) for v in index_zyx)
        axes = (i[None, None, :], j[None, :, None], k[:, None, None])
        coordinates = []
        for row in range(3):
            value = np.float32(self.origin[row])
            for column in range(3):
                if abs(self.matrix[row, column]) > 1e-9:
                    value = value + np.float32(self.matrix[row, column]) * axes[column]
            coordinates.append(value if isinstance(value, np.ndarray) else np.full((1, 1, 1), value))
        return tuple(coordinates)

    def slice_points(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, ...]:
        return self.points(tuple(np.arange(s.start, s.stop) for s in sl))


@dataclass(frozen=True, eq=False)
class _Region:
    """A box of the canvas: its slices, LPS coordinates and texture."""

    sl: tuple[slice, slice, slice]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    tex: np.ndarray


class _Canvas:
    """The HU image and truth masks being painted, one structure after another."""

    def __init__(self, grid: _Grid, texture: np.ndarray) -> None:
        self.grid = grid
        self.texture = texture
        self.hu = np.full(grid.shape_zyx, _AIR_HU, dtype=np.float32)
        self.truth = np.zeros((NUM_CLASSES, *grid.shape_zyx), dtype=bool)
        self.liver_occupancy = np.zeros(grid.shape_zyx, dtype=np.float32)  # soft liver mask, for partial volume

    def region(self, low_lps: object, high_lps: object) -> _Region | None:
        sl = self.grid.box(np.asarray(low_lps, float), np.asarray(high_lps, float))
        if sl is None:
            return None
        x, y, z = self.grid.slice_points(sl)
        return _Region(sl, x, y, z, self.texture[sl])

    def paint(self, region: _Region, sdf: np.ndarray, value: np.ndarray | float, edge_mm: float | None = None,
              weight: np.ndarray | float = 1.0) -> None:
        """Blend ``value`` in where ``sdf`` < 0, with an anti-aliased edge (partial volume)."""
        occupancy = _occupancy(sdf, self.grid.edge_mm if edge_mm is None else edge_mm) * weight
        view = self.hu[region.sl]
        view += occupancy * (value - view)

    def carve_liver(self, region: _Region, sdf: np.ndarray) -> None:
        """An organ painted over the liver indents it: remove it from the liver's truth and occupancy."""
        self.truth[LIVER][region.sl] &= sdf >= 0
        self.liver_occupancy[region.sl] *= 1.0 - _occupancy(sdf, self.grid.edge_mm)


def _occupancy(sdf: np.ndarray, edge_mm: float) -> np.ndarray:
    return np.clip(0.5 - sdf / np.float32(max(edge_mm, 1e-3)), 0.0, 1.0)


# ----------------------------------------------------------------------------- shapes (signed distances, mm)


def _local(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: np.ndarray,
           rotation: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates in a shape's frame: q = R^T (p - centre)."""
    dx, dy, dz = x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2])
    if rotation is None:
        return dx, dy, dz
    r = rotation.astype(np.float32)
    return (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
            r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)


def _ellipsoid_local_sdf(qx: np.ndarray, qy: np.ndarray, qz: np.ndarray,
                         semi: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Gradient-normalised ellipsoid distance (exact on the surface, good to a few mm around it)."""
    a, b, c = semi
    k0 = np.sqrt((qx / a) ** 2 + (qy / b) ** 2 + (qz / c) ** 2)
    k1 = np.sqrt((qx / (a * a)) ** 2 + (qy / (b * b)) ** 2 + (qz / (c * c)) ** 2)
    tiny = np.float32(1e-4)
    smallest = np.minimum(np.minimum(a, b), c)
    return (k0 - 1) * (k0 + tiny) / (k1 + tiny / smallest)


def _superellipsoid_local_sdf(qx: np.ndarray, qy: np.ndarray, qz: np.ndarray, semi: np.ndarray,
                              exponent: float) -> np.ndarray:
    """Distance to |x/a|^n + |y/b|^n + |z/c|^n = 1 (boxier than an ellipsoid for n > 2), gradient-normalised."""
    n = np.float32(exponent)
    parts = [np.abs(q / np.float32(a)) + np.float32(1e-6) for q, a in zip((qx, qy, qz), semi, strict=True)]
    powered = [p ** (n - 1) for p in parts]
    rho = (powered[0] * parts[0] + powered[1] * parts[1] + powered[2] * parts[2]) ** (1 / n)
    gradient = np.sqrt(sum((w / np.float32(a)) ** 2 for w, a in zip(powered, semi, strict=True))) * rho ** (1 - n)
    return (rho - 1) / gradient


def _ellipse_sdf(x: np.ndarray, y: np.ndarray, centre: tuple[float, float], semi: tuple[float, float]) -> np.ndarray:
    """2D ellipse distance: an elliptic cylinder along z."""
    dx, dy = x - np.float32(centre[0]), y - np.float32(centre[1])
    return _ellipsoid_local_sdf(dx, dy, np.zeros((1, 1, 1), np.float32), (semi[0], semi[1], 1.0))


def _capsule_sdf(x: np.ndarray, y: np.ndarray, z: np.ndarray, start: np.ndarray, end: np.ndarray,
                 radius_start: float, radius_end: float) -> np.ndarray:
    """Distance to a segment with a radius interpolated along it (a rounded cone, approximately)."""
    axis = (end - start).astype(np.float32)
    length2 = max(float(axis @ axis), 1e-6)
    px, py, pz = x - np.float32(start[0]), y - np.float32(start[1]), z - np.float32(start[2])
    t = np.clip((px * axis[0] + py * axis[1] + pz * axis[2]) / np.float32(length2), 0.0, 1.0)
    distance = np.sqrt((px - t * axis[0]) ** 2 + (py - t * axis[1]) ** 2 + (pz - t * axis[2]) ** 2)
    return distance - (np.float32(radius_start) + t * np.float32(radius_end - radius_start))


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth union of two distances, blending over ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / np.float32(k), 0.0, 1.0)
    return b + (a - b) * h - np.float32(k) * h * (1.0 - h)


def _smooth_max(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -_smooth_min(-a, -b, k)


@dataclass(frozen=True, eq=False)
class _Ellipsoid:
    centre: np.ndarray
    semi: np.ndarray
    rotation: np.ndarray | None = None

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return _ellipsoid_local_sdf(*_local(x, y, z, self.centre, self.rotation), self.semi)

    def bounds(self, margin_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        rotation = np.eye(3) if self.rotation is None else self.rotation
        half = np.sqrt(((rotation * self.semi[None, :]) ** 2).sum(axis=1)) + margin_mm
        return self.centre - half, self.centre + half


@dataclass(frozen=True, eq=False)
class _Tubes:
    """Chains of rounded cones: vessels, bowel, pancreas. Rows are segments."""

    starts: np.ndarray  # (N, 3) LPS mm
    ends: np.ndarray  # (N, 3)
    radii: np.ndarray  # (N, 2) radius at start and end
    tags: np.ndarray  # (N,) float attribute carried to the voxels nearest each segment

    def bounds(self, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
        reach = self.radii.max() + margin_mm
        both = np.concatenate([self.starts, self.ends])
        return both.min(axis=0) - reach, both.max(axis=0) + reach


def _tubes(points: list[np.ndarray] | np.ndarray, radii: list[float] | np.ndarray,
           tags: list[float] | np.ndarray | float = 0.0) -> _Tubes:
    """A chain through ``points`` with a radius per point and a tag per segment."""
    points = np.asarray(points, float)
    radii = np.asarray(radii, float)
    count = len(points) - 1
    tag_array = np.broadcast_to(np.asarray(tags, float), (count,)).copy()
    return _Tubes(points[:-1], points[1:], np.stack([radii[:-1], radii[1:]], axis=1), tag_array)


def _tubes_distance(tubes: _Tubes, points: np.ndarray) -> np.ndarray:
    """(P,) distance from a few hundred (P, 3) points to the nearest segment."""
    axis = (tubes.ends - tubes.starts)[None]
    relative = points[:, None, :] - tubes.starts[None]
    t = np.clip(np.sum(relative * axis, axis=-1) / np.maximum(np.sum(axis * axis, axis=-1), 1e-6), 0.0, 1.0)
    radius = tubes.radii[:, 0] + t * (tubes.radii[:, 1] - tubes.radii[:, 0])
    return (np.linalg.norm(relative - t[..., None] * axis, axis=-1) - radius).min(axis=1)


def _join(*tubes: _Tubes) -> _Tubes:
    return _Tubes(*(np.concatenate([getattr(t, name) for t in tubes]) for name in ("starts", "ends", "radii", "tags")))


def _tube_field(canvas: _Canvas, tubes: _Tubes) -> tuple[_Region, np.ndarray, np.ndarray] | None:
    """Distance to the nearest segment and that segment's tag, over the tubes' bounding box.

    Each segment is evaluated only in its own index box, out to where its anti-aliased edge ends.
    Large segments (bowel) are evaluated box by box on broadcast coordinates; the many small ones
    (vessel branches) are enumerated all at once, in chunks, to avoid a Python loop per branch.
    """
    margin_mm = 0.5 * canvas.grid.edge_mm + 0.5
    region = canvas.region(*tubes.bounds(margin_mm))
    if region is None:
        return None
    shape = region.tex.shape
    distance = np.full(int(np.prod(shape)), _BIG, np.float32)
    tag = np.zeros(distance.size, np.float32)
    reach = tubes.radii.max(axis=1)[:, None] + margin_mm
    start, stop = canvas.grid.index_boxes(np.minimum(tubes.starts, tubes.ends) - reach,
                                          np.maximum(tubes.starts, tubes.ends) + reach)
    base = np.array([s.start for s in region.sl[::-1]])  # region origin in (i, j, k)
    start = np.clip(start - base, 0, shape[::-1])
    stop = np.clip(stop - base, 0, shape[::-1])
    counts = np.prod(np.maximum(stop - start, 0), axis=1)
    for n in np.flatnonzero(counts > 4096):
        _carve_segment(canvas.grid, tubes, n, start[n], stop[n], base, distance.reshape(shape), tag.reshape(shape))
    small = np.flatnonzero((counts > 0) & (counts <= 4096))
    for chunk in np.array_split(small, max(1, int(counts[small].sum()) // 1_000_000 + 1)):
        _splat_segments(canvas.grid, tubes, chunk, start, stop, counts, base, shape, distance, tag)
    return region, distance.reshape(shape), tag.reshape(shape)


def _carve_segment(grid: _Grid, tubes: _Tubes, n: int, start: np.ndarray, stop: np.ndarray, base: np.ndarray,
                   distance: np.ndarray, tag: np.ndarray) -> None:
    """Evaluate one large segment over its box (broadcast coordinates); keep the nearest per voxel."""
    local = (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))
    x, y, z = grid.points(tuple(np.arange(s.start, s.stop) + b for s, b in zip(local, base[::-1], strict=True)))
    d = _capsule_sdf(x, y, z, tubes.starts[n], tubes.ends[n], *tubes.radii[n])
    closer = d < distance[local]
    distance[local] = np.where(closer, d, distance[local])
    tag[local] = np.where(closer, np.float32(tubes.tags[n]), tag[local])


def _splat_segments(grid: _Grid, tubes: _Tubes, chunk: np.ndarray, start: np.ndarray, stop: np.ndarray,
                    counts: np.ndarray, base: np.ndarray, shape: tuple[int, ...], distance: np.ndarray,
                    tag: np.ndarray) -> None:
    """Evaluate segments ``chunk`` on every voxel of their boxes; keep the nearest per voxel (flat arrays)."""
    segment = np.repeat(chunk.astype(np.int32), counts[chunk])
    if segment.size == 0:
        return
    offsets = (np.cumsum(counts[chunk]) - counts[chunk]).astype(np.int32)
    local = np.arange(segment.size, dtype=np.int32) - np.repeat(offsets, counts[chunk])
    size = np.maximum(stop - start, 1).astype(np.int32)
    size_i, size_ij = size[segment, 0], size[segment, 0] * size[segment, 1]
    ijk = (local % size_i + start[segment, 0], (local % size_ij) // size_i + start[segment, 1],
           local // size_ij + start[segment, 2])
    index = [(c + np.int32(b)).astype(np.float32) for c, b in zip(ijk, base, strict=True)]
    matrix, origin = grid.matrix.astype(np.float32), grid.origin.astype(np.float32)
    starts, axes = tubes.starts.astype(np.float32), (tubes.ends - tubes.starts).astype(np.float32)
    relative, along = [], []
    for row in range(3):
        point = origin[row] + matrix[row, 0] * index[0] + matrix[row, 1] * index[1] + matrix[row, 2] * index[2]
        relative.append(point - starts[segment, row])
        along.append(axes[segment, row])
    length2 = np.maximum(along[0] ** 2 + along[1] ** 2 + along[2] ** 2, np.float32(1e-6))
    t = np.clip((relative[0] * along[0] + relative[1] * along[1] + relative[2] * along[2]) / length2, 0.0, 1.0)
    radii = tubes.radii.astype(np.float32)
    radius = radii[segment, 0] + t * (radii[segment, 1] - radii[segment, 0])
    d = np.sqrt(sum((r - t * a) ** 2 for r, a in zip(relative, along, strict=True))) - radius
    flat = (ijk[2] * shape[1] + ijk[1]) * shape[2] + ijk[0]
    np.minimum.at(distance, flat, d)
    winner = d <= distance[flat]
    tag[flat[winner]] = tubes.tags[segment[winner]]


# ----------------------------------------------------------------------------- random fields


def _rng(seed: int, stream: str) -> np.random.Generator:
    """Independent random streams, so that changing one knob (e.g. n_tumors) keeps the rest."""
    streams = ("anatomy", "vessels", "lesions", "appearance", "noise", "texture")
    return np.random.default_rng([int(seed), streams.index(stream)])


def _draw_lattice(rng: np.random.Generator) -> np.ndarray:
    """A periodic, smooth, unit-variance random lattice in physical space (value noise)."""
    lattice = rng.standard_normal((_LATTICE_N,) * 3).astype(np.float32)
    lattice = ndimage.gaussian_filter(lattice, 1.0, mode="wrap")
    return lattice / lattice.std()


def _sample_lattice(lattice: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
    coordinates = np.stack([np.broadcast_to(c, shape) / np.float32(_LATTICE_MM) for c in (z, y, x)])
    return ndimage.map_coordinates(lattice, coordinates, order=1, mode="grid-wrap")


def _linear_weights(count: int, step: int, nodes: int) -> np.ndarray:
    """(count, nodes) weights interpolating nodes at indices 0, step, 2 step, ... to every index."""
    position = np.arange(count) / step
    lower = np.minimum(np.floor(position).astype(int), nodes - 2) if nodes > 1 else np.zeros(count, int)
    fraction = position - lower
    weights = np.zeros((count, nodes), np.float32)
    weights[np.arange(count), lower] = 1.0 - fraction
    if nodes > 1:
        weights[np.arange(count), lower + 1] += fraction
    return weights


def _texture_on_grid(lattice: np.ndarray, grid: _Grid) -> np.ndarray:
    """The lattice noise at every voxel: sampled on a coarse sub-grid, then interpolated separably."""
    spacing_zyx = grid.spacing_mm[::-1]
    steps = [max(1, round(_TEXTURE_STEP_MM / s)) for s in spacing_zyx]
    nodes = [math.ceil((n - 1) / step) + 1 for n, step in zip(grid.shape_zyx, steps, strict=True)]
    coarse = _sample_lattice(lattice, *grid.points(tuple(
        np.arange(m) * step for m, step in zip(nodes, steps, strict=True))))
    for axis in range(3):
        if steps[axis] == 1:
            continue
        weights = _linear_weights(grid.shape_zyx[axis], steps[axis], nodes[axis])
        coarse = np.moveaxis(np.tensordot(weights, coarse, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(coarse, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class _WaveField:
    """A smooth random vector field: a few sine waves per component (displacements, in mm)."""

    vectors: np.ndarray  # (3, K, 3) wave vectors (rad/mm), per output component
    amplitudes: np.ndarray  # (3, K)
    phases: np.ndarray  # (3, K)

    @classmethod
    def draw(cls, rng: np.random.Generator, amplitude_mm: float, wavelength_mm: tuple[float, float],
             waves: int = 3) -> _WaveField:
        directions = rng.standard_normal((3, waves, 3))
        directions /= np.linalg.norm(directions, axis=2, keepdims=True)
        lengths = rng.uniform(*wavelength_mm, size=(3, waves, 1))
        amplitudes = amplitude_mm * rng.uniform(0.5, 1.0, size=(3, waves)) / math.sqrt(waves)
        return cls(2 * math.pi * directions / lengths, amplitudes, rng.uniform(0, 2 * math.pi, (3, waves)))

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
        out = []
        for c in range(3):
            total = np.zeros((1, 1, 1), np.float32)
            for k in range(self.amplitudes.shape[1]):
                w = self.vectors[c, k].astype(np.float32)
                total = total + np.float32(self.amplitudes[c, k]) * np.sin(
                    w[0] * x + w[1] * y + w[2] * z + np.float32(self.phases[c, k]))
            out.append(total)
        return tuple(out)

    @property
    def reach_mm(self) -> float:
        return float(np.abs(self.amplitudes).sum(axis=1).max())


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _rotation_xyz(degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees)."""
    ax, ay, az = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# ----------------------------------------------------------------------------- the body


@dataclass(frozen=True)
class _Body:
    """The trunk: outline, wall layers, diaphragm domes, spine and rib cage (mm, LPS)."""

    half_width: float  # x semi-axis of the outline
    half_depth: float  # anterior y semi-axis of the outline
    back: float  # y of the flat back
    fat: float  # subcutaneous fat thickness
    muscle: float  # abdominal wall muscle thickness
    dome_right: float  # z of the right diaphragm dome (the liver sits under it)
    dome_left: float
    vertebra: tuple[float, float]  # semi-axes of the vertebral bodies
    vertebra_pitch: float
    vertebra_offset: float
    rib_pitch: float
    rib_offset: float
    rib_slope: float  # ribs rise posteriorly: z of a rib grows by this per mm of y

    @property
    def wall(self) -> float:
        return self.fat + self.muscle

    @property
    def cavity(self) -> tuple[float, float, float]:
        """Inner half-width, anterior depth and posterior y of the abdominal cavity."""
        return self.half_width - self.wall, self.half_depth - self.wall, self.back - self.wall

    @property
    def canal_y(self) -> float:
        return self.back - self.fat - 36.0

    @property
    def spine_y(self) -> float:
        """y of the vertebral body centres."""
        return self.canal_y - self.vertebra[1] - 10.0

    @property
    def aorta(self) -> tuple[float, float, float]:
        """x, y and radius of the aorta, left-anterior of the spine."""
        radius = 0.55 * self.vertebra[0]
        return 0.55 * self.vertebra[0], self.spine_y - self.vertebra[1] - radius - 1.0, radius

    @property
    def ivc(self) -> tuple[float, float, float, float]:
        """x, y and semi-axes of the inferior vena cava, right-anterior of the spine."""
        return -(self.vertebra[0] + 6.0), self.spine_y - self.vertebra[1] - 10.0, 13.0, 10.0

    def retroperitoneum_sdf(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Spine, aorta and crura: the midline column that organs keep away from."""
        vx, vy = self.vertebra
        column = _ellipse_sdf(x, y, (0.0, self.spine_y + 6.0), (vx + 7.0, vy + 12.0))
        ax, ay, radius = self.aorta
        return np.minimum(column, _ellipse_sdf(x, y, (ax, ay), (radius + 8.0, radius + 8.0)))

    def outline_sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance to the skin: an ellipse with a flattened back, narrowing over the lower chest."""
        narrowing = 1.0 - 0.08 * np.clip((z - np.float32(self.dome_right - 90.0)) / 130.0, 0.0, 1.0) ** 2
        ellipse = _ellipse_sdf(x, y, (0.0, 0.0), (self.half_width * narrowing, self.half_depth))
        return _smooth_max(ellipse, y - np.float32(self.back), 25.0)

    def diaphragm_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """z of the diaphragm: two domes, deeper posteriorly (the costophrenic recesses)."""
        half_width = self.cavity[0]
        domes = []
        for sign, top in ((-1.0, self.dome_right), (1.0, self.dome_left)):
            dx = x - np.float32(sign * 0.42 * half_width)
            dy = y - np.float32(0.05 * self.cavity[1])
            curvature_y = np.where(dy > 0, np.float32(1 / 70.0), np.float32(1 / 130.0))
            domes.append(np.float32(top) - dx * dx / np.float32(2 * 75.0) - dy * dy * curvature_y)
        return np.maximum(domes[0], domes[1])


def _draw_body(rng: np.random.Generator, size: float) -> _Body:
    """A trunk whose girth follows ``size`` (0..1) partly, so big livers come with big patients."""
    size = 0.7 * size + 0.3 * rng.random()
    muscle = rng.uniform(10.0, 15.0)
    cavity_width = 112.0 + 26.0 * size + rng.uniform(-3.0, 3.0)
    # Subcutaneous fat varies most between patients; the 360 mm default field of view still holds them.
    fat = rng.uniform(8.0, max(10.0, min(35.0, 176.0 - cavity_width - muscle)))
    half_depth = 72.0 + 18.0 * size + rng.uniform(-3.0, 3.0) + fat + muscle
    dome_right = rng.uniform(78.0, 95.0)
    pitch = rng.uniform(30.0, 35.0)
    rib_pitch = rng.uniform(24.0, 30.0)
    return _Body(
        half_width=cavity_width + fat + muscle,
        half_depth=half_depth,
        back=half_depth * rng.uniform(0.86, 0.93),
        fat=fat,
        muscle=muscle,
        dome_right=dome_right,
        dome_left=dome_right - rng.uniform(5.0, 18.0),
        vertebra=(rng.uniform(20.0, 25.0), rng.uniform(15.0, 18.0)),
        vertebra_pitch=pitch,
        vertebra_offset=rng.uniform(0.0, pitch),
        rib_pitch=rib_pitch,
        rib_offset=rng.uniform(0.0, rib_pitch),
        rib_slope=rng.uniform(0.9, 1.3),
    )


# ----------------------------------------------------------------------------- abdominal organs


@dataclass(frozen=True, eq=False)
class _Organs:
    """Everything around the liver that a network must learn to tell apart from it."""

    kidneys: tuple[_Ellipsoid, _Ellipsoid]  # right, left
    spleen: _Ellipsoid
    heart: _Ellipsoid
    stomach: _Tubes  # tag: y of the air-fluid level (air is anterior, at smaller y)
    pancreas: _Tubes
    veins: _Tubes  # tag: 0 portal system, 1 systemic vein, 2 artery
    colon: _Tubes  # tag: air-fluid level y
    small_bowel: _Tubes  # tag: air-fluid level y
    confluence: np.ndarray  # where the splenic vein and the SMV form the portal vein
    oral_contrast: bool


def _jitter(rng: np.random.Generator, points: list[tuple[float, float, float]], mm: float) -> np.ndarray:
    return np.asarray(points, float) + rng.uniform(-mm, mm, size=(len(points), 3))


def _spline(points: np.ndarray, radii: np.ndarray, per_segment: int) -> tuple[np.ndarray, np.ndarray]:
    """Catmull-Rom curve through control points (radii interpolated linearly)."""
    padded = np.concatenate([points[:1] * 2 - points[1:2], points, points[-1:] * 2 - points[-2:-1]])
    out, out_radii = [], []
    for n in range(len(points) - 1):
        p0, p1, p2, p3 = padded[n:n + 4]
        for t in np.arange(per_segment) / per_segment:
            out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t
                              + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
            out_radii.append(radii[n] + (radii[n + 1] - radii[n]) * t)
    return np.array([*out, points[-1]]), np.array([*out_radii, radii[-1]])


def _draw_kidneys(rng: np.random.Generator, body: _Body) -> tuple[_Ellipsoid, _Ellipsoid]:
    kidneys = []
    for sign, drop in ((-1.0, 150.0), (1.0, 135.0)):
        centre = np.array([sign * (body.vertebra[0] + rng.uniform(44.0, 52.0)), body.spine_y + rng.uniform(4, 14),
                           body.dome_right - drop + rng.uniform(-10, 10)])
        semi = np.array([rng.uniform(24, 29), rng.uniform(20, 24), rng.uniform(46, 58)])
        rotation = _rotation_xyz((-rng.uniform(5, 15), -sign * rng.uniform(8, 18), sign * rng.uniform(20, 35)))
        kidneys.append(_Ellipsoid(centre, semi, rotation))
    return kidneys[0], kidneys[1]


def _draw_stomach(rng: np.random.Generator, body: _Body) -> _Tubes:
    cx, cy, _ = body.cavity
    top, size = body.dome_left, rng.uniform(0.7, 1.15)
    control = _jitter(rng, [(0.45 * cx, body.spine_y - 20, top - 38), (0.45 * cx, body.spine_y - 50, top - 70),
                            (0.28 * cx, -0.5 * cy, top - 100), (0.04 * cx, -0.6 * cy, top - 108),
                            (-0.14 * cx, -0.45 * cy, top - 100)], 8.0)
    radii = np.array([34.0, 30.0, 25.0, 18.0, 9.0]) * size
    points, radii = _spline(control, radii, 4)
    level = (points[:, 1] - radii).min() + rng.uniform(4.0, 40.0)
    return _tubes(points, radii, level)


def _draw_colon(rng: np.random.Generator, body: _Body, underside: Callable[[float, float], float]) -> _Tubes:
    """The colon frame; the hepatic flexure and transverse colon hang just below the liver."""
    cx, cy, cp = body.cavity
    zr, zl = body.dome_right, body.dome_left
    radius = rng.uniform(17.0, 24.0)

    def below_liver(x: float, y: float, z: float) -> tuple[float, float, float]:
        return x, y, min(z, underside(x, y) - 0.8 * radius)

    control = _jitter(rng, [(-0.68 * cx, 0.05 * cp, -150.0), below_liver(-0.74 * cx, 0.1 * cp, -100.0),
                            below_liver(-0.6 * cx, -0.3 * cy, zr - 150), below_liver(-0.25 * cx, -0.62 * cy, zr - 165),
                            below_liver(0.3 * cx, -0.62 * cy, zr - 160), (0.74 * cx, 0.0, zl - 95),
                            (0.8 * cx, 0.3 * cp, -100.0), (0.75 * cx, 0.2 * cp, -150.0)], 8.0)
    points, radii = _spline(control, radius * rng.uniform(0.8, 1.1, len(control)), 5)
    levels = points[:-1, 1] + radii[:-1] * rng.uniform(-1.2, 0.6, len(points) - 1)
    return _tubes(points, radii, levels)


def _walk_bowel(rng: np.random.Generator, start: np.ndarray, centre: np.ndarray, semi: np.ndarray,
                radius: float, avoid: np.ndarray) -> np.ndarray:
    """A self-avoiding random walk of small-bowel loops inside an ellipsoidal region."""
    points, direction = [start], np.array([1.0, 0.0, -0.3])
    for _ in range(220):
        for _attempt in range(12):
            trial = direction + 0.9 * rng.standard_normal(3)
            trial /= np.linalg.norm(trial)
            candidate = points[-1] + 1.1 * radius * trial
            inside = np.sum(((candidate - centre) / semi) ** 2) < 1.0
            old = np.asarray(points[:-3] + list(avoid))
            if inside and (len(old) == 0 or np.min(np.linalg.norm(old - candidate, axis=1)) > 2.05 * radius):
                points.append(candidate)
                direction = trial
                break
        else:
            break
    return np.asarray(points)


def _draw_small_bowel(rng: np.random.Generator, body: _Body, colon: _Tubes, pancreas_z: float) -> _Tubes:
    cx, cy, _ = body.cavity
    duodenum = _jitter(rng, [(-0.14 * cx, -0.45 * cy, body.dome_left - 100), (-0.32 * cx, body.spine_y - 45,
                            pancreas_z + 5), (-0.34 * cx, body.spine_y - 35, pancreas_z - 35),
                            (0.05 * cx, body.spine_y - 35, pancreas_z - 50), (0.2 * cx, body.spine_y - 45,
                            pancreas_z - 28)], 5.0)
    d_points, d_radii = _spline(duodenum, np.full(len(duodenum), 10.0), 3)
    radius = rng.uniform(9.0, 13.0)
    colon_points = np.concatenate([colon.starts, colon.ends])
    avoid = colon_points[np.all(np.isfinite(colon_points), axis=1)]
    centre = np.array([0.1 * cx, -0.3 * cy, body.dome_right - 185.0])
    semi = np.array([0.62 * cx, 0.55 * cy, 80.0])
    walk = _walk_bowel(rng, d_points[-1], centre, semi, radius, avoid[::2])
    walk_radii = radius * rng.uniform(0.55, 1.05, len(walk))
    has_air = rng.random(len(walk)) < 0.25
    levels = np.where(has_air[:-1], walk[:-1, 1] - walk_radii[:-1] * rng.uniform(0.1, 0.7, len(walk) - 1), -_BIG)
    return _join(_tubes(d_points, d_radii, -_BIG), _tubes(walk, walk_radii, levels))


def _draw_pancreas_and_veins(rng: np.random.Generator, body: _Body, kidneys: tuple[_Ellipsoid, _Ellipsoid]
                             ) -> tuple[_Tubes, _Tubes, np.ndarray]:
    """The pancreas, the veins behind it that form the portal vein, the renal veins and the SMA."""
    cx, _, _ = body.cavity
    z = body.dome_right - 125.0 + rng.uniform(-8, 8)
    sy = body.spine_y
    control = _jitter(rng, [(-0.24 * cx, sy - 42, z - 14), (-0.03 * cx, sy - 50, z), (0.25 * cx, sy - 38, z + 6),
                            (0.52 * cx, sy - 8, z + 14)], 5.0)
    size = rng.uniform(0.8, 1.15)
    points, radii = _spline(control, np.array([15.0, 10.0, 11.0, 9.0]) * size, 4)
    pancreas = _tubes(points, radii)
    confluence = control[1] + np.array([-4.0, 13.0, 0.0])
    splenic = _tubes([control[3] + [12.0, 14.0, 2.0], control[2] + [0.0, 13.0, 0.0], confluence], [4.5, 5.0, 5.5], 0)
    smv = _tubes([confluence + np.array([2.0, -4.0, -150.0]), confluence + np.array([0.0, -6.0, -40.0]), confluence],
                 [5.0, 5.5, 6.0], 0)
    ax, ay, ar = body.aorta
    ivx, ivy, _, _ = body.ivc
    sma = _tubes([(ax - 3, ay - ar + 2, z - 6), (ax - 6, ay - ar - 22, z - 30), (ax - 12, ay - ar - 32, -150.0)],
                 [3.5, 3.5, 3.0], 2)
    right, left = kidneys
    renal_left = _tubes([left.centre + np.array([-28.0, -4.0, 4.0]), (ax, ay - ar - 6.0, left.centre[2] + 8),
                         (ivx + 4, ivy, left.centre[2] + 10)], [4.5, 4.0, 5.0], 1)
    renal_right = _tubes([right.centre + np.array([24.0, -4.0, 4.0]), (ivx, ivy, right.centre[2] + 12)], [4.5, 5.0], 1)
    celiac = _tubes([(ax - 2, ay - ar + 2, z + 16), (ax - 4, ay - ar - 16, z + 18), (-0.2 * cx, sy - 62, z + 24)],
                    [3.5, 3.0, 2.5], 2)
    splenic_artery = _tubes([(ax - 4, ay - ar - 16, z + 18), control[2] + [0.0, 4.0, 14.0],
                             control[3] + [10.0, 8.0, 16.0]], [3.0, 2.5, 2.5], 2)
    veins = _join(splenic, smv, sma, renal_left, renal_right, celiac, splenic_artery)
    return pancreas, veins, confluence


def _draw_organs(rng: np.random.Generator, body: _Body, kidneys: tuple[_Ellipsoid, _Ellipsoid],
                 underside: Callable[[float, float], float]) -> _Organs:
    """The organs around the liver; ``underside`` gives the z of the liver's lower surface at (x, y)."""
    cx, _, cp = body.cavity
    spleen = _Ellipsoid(
        np.array([0.6 * cx, 0.45 * cp, body.dome_left - rng.uniform(50, 65)]),
        np.array([rng.uniform(18, 26), rng.uniform(45, 62), rng.uniform(40, 55)]),
        _rotation_xyz((rng.uniform(-10, 10), rng.uniform(-15, 5), -rng.uniform(30, 50))))
    heart = _Ellipsoid(np.array([18.0, body.spine_y - 95.0, body.dome_left + 45.0]),
                       np.array([62.0, 48.0, 55.0]) * rng.uniform(0.9, 1.1),
                       _rotation_xyz((0.0, 10.0, rng.uniform(20, 35))))
    stomach = _draw_stomach(rng, body)
    pancreas, veins, confluence = _draw_pancreas_and_veins(rng, body, kidneys)
    colon = _draw_colon(rng, body, underside)
    small_bowel = _draw_small_bowel(rng, body, colon, float(pancreas.starts[:, 2].mean()))
    return _Organs(kidneys, spleen, heart, stomach, pancreas, veins, colon, small_bowel, confluence,
                   bool(rng.random() < 0.25))


# ----------------------------------------------------------------------------- the liver


@dataclass(frozen=True, eq=False)
class _Liver:
    """A deformed union of lobes, clipped by the diaphragm and the body wall, scaled to a volume.

    The lobes, the inferior surface and the gallbladder live in a "unit" frame: a point p of the
    patient maps to ``anchor + (p + warp(p) - anchor) / scale`` there, and distances scale back by
    ``scale``. The clips (diaphragm, wall, IVC, right kidney) act in patient space.
    """

    right: _Ellipsoid
    right_exponent: float  # superellipsoid exponent of the right lobe (> 2: fills the right upper quadrant)
    left: _Ellipsoid
    left_taper: float  # the left lobe thins by this fraction toward the patient's left
    caudate: _Ellipsoid
    gallbladder: _Ellipsoid | None
    inferior: tuple[float, float, float, float]  # z0, dz/dx, dz/dy, x0: the underside z = z0 + ...
    warp: _WaveField
    anchor: np.ndarray
    scale: float
    body: _Body
    kidney: _Ellipsoid

    def warped(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(c + s for c, s in zip((x, y, z), self.warp(x, y, z), strict=True))

    def unit(self, warped: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        inverse = np.float32(1.0 / self.scale)
        return tuple(np.float32(a) + (c - np.float32(a)) * inverse for c, a in zip(warped, self.anchor, strict=True))

    def _lobes(self, u: tuple[np.ndarray, ...]) -> np.ndarray:
        qx, qy, qz = _local(*u, self.left.centre, self.left.rotation)
        a, b, c = self.left.semi
        thinning = 1.0 - np.float32(self.left_taper) * (np.clip(qx / np.float32(a), -1.0, 1.0) + 1.0) / 2.0
        left = _ellipsoid_local_sdf(qx, qy, qz, (a, b * thinning, c * thinning))
        right = _superellipsoid_local_sdf(*_local(*u, self.right.centre, self.right.rotation), self.right.semi,
                                          self.right_exponent)
        lobes = _smooth_min(right, left, 20.0)
        lobes = _smooth_min(lobes, self.caudate.sdf(*u), 10.0)
        z0, slope_x, slope_y, x0 = self.inferior
        underside = np.float32(z0) + np.float32(slope_x) * (u[0] - np.float32(x0)) + np.float32(slope_y) * u[1]
        return _smooth_max(lobes, underside - u[2], 12.0)

    def underside_z(self, x: float, y: float) -> float:
        """Patient z of the lower surface plane at patient (x, y), ignoring the warp."""
        z0, slope_x, slope_y, x0 = self.inferior
        ux, uy, _ = self.unit((np.float32(x), np.float32(y), np.float32(0.0)))
        return float(self.to_patient(np.array([0.0, 0.0, z0 + slope_x * (ux - x0) + slope_y * uy]))[2])

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self.fields(x, y, z)[0]

    def fields(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed distances to the liver and to the gallbladder (far away when there is none)."""
        warped = self.warped(x, y, z)
        unit = self.unit(warped)
        distance = self._lobes(unit) * np.float32(self.scale)
        gallbladder = np.full((1, 1, 1), _BIG, np.float32)
        if self.gallbladder is not None:
            gallbladder = self.gallbladder.sdf(*unit) * np.float32(self.scale)
        # Behind the aorta and left of the IVC lie the crus, adrenal and stomach, not liver.
        ivx, ivy, iva, ivb = self.body.ivc
        _, ay, radius = self.body.aorta
        beside = _smooth_min(warped[0] - np.float32(ivx + iva), warped[1] - np.float32(ay - radius - 6.0), 10.0)
        distance = _smooth_max(distance, beside, 8.0)
        distance = np.maximum(distance, z - (self.body.diaphragm_z(x, y) - 5.0))
        distance = np.maximum(distance, self.body.outline_sdf(x, y, z) + np.float32(self.body.wall + 1.0))
        distance = np.maximum(distance, -_ellipse_sdf(x, y, (ivx, ivy), (iva, ivb)))
        distance = np.maximum(distance, -self.body.retroperitoneum_sdf(x, y))
        distance = np.maximum(distance, 3.0 - self.kidney.sdf(x, y, z))
        return np.maximum(distance, 1.5 - gallbladder), gallbladder

    def to_patient(self, point_unit: np.ndarray) -> np.ndarray:
        """Approximate patient position of a unit-frame point (ignoring the small warp)."""
        return self.anchor + self.scale * (np.asarray(point_unit) - self.anchor)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.array([e.bounds(25.0) for e in (self.right, self.left, self.caudate)])
        low = self.to_patient(boxes[:, 0].min(axis=0)) - self.warp.reach_mm
        high = self.to_patient(boxes[:, 1].max(axis=0)) + self.warp.reach_mm
        cx, cy, cp = self.body.cavity
        low = np.maximum(low, [-cx, -cy, -_BIG])
        high = np.minimum(high, [cx, cp, max(self.body.dome_right, self.body.dome_left)])
        return low, high

    def volume_ml(self, samples: np.ndarray, box_ml: float) -> float:
        inside = self.sdf(*(samples[:, axis].astype(np.float32) for axis in range(3))) < 0
        return float(inside.mean() * box_ml)


def _draw_liver_shape(rng: np.random.Generator, body: _Body, kidney: _Ellipsoid) -> _Liver:
    cx, cy, cp = body.cavity
    top = body.dome_right
    ivx, ivy, _, _ = body.ivc
    depth = 0.5 * (cy + cp)
    right = _Ellipsoid(np.array([-0.5 * cx, 0.5 * (cp - cy) + rng.uniform(-8, 8), top - rng.uniform(68, 80)]),
                       np.array([0.66 * cx, 0.95 * depth, rng.uniform(88, 100)]) * rng.uniform(0.92, 1.08, 3),
                       _rotation_xyz((rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-10, 10))))
    left = _Ellipsoid(np.array([rng.uniform(0.05, 0.2) * cx, -0.4 * cy, top - rng.uniform(40, 55)]),
                      np.array([rng.uniform(0.5, 0.65) * cx, rng.uniform(0.45, 0.6) * cy, rng.uniform(40, 52)]),
                      _rotation_xyz((rng.uniform(-10, 10), rng.uniform(-12, 6), rng.uniform(-12, 8))))
    caudate = _Ellipsoid(np.array([ivx + 14.0, ivy - 20.0, top - 62.0]), np.array([16.0, 14.0, 28.0]))
    inferior = (top - rng.uniform(140, 155), rng.uniform(0.25, 0.5), rng.uniform(-0.15, 0.15), -0.5 * cx)
    gallbladder = None
    if rng.random() < 0.85:  # the rest had a cholecystectomy
        x, y = -0.3 * cx + rng.uniform(-8, 8), -0.5 * cy
        z = inferior[0] + inferior[1] * (x - inferior[3]) + inferior[2] * y + rng.uniform(0, 15)
        gallbladder = _Ellipsoid(np.array([x, y, z]), np.array([rng.uniform(11, 17), rng.uniform(11, 17),
                                 rng.uniform(28, 42)]), _rotation_xyz((rng.uniform(-45, -20), rng.uniform(-25, 0), 0)))
    warp = _WaveField.draw(rng, rng.uniform(6.0, 12.0), (70.0, 180.0))
    anchor = np.array([-0.5 * cx, 0.3 * cp, top - 5.0])
    return _Liver(right, rng.uniform(2.3, 3.0), left, rng.uniform(0.25, 0.6), caudate, gallbladder, inferior, warp,
                  anchor, 1.0, body, kidney)


def _fit_liver_volume(rng: np.random.Generator, liver: _Liver, target_ml: float) -> _Liver:
    """Scale the lobes (from their current scale) until the volume matches the target.

    The volume is counted on a jittered 8 mm lattice (stratified sampling: about 1 % error).
    """
    low = np.array([-liver.body.cavity[0], -liver.body.cavity[1], liver.body.dome_right - 260.0])
    high = np.array([liver.body.cavity[0], liver.body.cavity[2], liver.body.dome_right])
    cells = np.maximum(np.round((high - low) / 8.0).astype(int), 1)
    corners = np.stack(np.meshgrid(*(np.arange(n) for n in cells), indexing="ij"), axis=-1).reshape(-1, 3)
    samples = low + (corners + rng.random(corners.shape)) * (high - low) / cells
    box_ml = float(np.prod(high - low)) / 1000.0
    scale = liver.scale
    for _ in range(3):
        volume = liver.volume_ml(samples, box_ml)
        scale = float(np.clip(scale * (target_ml / max(volume, 1.0)) ** (1 / 3), 0.6, 1.6))
        liver = replace(liver, scale=scale)
    return liver


def _interior_points(rng: np.random.Generator, liver: _Liver, count: int, margin_mm: float) -> np.ndarray:
    """Uniform random points at least ``margin_mm`` inside the liver."""
    low, high = liver.bounds()
    found: list[np.ndarray] = []
    total = 0
    while total < count:
        candidates = rng.uniform(low, high, size=(4 * count, 3))
        keep = liver.sdf(*(candidates[:, a].astype(np.float32) for a in range(3))).ravel() < -margin_mm
        found.append(candidates[keep])
        total += int(keep.sum())
    return np.concatenate(found)[:count]


# ----------------------------------------------------------------------------- vessel trees


def _split_territory(rng: np.random.Generator, points: np.ndarray, index: np.ndarray) -> list[np.ndarray]:
    """Cut a vascular territory in two across its longest axis (at a random quantile)."""
    centred = points[index] - points[index].mean(axis=0)
    axis = np.linalg.eigh(centred.T @ centred)[1][:, -1] + 0.25 * rng.standard_normal(3)
    projection = centred @ axis
    order = np.argsort(projection)
    cut = round(rng.uniform(0.3, 0.7) * len(order))
    return [part for part in (index[order[:cut]], index[order[cut:]]) if len(part)]


def _grow_tree(rng: np.random.Generator, roots: list[tuple[np.ndarray, np.ndarray, float, float]],
               points: np.ndarray, min_radius_mm: float) -> _Tubes:
    """Grow a vessel tree that supplies (or drains) the liver points.

    Each branch heads for the centroid of its territory, which is then split in two; radii follow
    Murray's law (r^3 proportional to the territory), so branching stops near ``min_radius_mm``.

    Args:
        roots: (start point, point indices of its territory, radius, tag) of each root branch.
        points: (N, 3) points inside the liver.
        min_radius_mm: no branch is thinner than this.
    """
    segments: list[tuple[np.ndarray, np.ndarray, float, float, float]] = []
    stack = list(roots)
    while stack:
        start, index, radius, tag = stack.pop()
        centroid = points[index].mean(axis=0)
        terminal = len(index) < 4 or radius * 0.5 ** (1 / 3) < min_radius_mm
        end = centroid if terminal else start + (centroid - start) * rng.uniform(0.35, 0.6)
        middle = 0.5 * (start + end) + rng.normal(0.0, 0.07 * np.linalg.norm(end - start), 3)
        taper = radius * (0.97 if terminal else 0.99)
        segments += [(start, middle, radius, taper, tag), (middle, end, taper, taper, tag)]
        if terminal:
            continue
        for part in _split_territory(rng, points, index):
            stack.append((end, part, max(radius * (len(part) / len(index)) ** (1 / 3), min_radius_mm), 0.0))
    starts, ends, r0, r1, tags = zip(*segments, strict=True)
    return _Tubes(np.array(starts), np.array(ends), np.stack([r0, r1], axis=1), np.array(tags))


def _groups_along_x(points: np.ndarray, quantiles: tuple[float, ...]) -> list[np.ndarray]:
    edges = np.quantile(points[:, 0], quantiles)
    group = np.searchsorted(edges, points[:, 0])
    return [np.flatnonzero(group == g) for g in range(len(quantiles) + 1)]


def _nearest(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    return points[np.argmin(np.linalg.norm(points - target, axis=1))]


def _grow_portal_tree(rng: np.random.Generator, liver: _Liver, confluence: np.ndarray,
                      min_radius_mm: float) -> _Tubes:
    """The portal vein: an extrahepatic trunk from the confluence to the hilum, then the tree."""
    points = _interior_points(rng, liver, 1500, 3.0)
    ivx, ivy, _, _ = liver.body.ivc
    hilum = _nearest(points, liver.to_patient(np.array([ivx - 12.0, ivy - 35.0, liver.body.dome_right - 100.0])))
    radius = rng.uniform(6.0, 7.5)
    bend = 0.5 * (confluence + hilum) + np.array([-6.0, -4.0, 0.0]) + rng.normal(0, 4, 3)
    trunk = _tubes([confluence, bend, hilum], [radius, radius, 0.95 * radius], 1.0)
    groups = _groups_along_x(points, (rng.uniform(0.55, 0.68),))
    roots = [(hilum, g, 0.95 * radius * (len(g) / len(points)) ** (1 / 3), 0.0) for g in groups]
    return _join(trunk, _grow_tree(rng, roots, points, min_radius_mm))


def _grow_hepatic_tree(rng: np.random.Generator, liver: _Liver, min_radius_mm: float) -> _Tubes:
    """Right, middle and left hepatic veins, converging on the IVC at the top-back of the liver."""
    points = _interior_points(rng, liver, 1500, 3.0)
    ivx, ivy, _, ivb = liver.body.ivc
    root = np.array([ivx + 2.0, ivy - 0.3 * ivb, liver.body.dome_right - rng.uniform(18, 28)])
    radius = rng.uniform(7.0, 8.5)
    groups = _groups_along_x(points, (rng.uniform(0.35, 0.5), rng.uniform(0.7, 0.8)))
    roots = [(root, g, radius * (len(g) / len(points)) ** (1 / 3), 1.0) for g in groups]
    tree = _grow_tree(rng, roots, points, min_radius_mm)
    # Only the first stretch of each main vein (into the IVC) is drawn outside the liver.
    first = np.isin(np.arange(len(tree.tags)), np.flatnonzero(tree.tags == 1.0)[:2 * len(groups)])
    return replace(tree, tags=first.astype(float))


# ----------------------------------------------------------------------------- lesions


@dataclass(frozen=True)
class _Look:
    """How a lesion appears (HU): core, an optional rim, an optional necrotic centre, texture, edge."""

    core: float
    rim: float
    rim_mm: float
    necrosis: float
    necrosis_depth: float  # fraction of the smallest semi-axis below which the centre is necrotic
    texture: float
    edge_mm: float


@dataclass(frozen=True, eq=False)
class _Lesion:
    """A perturbed ellipsoid: the truth record plus its surface waves and appearance draws."""

    truth: LesionTruth
    waves: np.ndarray  # (M, 3) wave vectors over the unit direction sphere
    amplitudes: np.ndarray  # (M,) relative radius change
    phases: np.ndarray  # (M,)
    look_draws: np.ndarray  # (6,) uniforms; the look follows the phase

    @property
    def reach_mm(self) -> float:
        return max(self.truth.semi_axes_mm) * (1.0 + float(np.abs(self.amplitudes).sum()))

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        t = self.truth
        qx, qy, qz = _local(x, y, z, np.asarray(t.centre_lps_mm), t.rotation)
        inverse_r = 1.0 / (np.sqrt(qx * qx + qy * qy + qz * qz) + np.float32(1e-3))
        bump = np.zeros((1, 1, 1), np.float32)
        for w, a, p in zip(self.waves.astype(np.float32), self.amplitudes, self.phases, strict=True):
            bump = bump + np.float32(a) * np.cos((w[0] * qx + w[1] * qy + w[2] * qz) * inverse_r + np.float32(p))
        a, b, c = t.semi_axes_mm
        k0 = np.sqrt((qx / a) ** 2 + (qy / b) ** 2 + (qz / c) ** 2)
        k1 = np.sqrt((qx / (a * a)) ** 2 + (qy / (b * b)) ** 2 + (qz / (c * c)) ** 2)
        tiny = np.float32(1e-4)
        return (k0 / (1.0 + bump) - 1.0) * (k0 + tiny) / (k1 + tiny / min(a, b, c))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        centre = np.asarray(self.truth.centre_lps_mm)
        return centre - self.reach_mm - 2.0, centre + self.reach_mm + 2.0


_IRREGULARITY = {"metastasis": (0.06, 0.18), "hcc": (0.04, 0.12), "cyst": (0.0, 0.03)}
_ELONGATION = {"metastasis": 0.7, "hcc": 0.75, "cyst": 0.85}


def _draw_lesion(rng: np.random.Generator, centre: np.ndarray, diameter_mm: float, kind: str) -> _Lesion:
    semi = 0.5 * diameter_mm * np.array([1.0, *rng.uniform(_ELONGATION[kind], 1.0, 2)])
    waves = rng.standard_normal((5, 3))
    waves *= rng.uniform(1.5, 4.0, (5, 1)) / np.linalg.norm(waves, axis=1, keepdims=True)
    weights = rng.dirichlet(np.ones(5))
    amplitudes = rng.uniform(*_IRREGULARITY[kind]) * weights
    draws = rng.random(6)
    truth = LesionTruth(tuple(float(c) for c in centre), tuple(float(s) for s in semi),  # type: ignore[arg-type]
                        _random_rotation(rng), kind, float("nan"))  # type: ignore[arg-type]
    return _Lesion(truth, waves, amplitudes, rng.uniform(0, 2 * math.pi, 5), draws)


def _surface_probes(lesion: _Lesion) -> np.ndarray:
    """(27, 3) LPS points: the centre and 26 points on the lesion's outer envelope."""
    directions = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], float)
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    directions = directions / np.where(norms > 0, norms, 1.0)
    envelope = directions * np.asarray(lesion.truth.semi_axes_mm) * (1.0 + float(np.abs(lesion.amplitudes).sum()))
    return np.asarray(lesion.truth.centre_lps_mm) + envelope @ lesion.truth.rotation.T


def _fits(lesion: _Lesion, placed: list[_Lesion], inside: Callable[[np.ndarray], np.ndarray]) -> bool:
    centre = np.asarray(lesion.truth.centre_lps_mm)
    for other in placed:
        if np.linalg.norm(centre - np.asarray(other.truth.centre_lps_mm)) < lesion.reach_mm + other.reach_mm + 3.0:
            return False
    return bool(np.all(inside(_surface_probes(lesion))))


def _place_lesions(rng: np.random.Generator, count: int, kinds: tuple[str, ...], diameter_mm: tuple[float, float],
                   draw_centre: Callable[[], np.ndarray], inside: Callable[[np.ndarray], np.ndarray]
                   ) -> list[_Lesion]:
    """Draw up to ``count`` non-overlapping lesions that fit inside the liver; shrink ones that do not fit."""
    dominant = kinds[rng.integers(len(kinds))]
    placed: list[_Lesion] = []
    for _ in range(count):
        kind = dominant if rng.random() < 0.7 else kinds[rng.integers(len(kinds))]
        diameter = math.exp(rng.uniform(math.log(diameter_mm[0]), math.log(diameter_mm[1])))
        for attempt in range(60):
            if attempt and attempt % 15 == 0:
                diameter = max(diameter_mm[0], 0.7 * diameter)
            lesion = _draw_lesion(rng, draw_centre(), diameter, kind)
            if _fits(lesion, placed, inside):
                placed.append(lesion)
                break
        else:
            logger.debug("no room for a %.0f mm %s; placed %d lesions", diameter, kind, len(placed))
    return placed


def _between(ranges: tuple[tuple[float, float], ...], phase: str, draw: float) -> float:
    low, high = ranges[PHASES.index(phase)]
    return low + draw * (high - low)


def _lesion_look(kind: str, phase: str, draws: np.ndarray, smallest_semi_mm: float, liver_hu: float) -> _Look:
    """HU of a lesion relative to the liver around it, by kind and phase (METHOD.md's table)."""
    u = draws
    if kind == "cyst":
        core = 20.0 * u[0]
        return _Look(core, core, 1.0, core, 1.0, 2.0, 0.3)
    enhanced = phase != "unenhanced"
    if kind == "metastasis":
        core = liver_hu - _between(((30, 60), (25, 50), (30, 55), (10, 25)), phase, u[0])
        rim = liver_hu + _between(((-5, 20), (10, 30), (-5, 10), (0, 0)), phase, u[2])
        has_rim = enhanced and u[1] < 0.6
        necrotic = smallest_semi_mm > 10 and u[4] < 0.5
        return _Look(core, rim if has_rim else core, 1.5 + 2.5 * u[3], max(core - 15 - 20 * u[5], 5.0),
                     0.45 if necrotic else 2.0, 7.0, 1.5)
    core = liver_hu + _between(((-20, -5), (25, 60), (-30, -15), (-15, -5)), phase, u[0])
    has_capsule = phase in ("portal_venous", "late") and u[1] < 0.6
    necrotic = smallest_semi_mm > 15 and u[4] < 0.3
    return _Look(core, liver_hu + 5 + 15 * u[2] if has_capsule else core, 1.0 + u[3],
                 core - 20 - 20 * u[5], 0.5 if necrotic else 2.0, 12.0, 1.2)


def _lesion_hu(look: _Look, sdf: np.ndarray, texture: np.ndarray, smallest_semi_mm: float) -> np.ndarray:
    """HU inside a lesion from its signed distance: rim near the surface, necrosis deep inside."""
    rim = np.clip(1.0 + sdf / np.float32(look.rim_mm), 0.0, 1.0)
    depth = np.float32(look.necrosis_depth * smallest_semi_mm)
    necrosis = np.clip((-sdf - depth) / np.float32(0.25 * smallest_semi_mm + 1.0), 0.0, 1.0)
    return (np.float32(look.core) + np.float32(look.rim - look.core) * rim
            + np.float32(look.necrosis - look.core) * necrosis + np.float32(look.texture) * texture)


# ----------------------------------------------------------------------------- the patient


@dataclass(frozen=True, eq=False)
class _Patient:
    body: _Body
    organs: _Organs
    liver: _Liver
    portal: _Tubes  # tag 1: drawn outside the liver too (the extrahepatic trunk)
    hepatic: _Tubes  # tag 1: drawn outside the liver too (the stretch into the IVC)
    lesions: tuple[_Lesion, ...]
    hu: dict[str, float]


def _draw_tissue_hu(rng: np.random.Generator, phase: str) -> dict[str, float]:
    """Nominal HU per tissue; enhancing tissues share part of one draw (the patient's contrast timing)."""
    timing = rng.random()
    values = {name: _between(ranges, phase, 0.6 * timing + 0.4 * rng.random())
              for name, ranges in _ENHANCING_HU.items()}
    values.update({name: low + rng.random() * (high - low) for name, (low, high) in _FIXED_HU.items()})
    return values


def _draw_patient(config: PhantomConfig) -> _Patient:
    """All random anatomy, from the seed only (never from the grid)."""
    rng = _rng(config.seed, "anatomy")
    low_ml, high_ml = config.liver_volume_ml
    liver_ml = rng.uniform(low_ml, high_ml)
    body = _draw_body(rng, (liver_ml - low_ml) / max(high_ml - low_ml, 1.0))
    kidneys = _draw_kidneys(rng, body)
    shape = _draw_liver_shape(rng, body, kidneys[0])
    liver = _fit_liver_volume(rng, shape, liver_ml)
    organs = _draw_organs(rng, body, kidneys, liver.underside_z)
    # Bowel, stomach and spleen indent the liver; grow it by what they take.
    lost = float(np.mean(_in_carving_organ(organs, _interior_points(rng, liver, 800, 0.0))))
    liver = _fit_liver_volume(rng, liver, liver_ml / (1.0 - min(lost, 0.3)))
    vessel_rng = _rng(config.seed, "vessels")
    portal = _grow_portal_tree(vessel_rng, liver, organs.confluence, config.min_vessel_radius_mm)
    hepatic = _grow_hepatic_tree(vessel_rng, liver, config.min_vessel_radius_mm)
    hu = _draw_tissue_hu(_rng(config.seed, "appearance"), config.phase)
    lesions = _draw_phantom_lesions(config, liver, organs, hu["liver"])
    return _Patient(body, organs, liver, portal, hepatic, lesions, hu)


def _in_carving_organ(organs: _Organs, points: np.ndarray) -> np.ndarray:
    """Which (P, 3) points lie in an organ painted over the liver (stomach, bowel, spleen)."""
    distance = organs.spleen.sdf(*(points[:, a].astype(np.float32) for a in range(3))).ravel()
    for tubes in (organs.stomach, organs.colon, organs.small_bowel):
        distance = np.minimum(distance, _tubes_distance(tubes, points))
    return distance < 0


def _draw_phantom_lesions(config: PhantomConfig, liver: _Liver, organs: _Organs, liver_hu: float
                          ) -> tuple[_Lesion, ...]:
    rng = _rng(config.seed, "lesions")
    count = int(rng.integers(config.n_tumors[0], config.n_tumors[1] + 1))
    if count == 0:
        return ()
    candidates = _interior_points(rng, liver, 400, 4.0)
    lesions = _place_lesions(
        rng, count, config.tumor_kinds, config.tumor_diameter_mm,
        lambda: candidates[rng.integers(len(candidates))],
        lambda p: (liver.sdf(*(p[:, a].astype(np.float32) for a in range(3))).ravel() < -1.0)
        & ~_in_carving_organ(organs, p))
    return tuple(_with_core_hu(lesion, config.phase, liver_hu) for lesion in lesions)


def _with_core_hu(lesion: _Lesion, phase: str, liver_hu: float) -> _Lesion:
    look = _lesion_look(lesion.truth.kind, phase, lesion.look_draws, min(lesion.truth.semi_axes_mm), liver_hu)
    return replace(lesion, truth=replace(lesion.truth, core_hu=look.core))


# ----------------------------------------------------------------------------- painting the patient


def _render_trunk(canvas: _Canvas, body: _Body, hu: dict[str, float]) -> None:
    """Table, skin, subcutaneous fat, the muscle wall and the fat of the abdominal cavity."""
    table = canvas.region((-_BIG, body.back + 2.0, -_BIG), (_BIG, body.back + 40.0, _BIG))
    if table is not None:
        top = np.float32(body.back + 14.0) + table.x * table.x / np.float32(1600.0)
        for offset, half in ((2.0, 1.5), (16.0, 1.0)):
            canvas.paint(table, np.abs(table.y - top - np.float32(offset)) - np.float32(half), hu["table"])
    r = canvas.region((-body.half_width - 2, -body.half_depth - 2, -_BIG), (body.half_width + 2, body.back + 2, _BIG))
    if r is None:
        return
    skin = body.outline_sdf(r.x, r.y, r.z)
    canvas.paint(r, skin, hu["fat"] + 6.0 * r.tex)
    canvas.paint(r, np.maximum(skin, -skin - 2.0), hu["muscle"] - 10.0)
    wall = np.maximum(skin + np.float32(body.fat), -skin - np.float32(body.wall))
    canvas.paint(r, wall, hu["muscle"] + 4.0 * r.tex)
    lateral = np.clip((np.abs(r.x) - np.float32(0.45 * body.half_width)) / 20.0, 0.0, 1.0)
    seam = np.abs(skin + np.float32(body.fat + 0.5 * body.muscle)) - 0.8
    canvas.paint(r, seam, hu["fat"], weight=lateral)
    cavity = skin + np.float32(body.wall)
    strands = np.maximum(np.abs(r.tex - 0.9) * 20.0 - 1.0, cavity)
    canvas.paint(r, strands, hu["fat"] + 90.0, weight=0.7)


def _render_ribs(canvas: _Canvas, body: _Body, hu: dict[str, float]) -> None:
    """Ribs in the wall: sloping bands of bone down to the costal margin (lower laterally and behind)."""
    low = body.dome_right - 160.0
    r = canvas.region((-body.half_width, -body.half_depth, low), (body.half_width, body.back, _BIG))
    if r is None:
        return
    radial = -body.outline_sdf(r.x, r.y, r.z) - np.float32(body.fat + 0.5 * body.muscle)
    half_pitch = np.float32(body.rib_pitch / 2)
    along = r.z - np.float32(body.rib_offset) + np.float32(body.rib_slope) * r.y
    vertical = np.mod(along + half_pitch, np.float32(body.rib_pitch)) - half_pitch
    thickness, height = min(3.5, 0.3 * body.muscle), 5.0  # half-axes of the oval cross-section
    oval = (np.sqrt((radial / np.float32(thickness)) ** 2 + (vertical / np.float32(height)) ** 2) - 1) * thickness
    anterior = np.clip(-r.y / np.float32(body.half_depth), 0.0, 1.0)
    margin = np.float32(body.dome_right - 150.0) + 110.0 * anterior ** 2 - r.z
    sdf = np.maximum(oval, margin)
    cortex = np.clip(1.0 + sdf / 1.2, 0.0, 1.0)
    canvas.paint(r, sdf, hu["bone_trabecular"] + (hu["bone_cortical"] - hu["bone_trabecular"]) * cortex)


def _render_back(canvas: _Canvas, body: _Body, hu: dict[str, float]) -> None:
    """Paraspinal muscles behind the spine and the psoas muscles beside it (growing downward)."""
    vx = body.vertebra[0]
    r = canvas.region((-90.0, body.spine_y - 40, -_BIG), (90.0, body.back, _BIG))
    if r is None:
        return
    marbling = np.clip((r.tex - 0.8) * 2.0, 0.0, 0.6)
    value = hu["muscle"] + (hu["fat"] - hu["muscle"]) * marbling
    for sign in (-1.0, 1.0):
        canvas.paint(r, _ellipse_sdf(r.x, r.y, (sign * (vx + 16.0), body.canal_y + 14.0), (27.0, 24.0)), value)
        growth = np.clip((np.float32(body.dome_right - 120.0) - r.z) / 70.0, 0.0, 1.0)
        psoas = _ellipse_sdf(r.x, r.y, (sign * (vx + 14.0), body.spine_y + 2.0), (4 + 14 * growth, 4 + 12 * growth))
        canvas.paint(r, psoas, hu["muscle"] + 4.0 * r.tex, weight=growth > 0)


def _render_spine(canvas: _Canvas, body: _Body, hu: dict[str, float]) -> None:
    """Vertebral bodies with cortex and discs, the canal, the arch, spinous and transverse processes."""
    vx, vy = body.vertebra
    r = canvas.region((-vx - 30, body.spine_y - vy - 5, -_BIG), (vx + 30, body.back - body.fat + 5, _BIG))
    if r is None:
        return
    cortical, trabecular = hu["bone_cortical"], hu["bone_trabecular"]
    level = np.mod(r.z - np.float32(body.vertebra_offset), np.float32(body.vertebra_pitch))
    disc_mm = 8.0
    vertebra = _ellipse_sdf(r.x, r.y, (0.0, body.spine_y), (vx, vy))
    endplate = np.abs(level - np.float32(disc_mm)) - 1.2
    body_value = trabecular + (cortical - trabecular) * np.maximum(np.clip(1.0 + vertebra / 1.5, 0, 1),
                                                                   np.clip(1.0 - (endplate + 1.2) / 1.5, 0, 1))
    canvas.paint(r, vertebra, body_value + 15.0 * r.tex)
    canvas.paint(r, np.maximum(vertebra - 1.0, level - np.float32(disc_mm)), hu["disc"])
    arch_level = np.maximum(np.float32(disc_mm + 1.0) - level, level - np.float32(body.vertebra_pitch - 3.0))
    canal = np.sqrt(r.x * r.x + (r.y - np.float32(body.canal_y)) ** 2)
    ring = np.abs(canal - 12.5) - 4.0
    spinous = _capsule_sdf(r.x, r.y, np.zeros((1, 1, 1), np.float32), np.array([0.0, body.canal_y + 12, 0.0]),
                           np.array([0.0, body.back - body.fat - 4.0, 0.0]), 4.0, 3.0)
    arch = np.maximum(np.minimum(ring, spinous), arch_level)
    transverse_level = np.maximum(np.float32(disc_mm + 4.0) - level, level - np.float32(disc_mm + 16.0))
    for sign in (-1.0, 1.0):
        process = _capsule_sdf(r.x, r.y, np.zeros((1, 1, 1), np.float32), np.array([sign * 10, body.canal_y - 4, 0]),
                               np.array([sign * (vx + 16), body.canal_y, 0.0]), 3.5, 2.5)
        arch = np.minimum(arch, np.maximum(process, transverse_level))
    canvas.paint(r, arch, cortical * 0.7 + 10.0 * r.tex)
    canvas.paint(r, canal - 8.5, hu["csf"])


def _render_chest(canvas: _Canvas, body: _Body, heart: _Ellipsoid, hu: dict[str, float]) -> None:
    """Lung bases above the diaphragm, the diaphragm itself and the bottom of the heart."""
    cx, cy, cp = body.cavity
    r = canvas.region((-cx, -cy, min(body.dome_right, body.dome_left) - 100.0), (cx, cp, _BIG))
    if r is None:
        return
    dome = body.diaphragm_z(r.x, r.y)
    cavity = body.outline_sdf(r.x, r.y, r.z) + np.float32(body.wall)
    mediastinum = _ellipse_sdf(r.x, r.y, (0.0, body.spine_y - 15.0), (28.0, 40.0))
    lung = np.maximum(np.maximum(cavity + 1.0, dome - r.z), -mediastinum)
    vessels = np.clip(1.0 - np.abs(r.tex - 1.1) * 12.0, 0.0, 1.0)
    canvas.paint(r, lung, hu["lung"] + 25.0 * r.tex + (hu["muscle"] - hu["lung"]) * 0.8 * vessels)
    canvas.paint(r, np.maximum(np.abs(r.z - dome + 2.5) - 2.5, cavity), hu["muscle"] + 3.0 * r.tex)
    r = canvas.region(*heart.bounds(6.0))
    if r is None:
        return
    shell = np.maximum(heart.sdf(r.x, r.y, r.z), body.diaphragm_z(r.x, r.y) + 1.0 - r.z)
    canvas.paint(r, shell - 5.0, hu["fat"] + 5.0 * r.tex)
    canvas.paint(r, shell, hu["myocardium"] + 4.0 * r.tex)
    canvas.paint(r, shell + 10.0, hu["heart_blood"] + 3.0 * r.tex)


def _render_great_vessels(canvas: _Canvas, body: _Body, hu: dict[str, float]) -> None:
    """Aorta (left-anterior of the spine) and IVC (right-anterior, up into the right atrium)."""
    ax, ay, radius = body.aorta
    r = canvas.region((ax - radius - 10, ay - radius - 10, -_BIG), (ax + radius + 10, ay + radius + 10, _BIG))
    if r is not None:
        # The diaphragmatic crura wrap the aorta from the dome down to about the celiac trunk.
        ring = np.abs(np.sqrt((r.x - np.float32(ax)) ** 2 + (r.y - np.float32(ay)) ** 2) - np.float32(radius + 3.5))
        levels = np.maximum(np.float32(body.dome_right - 105.0) - r.z, r.z - np.float32(body.dome_left))
        canvas.paint(r, np.maximum(ring - 3.0, levels), hu["muscle"] + 4.0 * r.tex)
        canvas.paint(r, _ellipse_sdf(r.x, r.y, (ax, ay), (radius, radius)), hu["aorta"] + 3.0 * r.tex)
    ix, iy, ia, ib = body.ivc
    r = canvas.region((ix - ia - 2, iy - ib - 2, -_BIG), (ix + ia + 2, iy + ib + 2, body.dome_right + 20))
    if r is not None:
        # It ends a little above the diaphragm, where it opens into the right atrium.
        top = body.diaphragm_z(np.float32(ix), np.float32(iy)) + np.float32(6.0)
        sdf = _smooth_max(_ellipse_sdf(r.x, r.y, (ix, iy), (ia, ib)), r.z - top, 6.0)
        canvas.paint(r, sdf, hu["ivc"] + 4.0 * r.tex)


def _render_kidneys(canvas: _Canvas, kidneys: tuple[_Ellipsoid, _Ellipsoid], hu: dict[str, float]) -> None:
    """Kidneys: cortex, medulla (dark in the arterial phase) and renal sinus fat at the medial hilum."""
    for kidney in kidneys:
        r = canvas.region(*kidney.bounds(3.0))
        if r is None:
            continue
        sdf = kidney.sdf(r.x, r.y, r.z)
        canvas.paint(r, sdf - 4.0, hu["fat"] + 5.0 * r.tex)
        canvas.paint(r, sdf, hu["kidney_cortex"] + 4.0 * r.tex)
        medulla = np.maximum(sdf + 6.0, 0.3 - r.tex)
        canvas.paint(r, medulla, hu["kidney_medulla"] + 4.0 * r.tex)
        medial = np.array([-np.sign(kidney.centre[0]), -0.3, 0.0]) * kidney.semi[0]
        sinus = _Ellipsoid(kidney.centre + 0.75 * medial, kidney.semi * [0.55, 0.4, 0.5], kidney.rotation)
        canvas.paint(r, sinus.sdf(r.x, r.y, r.z), hu["fat"] + 20.0 + 10.0 * r.tex)


def _render_spleen(canvas: _Canvas, body: _Body, spleen: _Ellipsoid, hu: dict[str, float], phase: str) -> None:
    r = canvas.region(*spleen.bounds(2.0))
    if r is None:
        return
    sdf = np.maximum(spleen.sdf(r.x, r.y, r.z), body.outline_sdf(r.x, r.y, r.z) + np.float32(body.wall + 1.0))
    sdf = np.maximum(sdf, r.z - (body.diaphragm_z(r.x, r.y) - 5.0))
    mottling = 25.0 if phase == "arterial" else 4.0  # arterial-phase spleen is heterogeneous
    canvas.paint(r, sdf, hu["spleen"] + mottling * r.tex)
    canvas.carve_liver(r, sdf)


def _render_solid_tubes(canvas: _Canvas, tubes: _Tubes, value: Callable[[_Region, np.ndarray], np.ndarray]
                        ) -> None:
    field = _tube_field(canvas, tubes)
    if field is not None:
        region, distance, tag = field
        canvas.paint(region, distance, value(region, tag))


def _render_pancreas_and_veins(canvas: _Canvas, organs: _Organs, hu: dict[str, float]) -> None:
    def pancreas(region: _Region, _tag: np.ndarray) -> np.ndarray:
        fatty = np.clip((region.tex - 1.0) * 3.0, 0.0, 0.7)
        return hu["pancreas"] + 8.0 * region.tex + (hu["fat"] - hu["pancreas"]) * fatty

    def vein(region: _Region, tag: np.ndarray) -> np.ndarray:
        return np.select([tag < 0.5, tag < 1.5], [hu["portal_vein"], hu["ivc"]], hu["aorta"]) + 3.0 * region.tex

    _render_solid_tubes(canvas, organs.pancreas, pancreas)
    _render_solid_tubes(canvas, organs.veins, vein)


def _render_hollow(canvas: _Canvas, tubes: _Tubes, wall_mm: float, wall_hu: float,
                   content: Callable[[_Region], np.ndarray]) -> None:
    """A hollow organ: enhancing wall, then its content, with air above the air-fluid level (anterior).

    Hollow organs are painted after the liver and indent it where they meet.
    """
    field = _tube_field(canvas, tubes)
    if field is None:
        return
    region, distance, level = field
    canvas.paint(region, distance, wall_hu + 6.0 * region.tex)
    fill = content(region)
    air = np.clip(0.5 + (level - region.y) / np.float32(canvas.grid.edge_mm), 0.0, 1.0)
    canvas.paint(region, distance + np.float32(wall_mm), fill + (_AIR_HU - fill) * air)
    canvas.carve_liver(region, distance)


def _render_bowel(canvas: _Canvas, organs: _Organs, hu: dict[str, float]) -> None:
    """Stomach, colon (mottled stool with gas) and small bowel (fluid, some gas, maybe oral contrast)."""
    liquid = hu["oral_contrast"] if organs.oral_contrast else hu["fluid"]

    def stomach(region: _Region) -> np.ndarray:
        return liquid + 12.0 * region.tex

    def stool(region: _Region) -> np.ndarray:
        gas = np.clip((region.tex - 0.7) * 4.0, 0.0, 1.0)
        return hu["stool"] + 40.0 * region.tex + (_AIR_HU - hu["stool"]) * gas

    def small_bowel(region: _Region) -> np.ndarray:
        return liquid + 8.0 * region.tex

    _render_hollow(canvas, organs.stomach, 4.0, hu["bowel_wall"], stomach)
    _render_hollow(canvas, organs.colon, 2.5, hu["bowel_wall"], stool)
    _render_hollow(canvas, organs.small_bowel, 2.5, hu["bowel_wall"], small_bowel)


def _render_liver(canvas: _Canvas, liver: _Liver, hu: dict[str, float]) -> None:
    """The liver parenchyma (truth and soft occupancy)."""
    r = canvas.region(*liver.bounds())
    if r is None:
        return
    sdf = liver.sdf(r.x, r.y, r.z)
    canvas.paint(r, sdf, hu["liver"] + 4.0 * r.tex)
    canvas.truth[LIVER][r.sl] = sdf < 0
    canvas.liver_occupancy[r.sl] = _occupancy(sdf, canvas.grid.edge_mm)


def _render_gallbladder(canvas: _Canvas, liver: _Liver, hu: dict[str, float]) -> None:
    """Thin enhancing wall and bile, in the fossa on the liver's underside (after the bowel next to it)."""
    if liver.gallbladder is None:
        return
    low, high = liver.gallbladder.bounds(10.0)
    r = canvas.region(liver.to_patient(low) - liver.warp.reach_mm, liver.to_patient(high) + liver.warp.reach_mm)
    if r is None:
        return
    gallbladder = liver.fields(r.x, r.y, r.z)[1]
    canvas.paint(r, gallbladder, hu["bowel_wall"] - 20.0)
    canvas.paint(r, gallbladder + 2.0, hu["bile"] + 2.0 * r.tex)
    canvas.carve_liver(r, gallbladder)


def _render_tree(canvas: _Canvas, tree: _Tubes, value: float) -> None:
    """A vessel tree, drawn inside the liver only except for its tagged (extrahepatic) segments."""
    field = _tube_field(canvas, tree)
    if field is None:
        return
    region, distance, tag = field
    canvas.paint(region, distance, value + 4.0 * region.tex, weight=np.maximum(canvas.liver_occupancy[region.sl], tag))
    canvas.truth[VESSEL][region.sl] |= (distance < 0) & canvas.truth[LIVER][region.sl]


def _render_lesions(canvas: _Canvas, patient: _Patient, phase: str) -> None:
    """Lesions replace parenchyma and vessels; their truth is the lesion inside the liver."""
    for lesion in patient.lesions:
        r = canvas.region(*lesion.bounds())
        if r is None:
            continue
        smallest = min(lesion.truth.semi_axes_mm)
        look = _lesion_look(lesion.truth.kind, phase, lesion.look_draws, smallest, patient.hu["liver"])
        sdf = lesion.sdf(r.x, r.y, r.z)
        canvas.paint(r, sdf, _lesion_hu(look, sdf, r.tex, smallest), edge_mm=max(look.edge_mm, canvas.grid.edge_mm),
                     weight=canvas.liver_occupancy[r.sl])
        inside = (sdf < 0) & canvas.truth[LIVER][r.sl]
        canvas.truth[TUMOR][r.sl] |= inside
        canvas.truth[VESSEL][r.sl] &= ~inside


def _render_patient(canvas: _Canvas, patient: _Patient, phase: str) -> None:
    """Paint every structure, outside in; later structures cover earlier ones."""
    body, organs, hu = patient.body, patient.organs, patient.hu
    _render_trunk(canvas, body, hu)
    _render_ribs(canvas, body, hu)
    _render_back(canvas, body, hu)
    _render_chest(canvas, body, organs.heart, hu)
    _render_spine(canvas, body, hu)
    _render_great_vessels(canvas, body, hu)
    _render_kidneys(canvas, organs.kidneys, hu)
    _render_pancreas_and_veins(canvas, organs, hu)
    _render_liver(canvas, patient.liver, hu)
    _render_spleen(canvas, body, organs.spleen, hu, phase)
    _render_bowel(canvas, organs, hu)
    _render_gallbladder(canvas, patient.liver, hu)
    _render_tree(canvas, patient.portal, hu["portal_vein"])
    _render_tree(canvas, patient.hepatic, hu["hepatic_vein"])
    _render_lesions(canvas, patient, phase)


# ----------------------------------------------------------------------------- the scanner


def _grid_image(config: PhantomConfig) -> Image:
    """An empty float32 image on the configured grid, centred on ``center_lps_mm``."""
    size_ijk = np.array([max(1, round(f / s)) for f, s in zip(config.field_of_view_mm, config.spacing_mm,
                                                                strict=True)])
    direction = config.direction_matrix
    matrix = direction @ np.diag(config.spacing_mm)
    origin = np.asarray(config.center_lps_mm) - matrix @ ((size_ijk - 1) / 2.0)
    return Image(np.zeros(tuple(size_ijk[::-1]), np.float32), config.spacing_mm, tuple(origin), direction)


def _gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...], correlation_voxels: float) -> np.ndarray:
    """Unit-variance Gaussian noise, correlated by a Gaussian kernel of ``correlation_voxels``."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if correlation_voxels <= 0.05:
        return noise
    noise = ndimage.gaussian_filter(noise, correlation_voxels, mode="wrap")
    impulse = np.zeros(33, np.float32)
    impulse[16] = 1.0
    kernel_energy = float(np.sum(ndimage.gaussian_filter1d(impulse, correlation_voxels) ** 2))
    return noise / np.float32(math.sqrt(kernel_energy ** len(shape)))


def _scan(hu: np.ndarray, config: PhantomConfig) -> tuple[np.ndarray, float]:
    """Partial-volume blur, then noise: the clean rendering becomes a CT image."""
    rng = _rng(config.seed, "noise")
    sigma = config.noise_hu if config.noise_hu is not None else float(rng.uniform(10.0, 25.0))
    correlation = (config.noise_correlation_voxels if config.noise_correlation_voxels is not None
                   else float(rng.uniform(0.0, 0.8)))
    if config.blur_voxels > 0:
        hu = ndimage.gaussian_filter(hu, config.blur_voxels, mode="nearest")
    if sigma > 0:
        hu += np.float32(sigma) * _gaussian_noise(rng, hu.shape, correlation)
    return np.clip(hu, -1024.0, 3071.0, out=hu), sigma


def make_phantom(config: PhantomConfig) -> Phantom:
    """Render a synthetic abdominal CT and its exact ground truth.

    Args:
        config: patient seed, grid, contrast phase, lesion and noise settings.

    Returns:
        The :class:`Phantom`: float32 HU image on the requested grid, (3, Z, Y, X) multi-hot truth,
        lesion records, nominal tissue HU and the noise level.
    """
    patient = _draw_patient(config)
    empty = _grid_image(config)
    grid = _Grid.of(empty)
    canvas = _Canvas(grid, _texture_on_grid(_draw_lattice(_rng(config.seed, "texture")), grid))
    _render_patient(canvas, patient, config.phase)
    hu, sigma = _scan(canvas.hu, config)
    logger.debug("phantom seed %d: %d lesions, liver %.0f mL", config.seed, len(patient.lesions),
                 canvas.truth[LIVER].sum() * empty.voxel_volume_ml)
    return Phantom(empty.with_array(hu), canvas.truth, tuple(lesion.truth for lesion in patient.lesions),
                   MappingProxyType(dict(patient.hu)), sigma, config)


# ----------------------------------------------------------------------------- lesions in real CT


def insert_synthetic_tumors(
    ct: Image,
    liver_mask: np.ndarray,
    rng: np.random.Generator,
    n_tumors: tuple[int, int] = (1, 4),
    *,
    kinds: tuple[LesionKind, ...] = LESION_KINDS,
    diameter_mm: tuple[float, float] = (8.0, 60.0),
    phase: Phase | None = None,
) -> tuple[Image, np.ndarray]:
    """Paint synthetic liver lesions into a real CT, inside a given liver mask.

    Lesions are the phantom's (perturbed ellipsoids of the same kinds), placed so that they fit in
    the mask and do not overlap. Their HU is set relative to the median liver HU of this scan; the
    scan's own fine-grained noise is kept inside them (only the smooth content is replaced), and
    their edges are soft, so they look scanned rather than pasted. Used to train the tumor class on
    CTs that only have liver labels.

    Args:
        ct: the CT in HU.
        liver_mask: (Z, Y, X) bool (or 0/1) liver mask on the CT grid.
        rng: random generator; the same state gives the same lesions.
        n_tumors: inclusive range of the number of lesions to try to place.
        kinds: lesion kinds to draw from ("metastasis", "hcc", "cyst").
        diameter_mm: range of lesion diameters (drawn log-uniformly).
        phase: contrast phase of the scan, which sets how lesions differ from the liver; None guesses
            "unenhanced" when the liver is below 75 HU, else "portal_venous".

    Returns:
        The new CT (float32 HU, same grid) and the (Z, Y, X) bool tumor mask, a subset of the liver mask.

    Raises:
        ValueError: when the mask does not match the CT grid, is empty, or an option is out of range.
    """
    liver = np.asarray(liver_mask).astype(bool)
    _check_insert_arguments(ct, liver, n_tumors, kinds, diameter_mm, phase)
    values = ct.array[liver]
    liver_hu = float(np.median(values[(values > -100) & (values < 300)])) if values.size else 0.0
    phase = phase or ("unenhanced" if liver_hu < 75.0 else "portal_venous")
    voxels = np.flatnonzero(liver)
    shape = liver.shape

    def draw_centre() -> np.ndarray:
        k, j, i = np.unravel_index(voxels[rng.integers(len(voxels))], shape)
        return ct.ijk_to_lps(np.array([i, j, k], float) + rng.uniform(-0.5, 0.5, 3))[0]

    def inside(points: np.ndarray) -> np.ndarray:
        ijk = np.rint(ct.lps_to_ijk(points)).astype(int)
        valid = np.all((ijk >= 0) & (ijk < np.array(shape[::-1])), axis=1)
        result = np.zeros(len(points), bool)
        result[valid] = liver[ijk[valid, 2], ijk[valid, 1], ijk[valid, 0]]
        return result

    count = int(rng.integers(n_tumors[0], n_tumors[1] + 1))
    lesions = _place_lesions(rng, count, kinds, diameter_mm, draw_centre, inside)
    out = ct.array.astype(np.float32, copy=True)
    tumor = np.zeros(shape, bool)
    lattice = _draw_lattice(rng)
    for lesion in lesions:
        _insert_lesion(out, tumor, liver, _Grid.of(ct), lesion, lattice, phase, liver_hu)
    return ct.with_array(out), tumor


def _check_insert_arguments(ct: Image, liver: np.ndarray, n_tumors: tuple[int, int], kinds: tuple[str, ...],
                            diameter_mm: tuple[float, float], phase: str | None) -> None:
    if liver.shape != ct.array.shape:
        raise ValueError(f"liver_mask shape {liver.shape} does not match the CT grid {ct.array.shape}")
    if not liver.any():
        raise ValueError("liver_mask is empty: there is no liver to place lesions in")
    _check_range("n_tumors", n_tumors, 0)
    _check_range("diameter_mm", diameter_mm, 1.0)
    if not kinds or any(kind not in LESION_KINDS for kind in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {LESION_KINDS}, got {kinds}")
    if phase is not None and phase not in PHASES:
        raise ValueError(f"phase must be None or one of {PHASES}, got {phase!r}")


def _insert_lesion(out: np.ndarray, tumor: np.ndarray, liver: np.ndarray, grid: _Grid, lesion: _Lesion,
                   lattice: np.ndarray, phase: str, liver_hu: float) -> None:
    """Replace the smooth content of the CT inside one lesion by the lesion's HU, keeping the noise."""
    sl = grid.box(*lesion.bounds())
    if sl is None:
        return
    x, y, z = grid.slice_points(sl)
    sdf = lesion.sdf(x, y, z)
    smallest = min(lesion.truth.semi_axes_mm)
    look = _lesion_look(lesion.truth.kind, phase, lesion.look_draws, smallest, liver_hu)
    target = _lesion_hu(look, sdf, _sample_lattice(lattice, x, y, z), smallest)
    sigma_voxels = [1.5 / s for s in grid.spacing_mm[::-1]]
    pad = [math.ceil(3 * s) for s in sigma_voxels]
    padded = tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(sl, pad, out.shape, strict=True))
    smooth = ndimage.gaussian_filter(out[padded], sigma_voxels, mode="nearest")
    smooth = smooth[tuple(slice(s.start - q.start, s.stop - q.start) for s, q in zip(sl, padded, strict=True))]
    occupancy = _occupancy(sdf, max(look.edge_mm, grid.edge_mm)) * liver[sl]
    out[sl] += occupancy * (target - smooth)
    tumor[sl] |= (sdf < 0) & liver[sl]
