"""Implicit shapes: approximate signed distances in millimetres, negative inside."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def to_local(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: np.ndarray,
           rotation: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates in a shape's frame: q = R^T (p - centre)."""
    dx, dy, dz = x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2])
    if rotation is None:
        return dx, dy, dz
    r = rotation.astype(np.float32)
    return (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
            r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)


def ellipsoid_local_sdf(qx: np.ndarray, qy: np.ndarray, qz: np.ndarray,
                         semi: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Gradient-normalised ellipsoid distance (exact on the surface, good to a few mm around it)."""
    a, b, c = semi
    k0 = np.sqrt((qx / a) ** 2 + (qy / b) ** 2 + (qz / c) ** 2)
    k1 = np.sqrt((qx / (a * a)) ** 2 + (qy / (b * b)) ** 2 + (qz / (c * c)) ** 2)
    tiny = np.float32(1e-4)
    smallest = np.minimum(np.minimum(a, b), c)
    return (k0 - 1) * (k0 + tiny) / (k1 + tiny / smallest)


def superellipsoid_local_sdf(qx: np.ndarray, qy: np.ndarray, qz: np.ndarray, semi: np.ndarray,
                              exponent: float) -> np.ndarray:
    """Distance to |x/a|^n + |y/b|^n + |z/c|^n = 1 (boxier than an ellipsoid for n > 2), gradient-normalised."""
    n = np.float32(exponent)
    parts = [np.abs(q / np.float32(a)) + np.float32(1e-6) for q, a in zip((qx, qy, qz), semi, strict=True)]
    powered = [p ** (n - 1) for p in parts]
    rho = (powered[0] * parts[0] + powered[1] * parts[1] + powered[2] * parts[2]) ** (1 / n)
    gradient = np.sqrt(sum((w / np.float32(a)) ** 2 for w, a in zip(powered, semi, strict=True))) * rho ** (1 - n)
    return (rho - 1) / gradient


def ellipse_sdf(x: np.ndarray, y: np.ndarray, centre: tuple[float, float], semi: tuple[float, float]) -> np.ndarray:
    """2D ellipse distance: an elliptic cylinder along z."""
    dx, dy = x - np.float32(centre[0]), y - np.float32(centre[1])
    return ellipsoid_local_sdf(dx, dy, np.zeros((1, 1, 1), np.float32), (semi[0], semi[1], 1.0))


def capsule_sdf(x: np.ndarray, y: np.ndarray, z: np.ndarray, start: np.ndarray, end: np.ndarray,
                 radius_start: float, radius_end: float) -> np.ndarray:
    """Distance to a segment with a radius interpolated along it (a rounded cone, approximately)."""
    axis = (end - start).astype(np.float32)
    length2 = max(float(axis @ axis), 1e-6)
    px, py, pz = x - np.float32(start[0]), y - np.float32(start[1]), z - np.float32(start[2])
    t = np.clip((px * axis[0] + py * axis[1] + pz * axis[2]) / np.float32(length2), 0.0, 1.0)
    distance = np.sqrt((px - t * axis[0]) ** 2 + (py - t * axis[1]) ** 2 + (pz - t * axis[2]) ** 2)
    return distance - (np.float32(radius_start) + t * np.float32(radius_end - radius_start))


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth union of two distances, blending over ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / np.float32(k), 0.0, 1.0)
    return b + (a - b) * h - np.float32(k) * h * (1.0 - h)


def smooth_max(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth intersection of two distances, blending over ``k`` mm."""
    return -smooth_min(-a, -b, k)


@dataclass(frozen=True, eq=False)
class Ellipsoid:
    """An ellipsoid with semi-axes ``semi`` along the columns of ``rotation`` (axis-aligned when None)."""

    centre: np.ndarray
    semi: np.ndarray
    rotation: np.ndarray | None = None

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return ellipsoid_local_sdf(*to_local(x, y, z, self.centre, self.rotation), self.semi)

    def bounds(self, margin_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        rotation = np.eye(3) if self.rotation is None else self.rotation
        half = np.sqrt(((rotation * self.semi[None, :]) ** 2).sum(axis=1)) + margin_mm
        return self.centre - half, self.centre + half
