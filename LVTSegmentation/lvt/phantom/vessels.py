"""The portal and hepatic vein trees, grown to supply and drain points inside the liver."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lvt.phantom.liver import Liver, interior_points
from lvt.phantom.tubes import Tubes, chain, join_tubes


def _split_territory(rng: np.random.Generator, points: np.ndarray, index: np.ndarray) -> list[np.ndarray]:
    """Cut a vascular territory in two across its longest axis (at a random quantile)."""
    centred = points[index] - points[index].mean(axis=0)
    axis = np.linalg.eigh(centred.T @ centred)[1][:, -1] + 0.25 * rng.standard_normal(3)
    projection = centred @ axis
    order = np.argsort(projection)
    cut = round(rng.uniform(0.3, 0.7) * len(order))
    return [part for part in (index[order[:cut]], index[order[cut:]]) if len(part)]


def _grow_tree(rng: np.random.Generator, roots: list[tuple[np.ndarray, np.ndarray, float, float]],
               points: np.ndarray, min_radius_mm: float) -> Tubes:
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
    return Tubes(np.array(starts), np.array(ends), np.stack([r0, r1], axis=1), np.array(tags))


def _groups_along_x(points: np.ndarray, quantiles: tuple[float, ...]) -> list[np.ndarray]:
    edges = np.quantile(points[:, 0], quantiles)
    group = np.searchsorted(edges, points[:, 0])
    return [np.flatnonzero(group == g) for g in range(len(quantiles) + 1)]


def _nearest(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    return points[np.argmin(np.linalg.norm(points - target, axis=1))]


def grow_portal_tree(rng: np.random.Generator, liver: Liver, confluence: np.ndarray,
                      min_radius_mm: float) -> Tubes:
    """The portal vein: an extrahepatic trunk from the confluence to the hilum, then the tree."""
    points = interior_points(rng, liver, 1500, 3.0)
    ivx, ivy, _, _ = liver.body.ivc
    hilum = _nearest(points, liver.to_patient(np.array([ivx - 12.0, ivy - 35.0, liver.body.dome_right - 100.0])))
    radius = rng.uniform(6.0, 7.5)
    bend = 0.5 * (confluence + hilum) + np.array([-6.0, -4.0, 0.0]) + rng.normal(0, 4, 3)
    trunk = chain([confluence, bend, hilum], [radius, radius, 0.95 * radius], 1.0)
    groups = _groups_along_x(points, (rng.uniform(0.55, 0.68),))
    roots = [(hilum, g, 0.95 * radius * (len(g) / len(points)) ** (1 / 3), 0.0) for g in groups]
    return join_tubes(trunk, _grow_tree(rng, roots, points, min_radius_mm))


def grow_hepatic_tree(rng: np.random.Generator, liver: Liver, min_radius_mm: float) -> Tubes:
    """Right, middle and left hepatic veins, converging on the IVC at the top-back of the liver."""
    points = interior_points(rng, liver, 1500, 3.0)
    ivx, ivy, _, ivb = liver.body.ivc
    root = np.array([ivx + 2.0, ivy - 0.3 * ivb, liver.body.dome_right - rng.uniform(18, 28)])
    radius = rng.uniform(7.0, 8.5)
    groups = _groups_along_x(points, (rng.uniform(0.35, 0.5), rng.uniform(0.7, 0.8)))
    roots = [(root, g, radius * (len(g) / len(points)) ** (1 / 3), 1.0) for g in groups]
    tree = _grow_tree(rng, roots, points, min_radius_mm)
    # Only the first stretch of each main vein (into the IVC) is drawn outside the liver.
    first = np.isin(np.arange(len(tree.tags)), np.flatnonzero(tree.tags == 1.0)[:2 * len(groups)])
    return replace(tree, tags=first.astype(float))
