"""The trunk: outline, wall layers, diaphragm domes, spine and ribs, drawn to the patient's size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvt.phantom.shapes import ellipse_sdf, smooth_max


@dataclass(frozen=True)
class Body:
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
        column = ellipse_sdf(x, y, (0.0, self.spine_y + 6.0), (vx + 7.0, vy + 12.0))
        ax, ay, radius = self.aorta
        return np.minimum(column, ellipse_sdf(x, y, (ax, ay), (radius + 8.0, radius + 8.0)))

    def outline_sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance to the skin: an ellipse with a flattened back, narrowing over the lower chest."""
        narrowing = 1.0 - 0.08 * np.clip((z - np.float32(self.dome_right - 90.0)) / 130.0, 0.0, 1.0) ** 2
        ellipse = ellipse_sdf(x, y, (0.0, 0.0), (self.half_width * narrowing, self.half_depth))
        return smooth_max(ellipse, y - np.float32(self.back), 25.0)

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


def draw_body(rng: np.random.Generator, size: float) -> Body:
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
    return Body(
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
