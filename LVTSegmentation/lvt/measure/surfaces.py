"""Closed 3D surfaces of the liver, vessels and tumors in LPS millimetres, and their files.

VTK is imported inside the functions only (here and in :mod:`lvt.measure.surface_view`, which
renders the surfaces): the rest of the core (and `import lvt`) must not pay for it or need it.
Surfaces are built as Slicer builds closed surfaces from a label map: surface nets on the padded
mask (so every surface is closed), windowed-sinc smoothing whose strength depends on the structure
(vessels stay thin), then the full ijk -> LPS matrix, direction included, so oblique and flipped
grids land where the CT is. Each structure is built at the resolution it needs: the liver from
voxels merged to about 1.5 mm (a sub-millimetre CT gives it no visible detail, only more triangles
to smooth, write and render), vessels and tumors at the CT's own resolution. Only the box of the
labels' nonzero voxels is read (:class:`~lvt.measure.region.LabelRegion`).

Files follow Slicer's conventions for coordinate systems: STL headers and OBJ comments say
``SPACE=LPS`` and VTP files carry a ``SPACE`` field-data string, so Slicer loads them in place.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lvt.atomic import atomic_path
from lvt.image import Image
from lvt.labels import TUMOR_LABEL, VESSEL_LABEL, WHOLE_LIVER_LABELS
from lvt.measure.region import LabelRegion, box_start, nonzero_box
from lvt.progress import check_cancel

if TYPE_CHECKING:
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkIOCore import vtkWriter

SPACE_TAG = "SPACE=LPS"
_PAD_VOXELS = 2


@dataclass(frozen=True)
class SurfaceSettings:
    """How one structure's surface is built and smoothed.

    ``pass_band`` is the windowed-sinc filter's pass band (0..2): lower smooths more. Slicer maps its
    smoothing factor f to ``pass_band = 10**(-4 f)`` and ``iterations = 20 + 40 f``; the defaults
    below are f = 0.6 (liver), 0.4 (tumors) and 0.15 (vessels, which must not be smoothed away).
    ``resolution_mm`` (0: the grid's own) merges voxels finer than it along an index axis into
    blocks of the largest whole number of voxels that stays within it (see :func:`merge_blocks`).
    """

    label_values: tuple[int, ...]
    iterations: int
    pass_band: float
    resolution_mm: float = 0.0

    def __post_init__(self) -> None:
        if not self.label_values:
            raise ValueError("a surface needs at least one label value")
        if self.iterations < 0 or not 0.0 < self.pass_band <= 2.0:
            raise ValueError(f"iterations must be >= 0 and pass_band in (0, 2], got {self}")
        if not self.resolution_mm >= 0.0:
            raise ValueError(f"resolution_mm must be >= 0, got {self.resolution_mm}")

    def block_kji(self, spacing_mm: tuple[float, float, float]) -> np.ndarray:
        """(3,) voxels merged per block along the array axes (k, j, i) on a grid of this spacing."""
        ratio = self.resolution_mm / np.asarray(spacing_mm[::-1], dtype=float)
        return np.maximum(1, np.floor(ratio + 1e-6)).astype(int)


SURFACES: dict[str, SurfaceSettings] = {
    "liver": SurfaceSettings(WHOLE_LIVER_LABELS, 44, 10**-2.4, resolution_mm=1.5),
    "vessels": SurfaceSettings((VESSEL_LABEL,), 26, 10**-0.6),
    "tumors": SurfaceSettings((TUMOR_LABEL,), 36, 10**-1.6),
}


def extract_surfaces(labels: Image, *, smooth: bool = True,
                     cancel: threading.Event | None = None) -> dict[str, vtkPolyData]:
    """Closed triangle surfaces of the whole liver (1|2|3), the vessels (2) and the tumors (3).

    Args:
        labels: exclusive label map on any grid.
        smooth: build each structure at its resolution and smooth it (off: the raw surface-nets mesh of the grid).
        cancel: checked before each structure (:class:`lvt.errors.CancelledError` when set).

    Returns:
        ``{"liver": ..., "vessels": ..., "tumors": ...}`` vtkPolyData in LPS mm with outward point
        normals; empty structures are left out.
    """
    region = LabelRegion.of(labels.array)
    surfaces = {}
    for name, settings in SURFACES.items():
        check_cancel(cancel)
        mask = np.isin(region.array, settings.label_values)
        if mask.any():
            surfaces[name] = _surface(mask, region.offset_kji, labels, settings if smooth else None)
    return surfaces


def mask_surface(mask: Image, settings: SurfaceSettings | None) -> vtkPolyData:
    """One closed surface around the voxels of a non-empty boolean mask, in LPS mm.

    Args:
        mask: boolean mask on its grid.
        settings: resolution and smoothing, or None for the raw mesh of the grid.

    Returns:
        Triangle vtkPolyData with outward-oriented cells and point normals.
    """
    return _surface(mask.array.astype(bool, copy=False), np.zeros(3, dtype=int), mask, settings)


def _surface(mask_kji: np.ndarray, offset_kji: np.ndarray, grid: Image, settings: SurfaceSettings | None
             ) -> vtkPolyData:
    """:func:`mask_surface` of a mask given on a box of ``grid`` that starts at ``offset_kji``."""
    from vtkmodules.vtkFiltersCore import vtkWindowedSincPolyDataFilter

    block = np.ones(3, dtype=int) if settings is None else settings.block_kji(grid.spacing_mm)
    polydata = _surface_nets(mask_kji, offset_kji, grid.spacing_mm, block)
    if settings is not None and settings.iterations > 0:
        smoother = vtkWindowedSincPolyDataFilter()
        smoother.SetInputData(polydata)
        smoother.SetNumberOfIterations(settings.iterations)
        smoother.SetPassBand(settings.pass_band)
        smoother.BoundarySmoothingOff()
        smoother.FeatureEdgeSmoothingOff()
        smoother.NonManifoldSmoothingOn()
        smoother.NormalizeCoordinatesOn()
        smoother.Update()
        polydata = smoother.GetOutput()
    return _to_lps_with_outward_normals(polydata, grid)


def _surface_nets(mask_kji: np.ndarray, offset_kji: np.ndarray, spacing_mm: tuple[float, float, float],
                  block_kji: np.ndarray) -> vtkPolyData:
    """Surface nets around the mask cropped to its bounding box, merged in blocks, padded with background.

    Points come out in "scaled index" space: whole-grid (i, j, k) times spacing, no direction and no
    origin; that space differs from LPS by a rigid motion only, so smoothing measures real mm. A
    block's point sits at the centre of its voxels.
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkSurfaceNets3D

    box = nonzero_box(mask_kji)
    low_ijk, block_ijk = (box_start(box) + offset_kji)[::-1], block_kji[::-1]
    padded = np.pad(merge_blocks(mask_kji[box], block_kji).astype(np.uint8), _PAD_VOXELS)
    image = vtkImageData()
    image.SetDimensions(*padded.shape[::-1])
    image.SetSpacing(*(block_ijk * np.asarray(spacing_mm)))
    image.SetOrigin(*((low_ijk + (block_ijk - 1) / 2.0 - _PAD_VOXELS * block_ijk) * np.asarray(spacing_mm)))
    image.GetPointData().SetScalars(numpy_to_vtk(padded.ravel(), deep=True))
    nets = vtkSurfaceNets3D()
    nets.SetInputData(image)
    nets.SetValue(0, 1)
    nets.SetBackgroundLabel(0)
    nets.SetOutputMeshTypeToTriangles()
    nets.SmoothingOff()  # the windowed-sinc filter smooths, with per-structure strength
    nets.Update()
    polydata = nets.GetOutput()
    polydata.GetCellData().Initialize()  # drop the BoundaryLabels array: one structure per surface
    return polydata


def merge_blocks(mask_kji: np.ndarray, block_kji: np.ndarray) -> np.ndarray:
    """A mask on a grid ``block_kji`` times coarser: a block is inside when most of its voxels are.

    The mask is padded with background to whole blocks. A block exactly half inside follows its
    first voxel, which keeps the volume unbiased (a tie rule of "inside" would add half of every
    such block at the surface: about 1 % of a liver merged 2 x 2).
    """
    if np.all(block_kji == 1):
        return mask_kji
    padded = np.pad(mask_kji, [(0, -n % b) for n, b in zip(mask_kji.shape, block_kji, strict=True)])
    shape = np.stack([np.asarray(padded.shape) // block_kji, block_kji], axis=1).ravel()
    twice_inside = padded.reshape(shape).sum(axis=(1, 3, 5), dtype=np.int32) * 2
    size = int(np.prod(block_kji))
    first = padded[:: block_kji[0], :: block_kji[1], :: block_kji[2]]
    return (twice_inside > size) | ((twice_inside == size) & first)


def _to_lps_with_outward_normals(polydata: vtkPolyData, grid: Image) -> vtkPolyData:
    """Apply direction and origin (a rigid motion, a reflection for flipped grids), then orient outward.

    Surface nets emit consistently oriented triangles, so orientation is decided once for the whole
    mesh from the sign of its enclosed volume, and reversed when negative. (Per-region
    auto-orientation is not used: it flips patches around the few non-manifold edges that
    voxel surfaces of real organs have, which wrecked the enclosed volume.)
    """
    from vtkmodules.vtkCommonTransforms import vtkTransform
    from vtkmodules.vtkFiltersCore import vtkPolyDataNormals
    from vtkmodules.vtkFiltersGeneral import vtkTransformPolyDataFilter

    matrix = np.eye(4)
    matrix[:3, :3] = grid.direction
    matrix[:3, 3] = grid.origin_lps_mm
    transform = vtkTransform()
    transform.SetMatrix(matrix.ravel().tolist())
    moved = vtkTransformPolyDataFilter()
    moved.SetInputData(polydata)
    moved.SetTransform(transform)
    moved.Update()
    oriented = moved.GetOutput()
    if signed_volume_mm3(oriented) < 0:
        oriented = _reversed(oriented)
    normals = vtkPolyDataNormals()
    normals.SetInputData(oriented)
    normals.SplittingOff()  # splitting duplicates points at sharp edges and would open the surface
    normals.ConsistencyOff()
    normals.AutoOrientNormalsOff()
    normals.ComputePointNormalsOn()
    normals.ComputeCellNormalsOff()
    normals.Update()
    return normals.GetOutput()


def signed_volume_mm3(polydata: vtkPolyData) -> float:
    """Enclosed volume by the divergence theorem: positive when the triangles face outward."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    points = vtk_to_numpy(polydata.GetPoints().GetData()).astype(np.float64)
    cells = vtk_to_numpy(polydata.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    a, b, c = points[cells[:, 0]], points[cells[:, 1]], points[cells[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _reversed(polydata: vtkPolyData) -> vtkPolyData:
    from vtkmodules.vtkFiltersCore import vtkReverseSense

    reverse = vtkReverseSense()
    reverse.SetInputData(polydata)
    reverse.ReverseCellsOn()
    reverse.Update()
    return reverse.GetOutput()


def write_surfaces(
    surfaces: Mapping[str, vtkPolyData], folder: Path | str, *, include_obj: bool = False
) -> list[Path]:
    """Write each surface as ``<name>.stl`` and ``<name>.vtp`` (and ``<name>.obj``), atomically.

    Args:
        surfaces: name -> LPS surface, as :func:`extract_surfaces` returns.
        folder: output folder, created when missing.
        include_obj: also write Wavefront OBJ (for 3D printing and other viewers).

    Returns:
        The written paths.
    """
    from vtkmodules.vtkIOGeometry import vtkSTLWriter
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, polydata in surfaces.items():
        stl = vtkSTLWriter()
        stl.SetFileTypeToBinary()
        stl.SetHeader(f"LVT {name} surface. {SPACE_TAG}")
        written.append(_write_vtk(stl, polydata, folder / f"{name}.stl"))
        vtp = vtkXMLPolyDataWriter()
        vtp.SetDataModeToAppended()
        vtp.SetCompressorTypeToZLib()
        vtp.SetCompressionLevel(1)  # a third faster than the default level, files 2 % larger
        written.append(_write_vtk(vtp, _with_space_field(polydata), folder / f"{name}.vtp"))
        if include_obj:
            written.append(write_obj(polydata, folder / f"{name}.obj"))
    return written


def _write_vtk(writer: vtkWriter, polydata: vtkPolyData, path: Path) -> Path:
    with atomic_path(path) as temporary:
        writer.SetInputData(polydata)
        writer.SetFileName(str(temporary))
        if writer.Write() != 1:
            raise OSError(f"{path}: VTK could not write the surface")
    return path


def _with_space_field(polydata: vtkPolyData) -> vtkPolyData:
    """A shallow copy carrying Slicer's ``SPACE`` field-data string, so Slicer reads it as LPS."""
    from vtkmodules.vtkCommonCore import vtkStringArray
    from vtkmodules.vtkCommonDataModel import vtkPolyData

    copy = vtkPolyData()
    copy.ShallowCopy(polydata)
    space = vtkStringArray()
    space.SetName("SPACE")
    space.InsertNextValue("LPS")
    copy.GetFieldData().AddArray(space)
    return copy


def write_obj(polydata: vtkPolyData, path: Path | str) -> Path:
    """Write a triangle surface as Wavefront OBJ (vertices, normals, faces), atomically, tagged LPS."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    path = Path(path)
    points = vtk_to_numpy(polydata.GetPoints().GetData())
    triangles = vtk_to_numpy(polydata.GetPolys().GetConnectivityArray()).reshape(-1, 3) + 1
    normals = polydata.GetPointData().GetNormals()
    lines = [f"# LVT surface. {SPACE_TAG}", *(f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in points)]
    if normals is not None:
        lines += [f"vn {x:.4f} {y:.4f} {z:.4f}" for x, y, z in vtk_to_numpy(normals)]
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in triangles]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in triangles]
    with atomic_path(path) as temporary:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
