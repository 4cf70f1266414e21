"""Seeded randomness: independent streams, tissue texture, smooth warps and rotations."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lvt.phantom.canvas import Grid

_LATTICE_MM = 6.0  # texture lattice pitch; the pattern repeats every _LATTICE_N * _LATTICE_MM mm
_LATTICE_N = 64
_TEXTURE_STEP_MM = 4.0  # texture is sampled this coarsely on the grid, then interpolated


def random_stream(seed: int, stream: str) -> np.random.Generator:
    """Independent random streams, so that changing one knob (e.g. n_tumors) keeps the rest."""
    streams = ("anatomy", "vessels", "lesions", "appearance", "noise", "texture")
    return np.random.default_rng([int(seed), streams.index(stream)])


def draw_lattice(rng: np.random.Generator) -> np.ndarray:
    """A periodic, smooth, unit-variance random lattice in physical space (value noise)."""
    lattice = rng.standard_normal((_LATTICE_N,) * 3).astype(np.float32)
    lattice = ndimage.gaussian_filter(lattice, 1.0, mode="wrap")
    return lattice / lattice.std()


def sample_lattice(lattice: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The lattice noise at LPS points (linear interpolation, periodic)."""
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


def texture_on_grid(lattice: np.ndarray, grid: Grid) -> np.ndarray:
    """The lattice noise at every voxel: sampled on a coarse sub-grid, then interpolated separably."""
    spacing_zyx = grid.spacing_mm[::-1]
    steps = [max(1, round(_TEXTURE_STEP_MM / s)) for s in spacing_zyx]
    nodes = [math.ceil((n - 1) / step) + 1 for n, step in zip(grid.shape_zyx, steps, strict=True)]
    coarse = sample_lattice(lattice, *grid.points(tuple(
        np.arange(m) * step for m, step in zip(nodes, steps, strict=True))))
    for axis in range(3):
        if steps[axis] == 1:
            continue
        weights = _linear_weights(grid.shape_zyx[axis], steps[axis], nodes[axis])
        coarse = np.moveaxis(np.tensordot(weights, coarse, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(coarse, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class WaveField:
    """A smooth random vector field: a few sine waves per component (displacements, in mm)."""

    vectors: np.ndarray  # (3, K, 3) wave vectors (rad/mm), per output component
    amplitudes: np.ndarray  # (3, K)
    phases: np.ndarray  # (3, K)

    @classmethod
    def draw(cls, rng: np.random.Generator, amplitude_mm: float, wavelength_mm: tuple[float, float],
             waves: int = 3) -> WaveField:
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


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation (3, 3)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def rotation_xyz(degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees)."""
    ax, ay, az = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx
