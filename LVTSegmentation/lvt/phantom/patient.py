"""The patient: all random anatomy, drawn from the seed alone (never from the grid)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lvt.phantom.body import Body, draw_body
from lvt.phantom.config import PhantomConfig
from lvt.phantom.fields import random_stream
from lvt.phantom.lesions import Lesion, lesion_look, place_lesions
from lvt.phantom.liver import Liver, draw_liver_shape, fit_liver_volume, interior_points
from lvt.phantom.organs import Organs, draw_kidneys, draw_organs
from lvt.phantom.tissues import draw_tissue_hu
from lvt.phantom.tubes import Tubes, tubes_distance
from lvt.phantom.vessels import grow_hepatic_tree, grow_portal_tree


@dataclass(frozen=True, eq=False)
class Patient:
    """Everything random about one seed, ready to be painted on any grid."""

    body: Body
    organs: Organs
    liver: Liver
    portal: Tubes  # tag 1: drawn outside the liver too (the extrahepatic trunk)
    hepatic: Tubes  # tag 1: drawn outside the liver too (the stretch into the IVC)
    lesions: tuple[Lesion, ...]
    hu: dict[str, float]


def draw_patient(config: PhantomConfig) -> Patient:
    """All random anatomy, from the seed only (never from the grid)."""
    rng = random_stream(config.seed, "anatomy")
    low_ml, high_ml = config.liver_volume_ml
    liver_ml = rng.uniform(low_ml, high_ml)
    body = draw_body(rng, (liver_ml - low_ml) / max(high_ml - low_ml, 1.0))
    kidneys = draw_kidneys(rng, body)
    shape = draw_liver_shape(rng, body, kidneys[0])
    liver = fit_liver_volume(rng, shape, liver_ml)
    organs = draw_organs(rng, body, kidneys, liver.underside_z)
    # Bowel, stomach and spleen indent the liver; grow it by what they take.
    lost = float(np.mean(_in_carving_organ(organs, interior_points(rng, liver, 800, 0.0))))
    liver = fit_liver_volume(rng, liver, liver_ml / (1.0 - min(lost, 0.3)))
    vessel_rng = random_stream(config.seed, "vessels")
    portal = grow_portal_tree(vessel_rng, liver, organs.confluence, config.min_vessel_radius_mm)
    hepatic = grow_hepatic_tree(vessel_rng, liver, config.min_vessel_radius_mm)
    hu = draw_tissue_hu(random_stream(config.seed, "appearance"), config.phase)
    lesions = _draw_phantom_lesions(config, liver, organs, hu["liver"])
    return Patient(body, organs, liver, portal, hepatic, lesions, hu)


def _in_carving_organ(organs: Organs, points: np.ndarray) -> np.ndarray:
    """Which (P, 3) points lie in an organ painted over the liver (stomach, bowel, spleen)."""
    distance = organs.spleen.sdf(*(points[:, a].astype(np.float32) for a in range(3))).ravel()
    for tubes in (organs.stomach, organs.colon, organs.small_bowel):
        distance = np.minimum(distance, tubes_distance(tubes, points))
    return distance < 0


def _draw_phantom_lesions(config: PhantomConfig, liver: Liver, organs: Organs, liver_hu: float
                          ) -> tuple[Lesion, ...]:
    rng = random_stream(config.seed, "lesions")
    count = int(rng.integers(config.n_tumors[0], config.n_tumors[1] + 1))
    if count == 0:
        return ()
    candidates = interior_points(rng, liver, 400, 4.0)
    lesions = place_lesions(
        rng, count, config.tumor_kinds, config.tumor_diameter_mm,
        lambda: candidates[rng.integers(len(candidates))],
        lambda p: (liver.sdf(*(p[:, a].astype(np.float32) for a in range(3))).ravel() < -1.0)
        & ~_in_carving_organ(organs, p))
    return tuple(_with_core_hu(lesion, config.phase, liver_hu) for lesion in lesions)


def _with_core_hu(lesion: Lesion, phase: str, liver_hu: float) -> Lesion:
    look = lesion_look(lesion.truth.kind, phase, lesion.look_draws, min(lesion.truth.semi_axes_mm), liver_hu)
    return replace(lesion, truth=replace(lesion.truth, core_hu=look.core))
