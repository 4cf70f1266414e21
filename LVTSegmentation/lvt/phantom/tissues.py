"""Nominal HU of every tissue by contrast phase (the table in METHOD.md, "Making phantoms look like CT")."""

from __future__ import annotations

import numpy as np

from lvt.phantom.config import PHASES

# (low, high) HU per phase, in PHASES order. One quantile per tissue and patient is drawn, so a seed
# keeps its relative enhancement across phases.
_ENHANCING_HU: dict[str, tuple[tuple[float, float], ...]] = {
    "liver": ((100, 130), (80, 100), (85, 105), (55, 65)),
    "portal_vein": ((150, 200), (120, 170), (110, 140), (35, 50)),
    "hepatic_vein": ((130, 180), (50, 90), (110, 140), (35, 50)),
    "aorta": ((150, 180), (250, 350), (120, 150), (35, 50)),
    "ivc": ((120, 160), (70, 110), (110, 140), (35, 50)),
    "heart_blood": ((140, 180), (250, 330), (110, 140), (35, 50)),
    "myocardium": ((95, 120), (110, 140), (85, 105), (40, 55)),
    "spleen": ((110, 130), (120, 160), (95, 115), (40, 50)),
    "kidney_cortex": ((150, 200), (180, 250), (130, 170), (30, 40)),
    "kidney_medulla": ((140, 190), (70, 110), (150, 200), (25, 35)),
    "pancreas": ((90, 115), (110, 150), (75, 95), (35, 45)),
    "bowel_wall": ((90, 125), (100, 140), (80, 100), (35, 45)),
    "muscle": ((45, 60), (45, 60), (45, 60), (40, 55)),
}
_FIXED_HU: dict[str, tuple[float, float]] = {
    "fat": (-115, -85),
    "lung": (-870, -760),
    "bone_cortical": (700, 1200),
    "bone_trabecular": (180, 280),
    "disc": (70, 100),
    "csf": (10, 30),
    "bile": (0, 15),
    "fluid": (5, 25),
    "stool": (-90, 10),
    "oral_contrast": (180, 350),
    "table": (150, 300),
}
# Air inside the body and around it as the phantom paints it (physical air, about -1000 HU); the
# scanner's padding and clip value is lvt.image.AIR_HU.
PHYSICAL_AIR_HU = -1000.0


def hu_in_phase(ranges: tuple[tuple[float, float], ...], phase: str, draw: float) -> float:
    """The HU at quantile ``draw`` of the phase's (low, high) range."""
    low, high = ranges[PHASES.index(phase)]
    return low + draw * (high - low)


def draw_tissue_hu(rng: np.random.Generator, phase: str) -> dict[str, float]:
    """Nominal HU per tissue; enhancing tissues share part of one draw (the patient's contrast timing)."""
    timing = rng.random()
    values = {name: hu_in_phase(ranges, phase, 0.6 * timing + 0.4 * rng.random())
              for name, ranges in _ENHANCING_HU.items()}
    values.update({name: low + rng.random() * (high - low) for name, (low, high) in _FIXED_HU.items()})
    return values
