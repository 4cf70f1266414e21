"""Liver lesions: perturbed ellipsoids, their placement and their look by kind and phase.

Shared by the phantom and by the synthetic tumors painted into real CT for training.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lvt.phantom.config import LesionTruth
from lvt.phantom.fields import random_rotation
from lvt.phantom.shapes import to_local
from lvt.phantom.tissues import hu_in_phase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LesionLook:
    """How a lesion appears (HU): core, an optional rim, an optional necrotic centre, texture, edge."""

    core: float
    rim: float
    rim_mm: float
    necrosis: float
    necrosis_depth: float  # fraction of the smallest semi-axis below which the centre is necrotic
    texture: float
    edge_mm: float


@dataclass(frozen=True, eq=False)
class Lesion:
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
        qx, qy, qz = to_local(x, y, z, np.asarray(t.centre_lps_mm), t.rotation)
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


def _draw_lesion(rng: np.random.Generator, centre: np.ndarray, diameter_mm: float, kind: str) -> Lesion:
    semi = 0.5 * diameter_mm * np.array([1.0, *rng.uniform(_ELONGATION[kind], 1.0, 2)])
    waves = rng.standard_normal((5, 3))
    waves *= rng.uniform(1.5, 4.0, (5, 1)) / np.linalg.norm(waves, axis=1, keepdims=True)
    weights = rng.dirichlet(np.ones(5))
    amplitudes = rng.uniform(*_IRREGULARITY[kind]) * weights
    draws = rng.random(6)
    truth = LesionTruth(tuple(float(c) for c in centre), tuple(float(s) for s in semi),  # type: ignore[arg-type]
                        random_rotation(rng), kind, float("nan"))  # type: ignore[arg-type]
    return Lesion(truth, waves, amplitudes, rng.uniform(0, 2 * math.pi, 5), draws)


def _surface_probes(lesion: Lesion) -> np.ndarray:
    """(27, 3) LPS points: the centre and 26 points on the lesion's outer envelope."""
    directions = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], float)
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    directions = directions / np.where(norms > 0, norms, 1.0)
    envelope = directions * np.asarray(lesion.truth.semi_axes_mm) * (1.0 + float(np.abs(lesion.amplitudes).sum()))
    return np.asarray(lesion.truth.centre_lps_mm) + envelope @ lesion.truth.rotation.T


def _fits(lesion: Lesion, placed: list[Lesion], inside: Callable[[np.ndarray], np.ndarray],
          min_inside: float = 1.0) -> bool:
    """No overlap with placed lesions; the centre and at least ``min_inside`` of the envelope probes inside."""
    centre = np.asarray(lesion.truth.centre_lps_mm)
    for other in placed:
        if np.linalg.norm(centre - np.asarray(other.truth.centre_lps_mm)) < lesion.reach_mm + other.reach_mm + 3.0:
            return False
    probes = inside(_surface_probes(lesion))
    return bool(probes[13] and probes.mean() >= min_inside)  # probe 13 is the centre


def place_lesions(rng: np.random.Generator, count: int, kinds: tuple[str, ...], diameter_mm: tuple[float, float],
                   draw_centre: Callable[[], np.ndarray], inside: Callable[[np.ndarray], np.ndarray],
                   min_inside: float = 1.0) -> list[Lesion]:
    """Draw up to ``count`` non-overlapping lesions that fit inside the liver; shrink ones that do not fit.

    ``min_inside`` < 1 lets a lesion reach past the liver's border (the caller clips it to the liver),
    so that subcapsular and dome lesions, and very large ones, are drawn too.
    """
    dominant = kinds[rng.integers(len(kinds))]
    placed: list[Lesion] = []
    for _ in range(count):
        kind = dominant if rng.random() < 0.7 else kinds[rng.integers(len(kinds))]
        diameter = math.exp(rng.uniform(math.log(diameter_mm[0]), math.log(diameter_mm[1])))
        for attempt in range(60):
            if attempt and attempt % 15 == 0:
                diameter = max(diameter_mm[0], 0.7 * diameter)
            lesion = _draw_lesion(rng, draw_centre(), diameter, kind)
            if _fits(lesion, placed, inside, min_inside):
                placed.append(lesion)
                break
        else:
            logger.debug("no room for a %.0f mm %s; placed %d lesions", diameter, kind, len(placed))
    return placed


def lesion_look(kind: str, phase: str, draws: np.ndarray, smallest_semi_mm: float, liver_hu: float) -> LesionLook:
    """HU of a lesion relative to the liver around it, by kind and phase (METHOD.md's table)."""
    u = draws
    if kind == "cyst":
        core = 20.0 * u[0]
        return LesionLook(core, core, 1.0, core, 1.0, 2.0, 0.3)
    enhanced = phase != "unenhanced"
    if kind == "metastasis":
        core = liver_hu - hu_in_phase(((30, 60), (25, 50), (30, 55), (10, 25)), phase, u[0])
        rim = liver_hu + hu_in_phase(((-5, 20), (10, 30), (-5, 10), (0, 0)), phase, u[2])
        has_rim = enhanced and u[1] < 0.6
        necrotic = smallest_semi_mm > 10 and u[4] < 0.5
        return LesionLook(core, rim if has_rim else core, 1.5 + 2.5 * u[3], max(core - 15 - 20 * u[5], 5.0),
                     0.45 if necrotic else 2.0, 7.0, 1.5)
    core = liver_hu + hu_in_phase(((-20, -5), (25, 60), (-30, -15), (-15, -5)), phase, u[0])
    has_capsule = phase in ("portal_venous", "late") and u[1] < 0.6
    necrotic = smallest_semi_mm > 15 and u[4] < 0.3
    return LesionLook(core, liver_hu + 5 + 15 * u[2] if has_capsule else core, 1.0 + u[3],
                 core - 20 - 20 * u[5], 0.5 if necrotic else 2.0, 12.0, 1.2)


def lesion_hu(look: LesionLook, sdf: np.ndarray, texture: np.ndarray, smallest_semi_mm: float) -> np.ndarray:
    """HU inside a lesion from its signed distance: rim near the surface, necrosis deep inside."""
    rim = np.clip(1.0 + sdf / np.float32(look.rim_mm), 0.0, 1.0)
    depth = np.float32(look.necrosis_depth * smallest_semi_mm)
    necrosis = np.clip((-sdf - depth) / np.float32(0.25 * smallest_semi_mm + 1.0), 0.0, 1.0)
    return (np.float32(look.core) + np.float32(look.rim - look.core) * rim
            + np.float32(look.necrosis - look.core) * necrosis + np.float32(look.texture) * texture)
