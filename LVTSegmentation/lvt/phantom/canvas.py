"""The image being painted: voxel-centre coordinates of the grid, and the HU and truth arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvt.image import Image, corner_points
from lvt.labels import LIVER, NUM_CLASSES
from lvt.phantom.tissues import PHYSICAL_AIR_HU

FAR_MM = 1.0e4  # beyond any body: an unbounded box side, a distance to nothing, "no air-fluid level"


@dataclass(frozen=True, eq=False)
class Grid:
    """Voxel-centre LPS coordinates of an image grid, computed per box so work stays local."""

    shape_zyx: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    matrix: np.ndarray  # direction @ diag(spacing): continuous (i, j, k) -> LPS offset
    inverse: np.ndarray  # LPS offset -> continuous (i, j, k)
    origin: np.ndarray

    @classmethod
    def of(cls, image: Image) -> Grid:
        matrix = image.direction @ np.diag(image.spacing_mm)
        return cls(image.array.shape, image.spacing_mm, matrix, np.linalg.inv(matrix),
                   np.asarray(image.origin_lps_mm, float))

    @property
    def edge_mm(self) -> float:
        """Width over which edges are anti-aliased (one in-plane voxel)."""
        return min(self.spacing_mm)

    def index_boxes(self, low_lps: np.ndarray, high_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) start and stop (i, j, k) of the index boxes covering N axis-aligned LPS boxes."""
        low, high = np.maximum(low_lps, -FAR_MM), np.minimum(high_lps, FAR_MM)
        pick = corner_points((0, 0, 0), (1, 1, 1)).astype(bool)  # (8, 3): True where a corner takes high
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
class Region:
    """A box of the canvas: its slices, LPS coordinates and texture."""

    sl: tuple[slice, slice, slice]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    tex: np.ndarray


class Canvas:
    """The HU image and truth masks being painted, one structure after another."""

    def __init__(self, grid: Grid, texture: np.ndarray) -> None:
        self.grid = grid
        self.texture = texture
        self.hu = np.full(grid.shape_zyx, PHYSICAL_AIR_HU, dtype=np.float32)
        self.truth = np.zeros((NUM_CLASSES, *grid.shape_zyx), dtype=bool)
        self.liver_occupancy = np.zeros(grid.shape_zyx, dtype=np.float32)  # soft liver mask, for partial volume

    def region(self, low_lps: object, high_lps: object) -> Region | None:
        sl = self.grid.box(np.asarray(low_lps, float), np.asarray(high_lps, float))
        if sl is None:
            return None
        x, y, z = self.grid.slice_points(sl)
        return Region(sl, x, y, z, self.texture[sl])

    def paint(self, region: Region, sdf: np.ndarray, value: np.ndarray | float, edge_mm: float | None = None,
              weight: np.ndarray | float = 1.0) -> None:
        """Blend ``value`` in where ``sdf`` < 0, with an anti-aliased edge (partial volume)."""
        occupancy = soft_occupancy(sdf, self.grid.edge_mm if edge_mm is None else edge_mm) * weight
        view = self.hu[region.sl]
        view += occupancy * (value - view)

    def carve_liver(self, region: Region, sdf: np.ndarray) -> None:
        """An organ painted over the liver indents it: remove it from the liver's truth and occupancy."""
        self.truth[LIVER][region.sl] &= sdf >= 0
        self.liver_occupancy[region.sl] *= 1.0 - soft_occupancy(sdf, self.grid.edge_mm)


def soft_occupancy(sdf: np.ndarray, edge_mm: float) -> np.ndarray:
    """Fraction of each voxel inside the shape, ramping over ``edge_mm`` (partial volume at edges)."""
    return np.clip(0.5 - sdf / np.float32(max(edge_mm, 1e-3)), 0.0, 1.0)
