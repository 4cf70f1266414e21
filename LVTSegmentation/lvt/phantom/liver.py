"""The liver: a warped union of lobes clipped by its neighbours, scaled to a drawn volume."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lvt.phantom.body import Body
from lvt.phantom.canvas import FAR_MM
from lvt.phantom.fields import WaveField, rotation_xyz
from lvt.phantom.shapes import (
    Ellipsoid,
    ellipse_sdf,
    ellipsoid_local_sdf,
    smooth_max,
    smooth_min,
    superellipsoid_local_sdf,
    to_local,
)


@dataclass(frozen=True, eq=False)
class Liver:
    """A deformed union of lobes, clipped by the diaphragm and the body wall, scaled to a volume.

    The lobes, the inferior surface and the gallbladder live in a "unit" frame: a point p of the
    patient maps to ``anchor + (p + warp(p) - anchor) / scale`` there, and distances scale back by
    ``scale``. The clips (diaphragm, wall, IVC, right kidney) act in patient space.
    """

    right: Ellipsoid
    right_exponent: float  # superellipsoid exponent of the right lobe (> 2: fills the right upper quadrant)
    left: Ellipsoid
    left_taper: float  # the left lobe thins by this fraction toward the patient's left
    caudate: Ellipsoid
    gallbladder: Ellipsoid | None
    inferior: tuple[float, float, float, float]  # z0, dz/dx, dz/dy, x0: the underside z = z0 + ...
    warp: WaveField
    anchor: np.ndarray
    scale: float
    body: Body
    kidney: Ellipsoid

    def warped(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(c + s for c, s in zip((x, y, z), self.warp(x, y, z), strict=True))

    def unit(self, warped: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        inverse = np.float32(1.0 / self.scale)
        return tuple(np.float32(a) + (c - np.float32(a)) * inverse for c, a in zip(warped, self.anchor, strict=True))

    def _lobes(self, u: tuple[np.ndarray, ...]) -> np.ndarray:
        qx, qy, qz = to_local(*u, self.left.centre, self.left.rotation)
        a, b, c = self.left.semi
        thinning = 1.0 - np.float32(self.left_taper) * (np.clip(qx / np.float32(a), -1.0, 1.0) + 1.0) / 2.0
        left = ellipsoid_local_sdf(qx, qy, qz, (a, b * thinning, c * thinning))
        right = superellipsoid_local_sdf(*to_local(*u, self.right.centre, self.right.rotation), self.right.semi,
                                          self.right_exponent)
        lobes = smooth_min(right, left, 20.0)
        lobes = smooth_min(lobes, self.caudate.sdf(*u), 10.0)
        z0, slope_x, slope_y, x0 = self.inferior
        underside = np.float32(z0) + np.float32(slope_x) * (u[0] - np.float32(x0)) + np.float32(slope_y) * u[1]
        return smooth_max(lobes, underside - u[2], 12.0)

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
        gallbladder = np.full((1, 1, 1), FAR_MM, np.float32)
        if self.gallbladder is not None:
            gallbladder = self.gallbladder.sdf(*unit) * np.float32(self.scale)
        # Behind the aorta and left of the IVC lie the crus, adrenal and stomach, not liver.
        ivx, ivy, iva, ivb = self.body.ivc
        _, ay, radius = self.body.aorta
        beside = smooth_min(warped[0] - np.float32(ivx + iva), warped[1] - np.float32(ay - radius - 6.0), 10.0)
        distance = smooth_max(distance, beside, 8.0)
        distance = np.maximum(distance, z - (self.body.diaphragm_z(x, y) - 5.0))
        distance = np.maximum(distance, self.body.outline_sdf(x, y, z) + np.float32(self.body.wall + 1.0))
        distance = np.maximum(distance, -ellipse_sdf(x, y, (ivx, ivy), (iva, ivb)))
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
        low = np.maximum(low, [-cx, -cy, -FAR_MM])
        high = np.minimum(high, [cx, cp, max(self.body.dome_right, self.body.dome_left)])
        return low, high

    def volume_ml(self, samples: np.ndarray, box_ml: float) -> float:
        inside = self.sdf(*(samples[:, axis].astype(np.float32) for axis in range(3))) < 0
        return float(inside.mean() * box_ml)


def draw_liver_shape(rng: np.random.Generator, body: Body, kidney: Ellipsoid) -> Liver:
    """Lobes, underside, gallbladder and warp of a liver under the right dome, at unit scale."""
    cx, cy, cp = body.cavity
    top = body.dome_right
    ivx, ivy, _, _ = body.ivc
    depth = 0.5 * (cy + cp)
    right = Ellipsoid(np.array([-0.5 * cx, 0.5 * (cp - cy) + rng.uniform(-8, 8), top - rng.uniform(68, 80)]),
                       np.array([0.66 * cx, 0.95 * depth, rng.uniform(88, 100)]) * rng.uniform(0.92, 1.08, 3),
                       rotation_xyz((rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-10, 10))))
    left = Ellipsoid(np.array([rng.uniform(0.05, 0.2) * cx, -0.4 * cy, top - rng.uniform(40, 55)]),
                      np.array([rng.uniform(0.5, 0.65) * cx, rng.uniform(0.45, 0.6) * cy, rng.uniform(40, 52)]),
                      rotation_xyz((rng.uniform(-10, 10), rng.uniform(-12, 6), rng.uniform(-12, 8))))
    caudate = Ellipsoid(np.array([ivx + 14.0, ivy - 20.0, top - 62.0]), np.array([16.0, 14.0, 28.0]))
    inferior = (top - rng.uniform(140, 155), rng.uniform(0.25, 0.5), rng.uniform(-0.15, 0.15), -0.5 * cx)
    gallbladder = None
    if rng.random() < 0.85:  # the rest had a cholecystectomy
        x, y = -0.3 * cx + rng.uniform(-8, 8), -0.5 * cy
        z = inferior[0] + inferior[1] * (x - inferior[3]) + inferior[2] * y + rng.uniform(0, 15)
        gallbladder = Ellipsoid(np.array([x, y, z]), np.array([rng.uniform(11, 17), rng.uniform(11, 17),
                                 rng.uniform(28, 42)]), rotation_xyz((rng.uniform(-45, -20), rng.uniform(-25, 0), 0)))
    warp = WaveField.draw(rng, rng.uniform(6.0, 12.0), (70.0, 180.0))
    anchor = np.array([-0.5 * cx, 0.3 * cp, top - 5.0])
    return Liver(right, rng.uniform(2.3, 3.0), left, rng.uniform(0.25, 0.6), caudate, gallbladder, inferior, warp,
                  anchor, 1.0, body, kidney)


def fit_liver_volume(rng: np.random.Generator, liver: Liver, target_ml: float) -> Liver:
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


def interior_points(rng: np.random.Generator, liver: Liver, count: int, margin_mm: float) -> np.ndarray:
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
