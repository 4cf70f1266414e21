"""The core's image type: a voxel array on a grid described in LPS patient coordinates (ITK's convention).

Axis conventions, fixed for the whole core:
- ``array`` is indexed ``[k, j, i]`` (slice, row, column), as SimpleITK's ``GetArrayFromImage`` returns.
- ``spacing_mm``, ``origin_lps_mm`` and the columns of ``direction`` follow index order ``(i, j, k)``.
- Column ``c`` of ``direction`` is the unit LPS vector of index axis ``c``.

Slicer speaks RAS: :func:`ijk_to_ras_matrix` is the one place where LPS becomes RAS.
Voxel ``n`` covers the continuous indices ``[n - 0.5, n + 0.5]``: a grid's physical extent runs from
-0.5 to ``size - 0.5`` along each index axis (:meth:`Image.extent_corners_lps`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# CT values of air: what fills space outside a scan (the scanners' padding value), and the level
# below which a voxel counts as air rather than body (patient and table lie above it).
AIR_HU = -1024.0
# Patient sides along L, P, S: (toward the negative end, toward the positive end) of each LPS axis.
PATIENT_SIDES_LPS = (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))
AIR_THRESHOLD_HU = -500.0


def corner_points(low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """(2**n, n) corners of the box from ``low`` to ``high``, the first coordinate varying slowest."""
    return np.array(list(itertools.product(*zip(low, high, strict=True))), dtype=float)


@dataclass(frozen=True, eq=False)
class Image:
    """A 3D array plus its patient-space grid (LPS, millimetres)."""

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Image needs a 3D array, got shape {self.array.shape}")
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing_mm}")
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "origin_lps_mm", tuple(float(o) for o in self.origin_lps_mm))

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Grid size in index order (i, j, k)."""
        k, j, i = self.array.shape
        return (i, j, k)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    def with_array(self, array: np.ndarray) -> Image:
        """The same grid holding other voxels (shape must match)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match grid shape {self.array.shape}")
        return Image(array, self.spacing_mm, self.origin_lps_mm, self.direction)

    def same_grid(self, other: Image, tolerance_mm: float = 1e-3) -> bool:
        """True when both images share size, spacing, origin and direction (within a tolerance)."""
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing_mm, other.spacing_mm, atol=tolerance_mm)
            and np.allclose(self.origin_lps_mm, other.origin_lps_mm, atol=tolerance_mm)
            and np.allclose(self.direction, other.direction, atol=1e-5)
        )

    def ijk_to_lps_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping continuous (i, j, k) indices to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction @ np.diag(self.spacing_mm)
        matrix[:3, 3] = self.origin_lps_mm
        return matrix

    def ijk_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Map (N, 3) continuous indices in (i, j, k) order to (N, 3) LPS points in mm."""
        points = np.atleast_2d(np.asarray(ijk, dtype=float))
        return points @ (self.direction @ np.diag(self.spacing_mm)).T + np.asarray(self.origin_lps_mm)

    def lps_to_ijk(self, lps: np.ndarray) -> np.ndarray:
        """Map (N, 3) LPS points in mm to (N, 3) continuous indices in (i, j, k) order."""
        points = np.atleast_2d(np.asarray(lps, dtype=float)) - np.asarray(self.origin_lps_mm)
        return points @ np.linalg.inv(self.direction @ np.diag(self.spacing_mm)).T

    def physical_corners_lps(self) -> np.ndarray:
        """(8, 3) LPS positions of the centres of the eight corner voxels."""
        return self.ijk_to_lps(corner_points((0, 0, 0), [n - 1 for n in self.size_ijk]))

    def extent_corners_lps(self) -> np.ndarray:
        """(8, 3) LPS corners of the region the voxels cover (continuous indices -0.5 and size - 0.5)."""
        return self.ijk_to_lps(corner_points((-0.5, -0.5, -0.5), [n - 0.5 for n in self.size_ijk]))

    def axial_axis(self) -> int:
        """Index axis (0=i, 1=j, 2=k) most parallel to the patient's superior-inferior axis."""
        return int(np.argmax(np.abs(self.direction[2, :])))


def ijk_to_ras_matrix(image: Image) -> np.ndarray:
    """4x4 IJK-to-RAS matrix, as Slicer's ``vtkMRMLVolumeNode.SetIJKToRASMatrix`` expects."""
    return LPS_TO_RAS @ image.ijk_to_lps_matrix()


def lps_to_ras(points_lps: np.ndarray) -> np.ndarray:
    """Map (N, 3) LPS points to RAS (negate the first two coordinates)."""
    points = np.atleast_2d(np.asarray(points_lps, dtype=float))
    return points * np.array([-1.0, -1.0, 1.0])
