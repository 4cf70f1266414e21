"""The abdominal organs around the liver: kidneys, spleen, heart, stomach, bowel, pancreas, veins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lvt.phantom.body import Body
from lvt.phantom.canvas import FAR_MM
from lvt.phantom.fields import rotation_xyz
from lvt.phantom.shapes import Ellipsoid
from lvt.phantom.tubes import Tubes, chain, join_tubes


@dataclass(frozen=True, eq=False)
class Organs:
    """Everything around the liver that a network must learn to tell apart from it."""

    kidneys: tuple[Ellipsoid, Ellipsoid]  # right, left
    spleen: Ellipsoid
    heart: Ellipsoid
    stomach: Tubes  # tag: y of the air-fluid level (air is anterior, at smaller y)
    pancreas: Tubes
    veins: Tubes  # tag: 0 portal system, 1 systemic vein, 2 artery
    colon: Tubes  # tag: air-fluid level y
    small_bowel: Tubes  # tag: air-fluid level y
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


def draw_kidneys(rng: np.random.Generator, body: Body) -> tuple[Ellipsoid, Ellipsoid]:
    """Right and left kidney beside the spine, tilted as in life."""
    kidneys = []
    for sign, drop in ((-1.0, 150.0), (1.0, 135.0)):
        centre = np.array([sign * (body.vertebra[0] + rng.uniform(44.0, 52.0)), body.spine_y + rng.uniform(4, 14),
                           body.dome_right - drop + rng.uniform(-10, 10)])
        semi = np.array([rng.uniform(24, 29), rng.uniform(20, 24), rng.uniform(46, 58)])
        rotation = rotation_xyz((-rng.uniform(5, 15), -sign * rng.uniform(8, 18), sign * rng.uniform(20, 35)))
        kidneys.append(Ellipsoid(centre, semi, rotation))
    return kidneys[0], kidneys[1]


def _draw_stomach(rng: np.random.Generator, body: Body) -> Tubes:
    cx, cy, _ = body.cavity
    top, size = body.dome_left, rng.uniform(0.7, 1.15)
    control = _jitter(rng, [(0.45 * cx, body.spine_y - 20, top - 38), (0.45 * cx, body.spine_y - 50, top - 70),
                            (0.28 * cx, -0.5 * cy, top - 100), (0.04 * cx, -0.6 * cy, top - 108),
                            (-0.14 * cx, -0.45 * cy, top - 100)], 8.0)
    radii = np.array([34.0, 30.0, 25.0, 18.0, 9.0]) * size
    points, radii = _spline(control, radii, 4)
    level = (points[:, 1] - radii).min() + rng.uniform(4.0, 40.0)
    return chain(points, radii, level)


def _draw_colon(rng: np.random.Generator, body: Body, underside: Callable[[float, float], float]) -> Tubes:
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
    return chain(points, radii, levels)


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


def _draw_small_bowel(rng: np.random.Generator, body: Body, colon: Tubes, pancreas_z: float) -> Tubes:
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
    levels = np.where(has_air[:-1], walk[:-1, 1] - walk_radii[:-1] * rng.uniform(0.1, 0.7, len(walk) - 1), -FAR_MM)
    return join_tubes(chain(d_points, d_radii, -FAR_MM), chain(walk, walk_radii, levels))


def _draw_pancreas_and_veins(rng: np.random.Generator, body: Body, kidneys: tuple[Ellipsoid, Ellipsoid]
                             ) -> tuple[Tubes, Tubes, np.ndarray]:
    """The pancreas, the veins behind it that form the portal vein, the renal veins and the SMA."""
    cx, _, _ = body.cavity
    z = body.dome_right - 125.0 + rng.uniform(-8, 8)
    sy = body.spine_y
    control = _jitter(rng, [(-0.24 * cx, sy - 42, z - 14), (-0.03 * cx, sy - 50, z), (0.25 * cx, sy - 38, z + 6),
                            (0.52 * cx, sy - 8, z + 14)], 5.0)
    size = rng.uniform(0.8, 1.15)
    points, radii = _spline(control, np.array([15.0, 10.0, 11.0, 9.0]) * size, 4)
    pancreas = chain(points, radii)
    confluence = control[1] + np.array([-4.0, 13.0, 0.0])
    splenic = chain([control[3] + [12.0, 14.0, 2.0], control[2] + [0.0, 13.0, 0.0], confluence], [4.5, 5.0, 5.5], 0)
    smv = chain([confluence + np.array([2.0, -4.0, -150.0]), confluence + np.array([0.0, -6.0, -40.0]), confluence],
                 [5.0, 5.5, 6.0], 0)
    ax, ay, ar = body.aorta
    ivx, ivy, _, _ = body.ivc
    sma = chain([(ax - 3, ay - ar + 2, z - 6), (ax - 6, ay - ar - 22, z - 30), (ax - 12, ay - ar - 32, -150.0)],
                 [3.5, 3.5, 3.0], 2)
    right, left = kidneys
    renal_left = chain([left.centre + np.array([-28.0, -4.0, 4.0]), (ax, ay - ar - 6.0, left.centre[2] + 8),
                         (ivx + 4, ivy, left.centre[2] + 10)], [4.5, 4.0, 5.0], 1)
    renal_right = chain([right.centre + np.array([24.0, -4.0, 4.0]), (ivx, ivy, right.centre[2] + 12)], [4.5, 5.0], 1)
    celiac = chain([(ax - 2, ay - ar + 2, z + 16), (ax - 4, ay - ar - 16, z + 18), (-0.2 * cx, sy - 62, z + 24)],
                    [3.5, 3.0, 2.5], 2)
    splenic_artery = chain([(ax - 4, ay - ar - 16, z + 18), control[2] + [0.0, 4.0, 14.0],
                             control[3] + [10.0, 8.0, 16.0]], [3.0, 2.5, 2.5], 2)
    veins = join_tubes(splenic, smv, sma, renal_left, renal_right, celiac, splenic_artery)
    return pancreas, veins, confluence


def draw_organs(rng: np.random.Generator, body: Body, kidneys: tuple[Ellipsoid, Ellipsoid],
                 underside: Callable[[float, float], float]) -> Organs:
    """The organs around the liver; ``underside`` gives the z of the liver's lower surface at (x, y)."""
    cx, _, cp = body.cavity
    spleen = Ellipsoid(
        np.array([0.6 * cx, 0.45 * cp, body.dome_left - rng.uniform(50, 65)]),
        np.array([rng.uniform(18, 26), rng.uniform(45, 62), rng.uniform(40, 55)]),
        rotation_xyz((rng.uniform(-10, 10), rng.uniform(-15, 5), -rng.uniform(30, 50))))
    heart = Ellipsoid(np.array([18.0, body.spine_y - 95.0, body.dome_left + 45.0]),
                       np.array([62.0, 48.0, 55.0]) * rng.uniform(0.9, 1.1),
                       rotation_xyz((0.0, 10.0, rng.uniform(20, 35))))
    stomach = _draw_stomach(rng, body)
    pancreas, veins, confluence = _draw_pancreas_and_veins(rng, body, kidneys)
    colon = _draw_colon(rng, body, underside)
    small_bowel = _draw_small_bowel(rng, body, colon, float(pancreas.starts[:, 2].mean()))
    return Organs(kidneys, spleen, heart, stomach, pancreas, veins, colon, small_bowel, confluence,
                   bool(rng.random() < 0.25))
