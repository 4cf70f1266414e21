"""Painting the patient on the canvas, outside in: later structures cover earlier ones."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lvt.labels import LIVER, TUMOR, VESSEL
from lvt.phantom.body import Body
from lvt.phantom.canvas import FAR_MM, Canvas, Region, soft_occupancy
from lvt.phantom.lesions import lesion_hu, lesion_look
from lvt.phantom.liver import Liver
from lvt.phantom.organs import Organs
from lvt.phantom.patient import Patient
from lvt.phantom.shapes import Ellipsoid, capsule_sdf, ellipse_sdf, smooth_max
from lvt.phantom.tissues import PHYSICAL_AIR_HU
from lvt.phantom.tubes import Tubes, tube_field


def _render_trunk(canvas: Canvas, body: Body, hu: dict[str, float]) -> None:
    """Table, skin, subcutaneous fat, the muscle wall and the fat of the abdominal cavity."""
    table = canvas.region((-FAR_MM, body.back + 2.0, -FAR_MM), (FAR_MM, body.back + 40.0, FAR_MM))
    if table is not None:
        top = np.float32(body.back + 14.0) + table.x * table.x / np.float32(1600.0)
        for offset, half in ((2.0, 1.5), (16.0, 1.0)):
            canvas.paint(table, np.abs(table.y - top - np.float32(offset)) - np.float32(half), hu["table"])
    r = canvas.region((-body.half_width - 2, -body.half_depth - 2, -FAR_MM),
                      (body.half_width + 2, body.back + 2, FAR_MM))
    if r is None:
        return
    skin = body.outline_sdf(r.x, r.y, r.z)
    canvas.paint(r, skin, hu["fat"] + 6.0 * r.tex)
    canvas.paint(r, np.maximum(skin, -skin - 2.0), hu["muscle"] - 10.0)
    wall = np.maximum(skin + np.float32(body.fat), -skin - np.float32(body.wall))
    canvas.paint(r, wall, hu["muscle"] + 4.0 * r.tex)
    lateral = np.clip((np.abs(r.x) - np.float32(0.45 * body.half_width)) / 20.0, 0.0, 1.0)
    seam = np.abs(skin + np.float32(body.fat + 0.5 * body.muscle)) - 0.8
    canvas.paint(r, seam, hu["fat"], weight=lateral)
    cavity = skin + np.float32(body.wall)
    strands = np.maximum(np.abs(r.tex - 0.9) * 20.0 - 1.0, cavity)
    canvas.paint(r, strands, hu["fat"] + 90.0, weight=0.7)


def _render_ribs(canvas: Canvas, body: Body, hu: dict[str, float]) -> None:
    """Ribs in the wall: sloping bands of bone down to the costal margin (lower laterally and behind)."""
    low = body.dome_right - 160.0
    r = canvas.region((-body.half_width, -body.half_depth, low), (body.half_width, body.back, FAR_MM))
    if r is None:
        return
    radial = -body.outline_sdf(r.x, r.y, r.z) - np.float32(body.fat + 0.5 * body.muscle)
    half_pitch = np.float32(body.rib_pitch / 2)
    along = r.z - np.float32(body.rib_offset) + np.float32(body.rib_slope) * r.y
    vertical = np.mod(along + half_pitch, np.float32(body.rib_pitch)) - half_pitch
    thickness, height = min(3.5, 0.3 * body.muscle), 5.0  # half-axes of the oval cross-section
    oval = (np.sqrt((radial / np.float32(thickness)) ** 2 + (vertical / np.float32(height)) ** 2) - 1) * thickness
    anterior = np.clip(-r.y / np.float32(body.half_depth), 0.0, 1.0)
    margin = np.float32(body.dome_right - 150.0) + 110.0 * anterior ** 2 - r.z
    sdf = np.maximum(oval, margin)
    cortex = np.clip(1.0 + sdf / 1.2, 0.0, 1.0)
    canvas.paint(r, sdf, hu["bone_trabecular"] + (hu["bone_cortical"] - hu["bone_trabecular"]) * cortex)


def _render_back(canvas: Canvas, body: Body, hu: dict[str, float]) -> None:
    """Paraspinal muscles behind the spine and the psoas muscles beside it (growing downward)."""
    vx = body.vertebra[0]
    r = canvas.region((-90.0, body.spine_y - 40, -FAR_MM), (90.0, body.back, FAR_MM))
    if r is None:
        return
    marbling = np.clip((r.tex - 0.8) * 2.0, 0.0, 0.6)
    value = hu["muscle"] + (hu["fat"] - hu["muscle"]) * marbling
    for sign in (-1.0, 1.0):
        canvas.paint(r, ellipse_sdf(r.x, r.y, (sign * (vx + 16.0), body.canal_y + 14.0), (27.0, 24.0)), value)
        growth = np.clip((np.float32(body.dome_right - 120.0) - r.z) / 70.0, 0.0, 1.0)
        psoas = ellipse_sdf(r.x, r.y, (sign * (vx + 14.0), body.spine_y + 2.0), (4 + 14 * growth, 4 + 12 * growth))
        canvas.paint(r, psoas, hu["muscle"] + 4.0 * r.tex, weight=growth > 0)


def _render_spine(canvas: Canvas, body: Body, hu: dict[str, float]) -> None:
    """Vertebral bodies with cortex and discs, the canal, the arch, spinous and transverse processes."""
    vx, vy = body.vertebra
    r = canvas.region((-vx - 30, body.spine_y - vy - 5, -FAR_MM), (vx + 30, body.back - body.fat + 5, FAR_MM))
    if r is None:
        return
    cortical, trabecular = hu["bone_cortical"], hu["bone_trabecular"]
    level = np.mod(r.z - np.float32(body.vertebra_offset), np.float32(body.vertebra_pitch))
    disc_mm = 8.0
    vertebra = ellipse_sdf(r.x, r.y, (0.0, body.spine_y), (vx, vy))
    endplate = np.abs(level - np.float32(disc_mm)) - 1.2
    body_value = trabecular + (cortical - trabecular) * np.maximum(np.clip(1.0 + vertebra / 1.5, 0, 1),
                                                                   np.clip(1.0 - (endplate + 1.2) / 1.5, 0, 1))
    canvas.paint(r, vertebra, body_value + 15.0 * r.tex)
    canvas.paint(r, np.maximum(vertebra - 1.0, level - np.float32(disc_mm)), hu["disc"])
    arch_level = np.maximum(np.float32(disc_mm + 1.0) - level, level - np.float32(body.vertebra_pitch - 3.0))
    canal = np.sqrt(r.x * r.x + (r.y - np.float32(body.canal_y)) ** 2)
    ring = np.abs(canal - 12.5) - 4.0
    spinous = capsule_sdf(r.x, r.y, np.zeros((1, 1, 1), np.float32), np.array([0.0, body.canal_y + 12, 0.0]),
                           np.array([0.0, body.back - body.fat - 4.0, 0.0]), 4.0, 3.0)
    arch = np.maximum(np.minimum(ring, spinous), arch_level)
    transverse_level = np.maximum(np.float32(disc_mm + 4.0) - level, level - np.float32(disc_mm + 16.0))
    for sign in (-1.0, 1.0):
        process = capsule_sdf(r.x, r.y, np.zeros((1, 1, 1), np.float32), np.array([sign * 10, body.canal_y - 4, 0]),
                               np.array([sign * (vx + 16), body.canal_y, 0.0]), 3.5, 2.5)
        arch = np.minimum(arch, np.maximum(process, transverse_level))
    canvas.paint(r, arch, cortical * 0.7 + 10.0 * r.tex)
    canvas.paint(r, canal - 8.5, hu["csf"])


def _render_chest(canvas: Canvas, body: Body, heart: Ellipsoid, hu: dict[str, float]) -> None:
    """Lung bases above the diaphragm, the diaphragm itself and the bottom of the heart."""
    cx, cy, cp = body.cavity
    r = canvas.region((-cx, -cy, min(body.dome_right, body.dome_left) - 100.0), (cx, cp, FAR_MM))
    if r is None:
        return
    dome = body.diaphragm_z(r.x, r.y)
    cavity = body.outline_sdf(r.x, r.y, r.z) + np.float32(body.wall)
    mediastinum = ellipse_sdf(r.x, r.y, (0.0, body.spine_y - 15.0), (28.0, 40.0))
    lung = np.maximum(np.maximum(cavity + 1.0, dome - r.z), -mediastinum)
    vessels = np.clip(1.0 - np.abs(r.tex - 1.1) * 12.0, 0.0, 1.0)
    canvas.paint(r, lung, hu["lung"] + 25.0 * r.tex + (hu["muscle"] - hu["lung"]) * 0.8 * vessels)
    canvas.paint(r, np.maximum(np.abs(r.z - dome + 2.5) - 2.5, cavity), hu["muscle"] + 3.0 * r.tex)
    r = canvas.region(*heart.bounds(6.0))
    if r is None:
        return
    shell = np.maximum(heart.sdf(r.x, r.y, r.z), body.diaphragm_z(r.x, r.y) + 1.0 - r.z)
    canvas.paint(r, shell - 5.0, hu["fat"] + 5.0 * r.tex)
    canvas.paint(r, shell, hu["myocardium"] + 4.0 * r.tex)
    canvas.paint(r, shell + 10.0, hu["heart_blood"] + 3.0 * r.tex)


def _render_great_vessels(canvas: Canvas, body: Body, hu: dict[str, float]) -> None:
    """Aorta (left-anterior of the spine) and IVC (right-anterior, up into the right atrium)."""
    ax, ay, radius = body.aorta
    r = canvas.region((ax - radius - 10, ay - radius - 10, -FAR_MM), (ax + radius + 10, ay + radius + 10, FAR_MM))
    if r is not None:
        # The diaphragmatic crura wrap the aorta from the dome down to about the celiac trunk.
        ring = np.abs(np.sqrt((r.x - np.float32(ax)) ** 2 + (r.y - np.float32(ay)) ** 2) - np.float32(radius + 3.5))
        levels = np.maximum(np.float32(body.dome_right - 105.0) - r.z, r.z - np.float32(body.dome_left))
        canvas.paint(r, np.maximum(ring - 3.0, levels), hu["muscle"] + 4.0 * r.tex)
        canvas.paint(r, ellipse_sdf(r.x, r.y, (ax, ay), (radius, radius)), hu["aorta"] + 3.0 * r.tex)
    ix, iy, ia, ib = body.ivc
    r = canvas.region((ix - ia - 2, iy - ib - 2, -FAR_MM), (ix + ia + 2, iy + ib + 2, body.dome_right + 20))
    if r is not None:
        # It ends a little above the diaphragm, where it opens into the right atrium.
        top = body.diaphragm_z(np.float32(ix), np.float32(iy)) + np.float32(6.0)
        sdf = smooth_max(ellipse_sdf(r.x, r.y, (ix, iy), (ia, ib)), r.z - top, 6.0)
        canvas.paint(r, sdf, hu["ivc"] + 4.0 * r.tex)


def _render_kidneys(canvas: Canvas, kidneys: tuple[Ellipsoid, Ellipsoid], hu: dict[str, float]) -> None:
    """Kidneys: cortex, medulla (dark in the arterial phase) and renal sinus fat at the medial hilum."""
    for kidney in kidneys:
        r = canvas.region(*kidney.bounds(3.0))
        if r is None:
            continue
        sdf = kidney.sdf(r.x, r.y, r.z)
        canvas.paint(r, sdf - 4.0, hu["fat"] + 5.0 * r.tex)
        canvas.paint(r, sdf, hu["kidney_cortex"] + 4.0 * r.tex)
        medulla = np.maximum(sdf + 6.0, 0.3 - r.tex)
        canvas.paint(r, medulla, hu["kidney_medulla"] + 4.0 * r.tex)
        medial = np.array([-np.sign(kidney.centre[0]), -0.3, 0.0]) * kidney.semi[0]
        sinus = Ellipsoid(kidney.centre + 0.75 * medial, kidney.semi * [0.55, 0.4, 0.5], kidney.rotation)
        canvas.paint(r, sinus.sdf(r.x, r.y, r.z), hu["fat"] + 20.0 + 10.0 * r.tex)


def _render_spleen(canvas: Canvas, body: Body, spleen: Ellipsoid, hu: dict[str, float], phase: str) -> None:
    r = canvas.region(*spleen.bounds(2.0))
    if r is None:
        return
    sdf = np.maximum(spleen.sdf(r.x, r.y, r.z), body.outline_sdf(r.x, r.y, r.z) + np.float32(body.wall + 1.0))
    sdf = np.maximum(sdf, r.z - (body.diaphragm_z(r.x, r.y) - 5.0))
    mottling = 25.0 if phase == "arterial" else 4.0  # arterial-phase spleen is heterogeneous
    canvas.paint(r, sdf, hu["spleen"] + mottling * r.tex)
    canvas.carve_liver(r, sdf)


def _render_solid_tubes(canvas: Canvas, tubes: Tubes, value: Callable[[Region, np.ndarray], np.ndarray]
                        ) -> None:
    field = tube_field(canvas, tubes)
    if field is not None:
        region, distance, tag = field
        canvas.paint(region, distance, value(region, tag))


def _render_pancreas_and_veins(canvas: Canvas, organs: Organs, hu: dict[str, float]) -> None:
    def pancreas(region: Region, _tag: np.ndarray) -> np.ndarray:
        fatty = np.clip((region.tex - 1.0) * 3.0, 0.0, 0.7)
        return hu["pancreas"] + 8.0 * region.tex + (hu["fat"] - hu["pancreas"]) * fatty

    def vein(region: Region, tag: np.ndarray) -> np.ndarray:
        return np.select([tag < 0.5, tag < 1.5], [hu["portal_vein"], hu["ivc"]], hu["aorta"]) + 3.0 * region.tex

    _render_solid_tubes(canvas, organs.pancreas, pancreas)
    _render_solid_tubes(canvas, organs.veins, vein)


def _render_hollow(canvas: Canvas, tubes: Tubes, wall_mm: float, wall_hu: float,
                   content: Callable[[Region], np.ndarray]) -> None:
    """A hollow organ: enhancing wall, then its content, with air above the air-fluid level (anterior).

    Hollow organs are painted after the liver and indent it where they meet.
    """
    field = tube_field(canvas, tubes)
    if field is None:
        return
    region, distance, level = field
    canvas.paint(region, distance, wall_hu + 6.0 * region.tex)
    fill = content(region)
    air = np.clip(0.5 + (level - region.y) / np.float32(canvas.grid.edge_mm), 0.0, 1.0)
    canvas.paint(region, distance + np.float32(wall_mm), fill + (PHYSICAL_AIR_HU - fill) * air)
    canvas.carve_liver(region, distance)


def _render_bowel(canvas: Canvas, organs: Organs, hu: dict[str, float]) -> None:
    """Stomach, colon (mottled stool with gas) and small bowel (fluid, some gas, maybe oral contrast)."""
    liquid = hu["oral_contrast"] if organs.oral_contrast else hu["fluid"]

    def stomach(region: Region) -> np.ndarray:
        return liquid + 12.0 * region.tex

    def stool(region: Region) -> np.ndarray:
        gas = np.clip((region.tex - 0.7) * 4.0, 0.0, 1.0)
        return hu["stool"] + 40.0 * region.tex + (PHYSICAL_AIR_HU - hu["stool"]) * gas

    def small_bowel(region: Region) -> np.ndarray:
        return liquid + 8.0 * region.tex

    _render_hollow(canvas, organs.stomach, 4.0, hu["bowel_wall"], stomach)
    _render_hollow(canvas, organs.colon, 2.5, hu["bowel_wall"], stool)
    _render_hollow(canvas, organs.small_bowel, 2.5, hu["bowel_wall"], small_bowel)


def _render_liver(canvas: Canvas, liver: Liver, hu: dict[str, float]) -> None:
    """The liver parenchyma (truth and soft occupancy)."""
    r = canvas.region(*liver.bounds())
    if r is None:
        return
    sdf = liver.sdf(r.x, r.y, r.z)
    canvas.paint(r, sdf, hu["liver"] + 4.0 * r.tex)
    canvas.truth[LIVER][r.sl] = sdf < 0
    canvas.liver_occupancy[r.sl] = soft_occupancy(sdf, canvas.grid.edge_mm)


def _render_gallbladder(canvas: Canvas, liver: Liver, hu: dict[str, float]) -> None:
    """Thin enhancing wall and bile, in the fossa on the liver's underside (after the bowel next to it)."""
    if liver.gallbladder is None:
        return
    low, high = liver.gallbladder.bounds(10.0)
    r = canvas.region(liver.to_patient(low) - liver.warp.reach_mm, liver.to_patient(high) + liver.warp.reach_mm)
    if r is None:
        return
    gallbladder = liver.fields(r.x, r.y, r.z)[1]
    canvas.paint(r, gallbladder, hu["bowel_wall"] - 20.0)
    canvas.paint(r, gallbladder + 2.0, hu["bile"] + 2.0 * r.tex)
    canvas.carve_liver(r, gallbladder)


def _render_tree(canvas: Canvas, tree: Tubes, value: float) -> None:
    """A vessel tree, drawn inside the liver only except for its tagged (extrahepatic) segments."""
    field = tube_field(canvas, tree)
    if field is None:
        return
    region, distance, tag = field
    canvas.paint(region, distance, value + 4.0 * region.tex, weight=np.maximum(canvas.liver_occupancy[region.sl], tag))
    canvas.truth[VESSEL][region.sl] |= (distance < 0) & canvas.truth[LIVER][region.sl]


def _render_lesions(canvas: Canvas, patient: Patient, phase: str) -> None:
    """Lesions replace parenchyma and vessels; their truth is the lesion inside the liver."""
    for lesion in patient.lesions:
        r = canvas.region(*lesion.bounds())
        if r is None:
            continue
        smallest = min(lesion.truth.semi_axes_mm)
        look = lesion_look(lesion.truth.kind, phase, lesion.look_draws, smallest, patient.hu["liver"])
        sdf = lesion.sdf(r.x, r.y, r.z)
        canvas.paint(r, sdf, lesion_hu(look, sdf, r.tex, smallest), edge_mm=max(look.edge_mm, canvas.grid.edge_mm),
                     weight=canvas.liver_occupancy[r.sl])
        inside = (sdf < 0) & canvas.truth[LIVER][r.sl]
        canvas.truth[TUMOR][r.sl] |= inside
        canvas.truth[VESSEL][r.sl] &= ~inside


def render_patient(canvas: Canvas, patient: Patient, phase: str) -> None:
    """Paint every structure, outside in; later structures cover earlier ones."""
    body, organs, hu = patient.body, patient.organs, patient.hu
    _render_trunk(canvas, body, hu)
    _render_ribs(canvas, body, hu)
    _render_back(canvas, body, hu)
    _render_chest(canvas, body, organs.heart, hu)
    _render_spine(canvas, body, hu)
    _render_great_vessels(canvas, body, hu)
    _render_kidneys(canvas, organs.kidneys, hu)
    _render_pancreas_and_veins(canvas, organs, hu)
    _render_liver(canvas, patient.liver, hu)
    _render_spleen(canvas, body, organs.spleen, hu, phase)
    _render_bowel(canvas, organs, hu)
    _render_gallbladder(canvas, patient.liver, hu)
    _render_tree(canvas, patient.portal, hu["portal_vein"])
    _render_tree(canvas, patient.hepatic, hu["hepatic_vein"])
    _render_lesions(canvas, patient, phase)
