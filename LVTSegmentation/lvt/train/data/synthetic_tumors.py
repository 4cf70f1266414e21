"""Synthetic liver lesions painted into real CT, to train the tumor class on liver-only labels.

The lesions are the phantom's (:mod:`lvt.phantom.lesions`): same shapes, kinds and look by phase.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from lvt.image import Image
from lvt.phantom.canvas import Grid, soft_occupancy
from lvt.phantom.config import LESION_KINDS, PHASES, LesionKind, Phase, check_range
from lvt.phantom.fields import draw_lattice, sample_lattice
from lvt.phantom.lesions import Lesion, lesion_hu, lesion_look, place_lesions


def insert_synthetic_tumors(
    ct: Image,
    liver_mask: np.ndarray,
    rng: np.random.Generator,
    n_tumors: tuple[int, int] = (1, 5),
    *,
    kinds: tuple[LesionKind, ...] = LESION_KINDS,
    diameter_mm: tuple[float, float] = (5.0, 150.0),
    phase: Phase | None = None,
    min_inside: float = 0.6,
    contrast_scale: tuple[float, float] = (0.35, 1.3),
) -> tuple[Image, np.ndarray]:
    """Paint synthetic liver lesions into a real CT, inside a given liver mask.

    Lesions are the phantom's (perturbed ellipsoids of the same kinds), placed so that they do not
    overlap and their centre and at least ``min_inside`` of their envelope lie in the mask; the rest is
    cut off at the liver's border, so lesions at the surface and the dome, and very large ones, are
    common (the ones models miss most, Hu et al. CVPR 2023). Each lesion's difference from the liver is
    scaled by a draw from ``contrast_scale``, from nearly isodense to strongly hypo- or hyperdense.
    Their HU is set relative to the median liver HU of this scan; the
    scan's own fine-grained noise is kept inside them (only the smooth content is replaced), and
    their edges are soft, so they look scanned rather than pasted. Used to train the tumor class on
    CTs that only have liver labels.

    Args:
        ct: the CT in HU.
        liver_mask: (Z, Y, X) bool (or 0/1) liver mask on the CT grid.
        rng: random generator; the same state gives the same lesions.
        n_tumors: inclusive range of the number of lesions to try to place.
        kinds: lesion kinds to draw from ("metastasis", "hcc", "cyst").
        diameter_mm: range of lesion diameters (drawn log-uniformly): 5 mm to 15 cm by default.
        phase: contrast phase of the scan, which sets how lesions differ from the liver; None guesses
            "unenhanced" when the liver is below 75 HU, else "portal_venous".
        min_inside: share of the lesion's envelope probes that must lie in the liver (1: wholly inside).
        contrast_scale: range of the factor on each lesion's HU difference from the liver.

    Returns:
        The new CT (float32 HU, same grid) and the (Z, Y, X) bool tumor mask, a subset of the liver mask.

    Raises:
        ValueError: when the mask does not match the CT grid, is empty, or an option is out of range.
    """
    liver = np.asarray(liver_mask).astype(bool)
    _check_insert_arguments(ct, liver, n_tumors, kinds, diameter_mm, phase, min_inside, contrast_scale)
    liver_hu = _median_liver_hu(ct, liver)
    phase = phase or ("unenhanced" if liver_hu < 75.0 else "portal_venous")
    lesions = _place_in_mask(ct, liver, rng, n_tumors, kinds, diameter_mm, min_inside)
    out = ct.array.astype(np.float32, copy=True)
    tumor = np.zeros(liver.shape, bool)
    lattice = draw_lattice(rng)
    grid = Grid.of(ct)
    for lesion in lesions:
        scale = float(rng.uniform(*contrast_scale))
        _insert_lesion(out, tumor, liver, grid, lesion, lattice, phase, liver_hu, scale)
    return ct.with_array(out), tumor


def _median_liver_hu(ct: Image, liver: np.ndarray) -> float:
    """The scan's typical liver HU, ignoring air and bone or contrast inside the mask."""
    values = ct.array[liver]
    return float(np.median(values[(values > -100) & (values < 300)])) if values.size else 0.0


def _place_in_mask(ct: Image, liver: np.ndarray, rng: np.random.Generator, n_tumors: tuple[int, int],
                   kinds: tuple[str, ...], diameter_mm: tuple[float, float], min_inside: float) -> list[Lesion]:
    """Draw how many lesions to try, then place them around random liver voxels, mostly inside the mask."""
    voxels = np.flatnonzero(liver)
    shape = liver.shape

    def draw_centre() -> np.ndarray:
        k, j, i = np.unravel_index(voxels[rng.integers(len(voxels))], shape)
        return ct.ijk_to_lps(np.array([i, j, k], float) + rng.uniform(-0.5, 0.5, 3))[0]

    def inside(points: np.ndarray) -> np.ndarray:
        ijk = np.rint(ct.lps_to_ijk(points)).astype(int)
        valid = np.all((ijk >= 0) & (ijk < np.array(shape[::-1])), axis=1)
        result = np.zeros(len(points), bool)
        result[valid] = liver[ijk[valid, 2], ijk[valid, 1], ijk[valid, 0]]
        return result

    count = int(rng.integers(n_tumors[0], n_tumors[1] + 1))
    return place_lesions(rng, count, kinds, diameter_mm, draw_centre, inside, min_inside)


def _check_insert_arguments(ct: Image, liver: np.ndarray, n_tumors: tuple[int, int], kinds: tuple[str, ...],
                            diameter_mm: tuple[float, float], phase: str | None, min_inside: float,
                            contrast_scale: tuple[float, float]) -> None:
    if liver.shape != ct.array.shape:
        raise ValueError(f"liver_mask shape {liver.shape} does not match the CT grid {ct.array.shape}")
    if not liver.any():
        raise ValueError("liver_mask is empty: there is no liver to place lesions in")
    check_range("n_tumors", n_tumors, 0)
    check_range("diameter_mm", diameter_mm, 1.0)
    check_range("contrast_scale", contrast_scale, 0.0)
    if not 0.0 <= min_inside <= 1.0:
        raise ValueError(f"min_inside must be in [0, 1], got {min_inside}")
    if not kinds or any(kind not in LESION_KINDS for kind in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {LESION_KINDS}, got {kinds}")
    if phase is not None and phase not in PHASES:
        raise ValueError(f"phase must be None or one of {PHASES}, got {phase!r}")


def _insert_lesion(out: np.ndarray, tumor: np.ndarray, liver: np.ndarray, grid: Grid, lesion: Lesion,
                   lattice: np.ndarray, phase: str, liver_hu: float, contrast: float) -> None:
    """Replace the smooth content of the CT inside one lesion by the lesion's HU, keeping the noise."""
    sl = grid.box(*lesion.bounds())
    if sl is None:
        return
    x, y, z = grid.slice_points(sl)
    sdf = lesion.sdf(x, y, z)
    smallest = min(lesion.truth.semi_axes_mm)
    look = lesion_look(lesion.truth.kind, phase, lesion.look_draws, smallest, liver_hu)
    target = liver_hu + contrast * (lesion_hu(look, sdf, sample_lattice(lattice, x, y, z), smallest) - liver_hu)
    sigma_voxels = [1.5 / s for s in grid.spacing_mm[::-1]]
    pad = [math.ceil(3 * s) for s in sigma_voxels]
    padded = tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(sl, pad, out.shape, strict=True))
    smooth = ndimage.gaussian_filter(out[padded], sigma_voxels, mode="nearest")
    smooth = smooth[tuple(slice(s.start - q.start, s.stop - q.start) for s, q in zip(sl, padded, strict=True))]
    occupancy = soft_occupancy(sdf, max(look.edge_mm, grid.edge_mm)) * liver[sl]
    out[sl] += occupancy * (target - smooth)
    tumor[sl] |= (sdf < 0) & liver[sl]
