"""What a phantom is made from and what it returns: the configuration, the lesion record, the phantom."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from lvt.image import Image
from lvt.labels import exclusive_labels

Phase = Literal["portal_venous", "arterial", "late", "unenhanced"]
LesionKind = Literal["metastasis", "hcc", "cyst"]
PHASES: tuple[str, ...] = get_args(Phase)
LESION_KINDS: tuple[str, ...] = get_args(LesionKind)


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
        check_range("n_tumors", self.n_tumors, 0)
        check_range("tumor_diameter_mm", self.tumor_diameter_mm, 1.0)
        check_range("liver_volume_ml", self.liver_volume_ml, 500.0, 4000.0)
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


def check_range(name: str, value: tuple, low: float, high: float = math.inf) -> None:
    """Reject a (min, max) option that is not ordered or leaves [low, high]."""
    if len(value) != 2 or not (low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {value!r}")
