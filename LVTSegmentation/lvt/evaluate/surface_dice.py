"""Normalised surface Dice from surface elements with areas in mm² (Nikolov et al. 2021).

The paper's NSD, as DeepMind's ``surface-distance`` library defines it (and MONAI's
``compute_surface_dice(..., use_subvoxels=True)``): every 2 × 2 × 2 block of voxels (a *cube*,
centred on a voxel corner) whose eight voxels are not all inside or all outside holds a piece of
the marching-cubes surface, a *surfel*. Its area in mm² follows from the block's inside/outside
pattern and the voxel spacing, so a patch of surface weighs the same whatever its orientation on an
anisotropic grid. Distances are Euclidean in mm between the centres of the surfel-holding cubes of
the two masks. NSD at tolerance τ is

    (area of P's surfels within τ of T's + area of T's surfels within τ of P's) / (area of P + area of T).

Counting boundary voxels instead (one element each) over-weights surfaces facing the thick-slice
axis and moved NSD by 0.1 and more on CT grids; HD95 and ASSD in :mod:`lvt.evaluate.metrics` keep
their boundary-voxel definition. Empty masks: both empty gives NSD 1, exactly one empty gives 0.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lvt.evaluate.metrics import distances_to_nearest

# Bit of each voxel of a 2 x 2 x 2 block in its configuration code, indexed [dz, dy, dx].
CORNER_BITS = (1 << np.arange(8, dtype=np.uint8)).reshape(2, 2, 2)
_ALL_INSIDE = 255


def _marching_cubes_triangles(corners_zyx: np.ndarray) -> np.ndarray:
    """(n, 3, 3) triangle vertices (z, y, x in voxel units) of VTK's marching cubes on one 2 x 2 x 2 block."""
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkMarchingCubes

    block = vtkImageData()
    block.SetDimensions(2, 2, 2)  # VTK's x runs fastest: the C order of a [z, y, x] array
    block.GetPointData().SetScalars(numpy_to_vtk(corners_zyx.astype(np.float32).ravel(), deep=True))
    cubes = vtkMarchingCubes()
    cubes.SetInputData(block)
    cubes.SetValue(0, 0.5)
    cubes.ComputeNormalsOff()
    cubes.ComputeGradientsOff()
    cubes.ComputeScalarsOff()
    cubes.Update()
    surface = cubes.GetOutput()
    if surface.GetNumberOfPoints() == 0:
        return np.zeros((0, 3, 3))
    points_zyx = vtk_to_numpy(surface.GetPoints().GetData())[:, ::-1]
    return points_zyx[vtk_to_numpy(surface.GetPolys().GetConnectivityArray()).reshape(-1, 3)]


@functools.cache
def _unit_triangles() -> tuple[np.ndarray, ...]:
    """Marching-cubes triangles of each of the 256 block configurations, in voxel units.

    Classic marching cubes splits an ambiguous face one way for a configuration and the other way
    for its complement, so the same surface would get two areas. Taking the triangles of whichever
    side has at most four inside voxels makes the area independent of which side is "inside"; this
    reproduces the surface-distance library's table for all 256 configurations.
    """
    triangles = []
    for code in range(256):
        side = code if bin(code).count("1") <= 4 else _ALL_INSIDE - code
        triangles.append(_marching_cubes_triangles((side & CORNER_BITS) > 0))
    return tuple(triangles)


@functools.lru_cache(maxsize=16)
def surfel_area_table(spacing_zyx_mm: tuple[float, float, float]) -> np.ndarray:
    """(256,) surfel area in mm² of each 2 x 2 x 2 configuration code (see :data:`CORNER_BITS`)."""
    scale = np.asarray(spacing_zyx_mm, dtype=float)
    areas = np.zeros(256)
    for code, triangles in enumerate(_unit_triangles()):
        if len(triangles):
            corners = triangles * scale
            normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
            areas[code] = 0.5 * np.linalg.norm(normals, axis=1).sum()
    return areas


def configuration_codes(mask: np.ndarray) -> np.ndarray:
    """Code of every 2 x 2 x 2 block of a mask padded by one outside voxel on each side.

    Args:
        mask: (Z, Y, X) bool mask; the array edge counts as outside.

    Returns:
        (Z + 1, Y + 1, X + 1) uint8 codes; block ``[k, j, i]`` is centred on the corner shared by
        voxels ``[k - 1 .. k, j - 1 .. j, i - 1 .. i]`` of ``mask``.
    """
    padded = np.pad(mask.astype(bool, copy=False), 1)
    z, y, x = (n - 1 for n in padded.shape)
    codes = np.zeros((z, y, x), dtype=np.uint8)
    for (dz, dy, dx), bit in np.ndenumerate(CORNER_BITS):
        np.bitwise_or(codes, bit, out=codes, where=padded[dz:dz + z, dy:dy + y, dx:dx + x])
    return codes


@dataclass(frozen=True, eq=False)
class SurfelDistances:
    """The surfels of two masks: areas in mm² and distances in mm to the other mask's surfels.

    Attributes:
        pred_areas_mm2, pred_to_truth_mm: (Np,) float, one entry per predicted surfel; the distance
            is ``inf`` everywhere when the reference is empty.
        truth_areas_mm2, truth_to_pred_mm: (Nt,) float, the same for the reference.
    """

    pred_areas_mm2: np.ndarray
    pred_to_truth_mm: np.ndarray
    truth_areas_mm2: np.ndarray
    truth_to_pred_mm: np.ndarray


def surfel_distances(
    pred: np.ndarray, truth: np.ndarray, spacing_zyx_mm: tuple[float, float, float]
) -> SurfelDistances:
    """Surfel areas and cross distances of two masks, cropped to their joint bounding box first.

    Args:
        pred: (Z, Y, X) bool predicted mask.
        truth: (Z, Y, X) bool reference mask, same shape.
        spacing_zyx_mm: voxel size along the array axes (z, y, x) in mm.

    Returns:
        Areas and distances both ways; all arrays are empty when both masks are.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    union = pred | truth
    if not union.any():
        return SurfelDistances(*(np.zeros(0) for _ in range(4)))
    crop = ndimage.find_objects(union.astype(np.uint8))[0]
    spacing = tuple(float(s) for s in spacing_zyx_mm)
    table = surfel_area_table(spacing)  # type: ignore[arg-type]
    pred_codes, truth_codes = configuration_codes(pred[crop]), configuration_codes(truth[crop])
    pred_surface = (pred_codes != 0) & (pred_codes != _ALL_INSIDE)
    truth_surface = (truth_codes != 0) & (truth_codes != _ALL_INSIDE)
    return SurfelDistances(
        pred_areas_mm2=table[pred_codes[pred_surface]],
        pred_to_truth_mm=distances_to_nearest(truth_surface, pred_surface, spacing),
        truth_areas_mm2=table[truth_codes[truth_surface]],
        truth_to_pred_mm=distances_to_nearest(pred_surface, truth_surface, spacing),
    )


def normalized_surface_dice(surfels: SurfelDistances, tolerance_mm: float) -> float:
    """Normalised surface Dice: the share of both surfaces' area lying within ``tolerance_mm`` of the other.

    Args:
        surfels: output of :func:`surfel_distances`.
        tolerance_mm: accepted boundary deviation τ in mm (METHOD.md: 7 liver, 3 vessel and tumor).

    Returns:
        NSD in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    total = float(surfels.pred_areas_mm2.sum() + surfels.truth_areas_mm2.sum())
    if total == 0.0:
        return 1.0
    within = surfels.pred_areas_mm2[surfels.pred_to_truth_mm <= tolerance_mm].sum() + surfels.truth_areas_mm2[
        surfels.truth_to_pred_mm <= tolerance_mm
    ].sum()
    return float(within) / total
