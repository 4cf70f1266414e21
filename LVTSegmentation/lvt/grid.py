"""Grids and resampling: the model's canonical grid, the way back to the CT grid, crops and boxes.

Every function here takes and returns :class:`lvt.image.Image` (LPS, array ``[k, j, i]``). Resampling
is done by SimpleITK, which shares our LPS convention, so no axis flips are needed on the way.
SimpleITK is imported lazily (:func:`sitk_module`) because GPU training nodes may lack it and
must still be able to import the core; the conversions between :class:`Image` and ``SimpleITK.Image``
live here and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lvt.image import AIR_HU, Image, corner_points

if TYPE_CHECKING:
    import SimpleITK

logger = logging.getLogger(__name__)

Interpolation = Literal["linear", "nearest"]


def sitk_module() -> Any:
    """Import SimpleITK on first use, with an actionable message where it is missing."""
    try:
        import SimpleITK
    except ImportError as error:
        raise ImportError(
            "SimpleITK is needed to read, write and resample images: pip install 'SimpleITK>=2.3'"
        ) from error
    return SimpleITK


@contextmanager
def itk_warnings_off() -> Iterator[None]:
    """Keep ITK's and GDCM's raw warnings off the terminal while reading.

    They reach the user as unexplained text; whatever matters in them (missing slices, tilt, odd
    spacing) is checked by the readers and becomes an error or a note of our own.
    """
    sitk = sitk_module()
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def image_to_sitk(image: Image) -> SimpleITK.Image:
    """Copy an :class:`Image` into a ``SimpleITK.Image`` with the same grid.

    Bool arrays become uint8 and float16 becomes float32, since SimpleITK has no such pixel types.
    """
    sitk = sitk_module()
    array = image.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    result = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    _set_sitk_grid(result, image.spacing_mm, image.origin_lps_mm, image.direction)
    return result


def image_from_sitk(sitk_image: SimpleITK.Image) -> Image:
    """Copy a 3D scalar ``SimpleITK.Image`` into an :class:`Image` (array ``[k, j, i]``, LPS grid)."""
    sitk = sitk_module()
    return Image(
        sitk.GetArrayFromImage(sitk_image),
        tuple(sitk_image.GetSpacing()),
        tuple(sitk_image.GetOrigin()),
        np.asarray(sitk_image.GetDirection(), dtype=float).reshape(3, 3),
    )


def _set_sitk_grid(
    sitk_image: SimpleITK.Image,
    spacing_mm: tuple[float, float, float],
    origin_lps_mm: tuple[float, float, float],
    direction: np.ndarray,
) -> None:
    sitk_image.SetSpacing([float(s) for s in spacing_mm])
    sitk_image.SetOrigin([float(o) for o in origin_lps_mm])
    # ITK stores the direction row-major with one column per index axis, as Image does.
    sitk_image.SetDirection([float(v) for v in np.asarray(direction).reshape(-1)])


def canonical_grid(image: Image, spacing_mm: tuple[float, float, float] | np.ndarray,
                   direction: np.ndarray | None = None) -> Image:
    """The grid at ``spacing_mm`` along ``direction`` (default: the LPS axes) that covers all of ``image``.

    The extent is the box spanned by the outer faces of the input voxels (continuous indices -0.5 to
    n-0.5), whatever the input orientation, measured along the output axes. The output grid is
    centred on that box, so an input that already lies on such a grid keeps exactly its own grid.

    Args:
        image: any grid (oblique direction cosines and flipped axes allowed).
        spacing_mm: output spacing in (x, y, z) = (i, j, k) order, millimetres.
        direction: output axes as the columns of an orthonormal 3x3 matrix (LPS); None for identity.

    Returns:
        An :class:`Image` whose array is a read-only zero-stride view of 0 (a grid description that
        costs no memory).
    """
    spacing = np.asarray(spacing_mm, dtype=float)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"spacing must be three positive numbers, got {spacing_mm}")
    axes = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    along_axes = image.extent_corners_lps() @ axes  # corner coordinates along each output axis
    low, high = along_axes.min(axis=0), along_axes.max(axis=0)
    # A small tolerance keeps an extent of exactly n voxels from rounding up to n + 1.
    size_ijk = np.maximum(1, np.ceil((high - low) / spacing - 1e-4)).astype(int)
    first_centre = (low + high) / 2.0 - (size_ijk - 1) / 2.0 * spacing
    array = np.broadcast_to(np.zeros((), dtype=np.uint8), tuple(int(n) for n in size_ijk[::-1]))
    return Image(array, tuple(spacing), tuple(axes @ first_centre), axes)


def resample_to_spacing(
    image: Image,
    spacing_mm: tuple[float, float, float],
    *,
    interpolation: Interpolation = "linear",
    default_value: float = AIR_HU,
) -> Image:
    """Resample onto the model's canonical grid: identity direction, ``spacing_mm``, full extent.

    Args:
        image: input on any grid.
        spacing_mm: output spacing in (x, y, z) order, millimetres.
        interpolation: "linear" (output float32) for intensities, "nearest" (dtype kept) for labels.
        default_value: value of output voxels outside the input (air in HU by default).

    Returns:
        The resampled image on :func:`canonical_grid` of the input.
    """
    grid = canonical_grid(image, spacing_mm)
    logger.debug("Resampling %s onto %s", describe_grid(image), describe_grid(grid))
    return resample_like(image, grid, interpolation=interpolation, default_value=default_value)


def resample_like(
    image: Image,
    reference: Image,
    *,
    interpolation: Interpolation = "linear",
    default_value: float = 0.0,
) -> Image:
    """Resample ``image`` onto the grid of ``reference`` (physical positions are matched, LPS).

    Args:
        image: input on any grid.
        reference: the grid to sample on; its voxel values are not used.
        interpolation: "linear" (output float32) or "nearest" (input dtype kept, values preserved).
        default_value: value of output voxels that fall outside the input.

    Returns:
        An :class:`Image` on the reference grid.
    """
    sitk = sitk_module()
    source = image_to_sitk(image)
    if interpolation == "linear":
        source = sitk.Cast(source, sitk.sitkFloat32)
        interpolator = sitk.sitkLinear
    elif interpolation == "nearest":
        interpolator = sitk.sitkNearestNeighbor
    else:
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    resampled = _resample_sitk(source, reference, interpolator, default_value)
    result = image_from_sitk(resampled)
    if interpolation == "nearest" and result.array.dtype != image.array.dtype:
        result = result.with_array(result.array.astype(image.array.dtype))
    return result


def _resample_sitk(
    source: SimpleITK.Image, reference: Image, interpolator: int, default_value: float
) -> SimpleITK.Image:
    sitk = sitk_module()
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in reference.size_ijk])
    resampler.SetOutputSpacing([float(s) for s in reference.spacing_mm])
    resampler.SetOutputOrigin([float(o) for o in reference.origin_lps_mm])
    resampler.SetOutputDirection([float(v) for v in reference.direction.reshape(-1)])
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(float(default_value))
    resampler.SetOutputPixelType(source.GetPixelID())
    return resampler.Execute(source)


def resample_channels_like(
    channels: np.ndarray,
    source: Image,
    reference: Image,
    *,
    default_value: float = 0.0,
) -> np.ndarray:
    """Linearly resample a stack of channels (e.g. class probabilities) onto the reference grid.

    One channel at a time, in float32, so peak memory stays at one input and one output channel
    beyond the result.

    Args:
        channels: (C, Z, Y, X) float32 array on the grid of ``source``.
        source: the grid of ``channels``; its voxel values are not used.
        reference: the output grid.
        default_value: value of output voxels outside the source grid.

    Returns:
        (C, Zr, Yr, Xr) float32 array on the reference grid.
    """
    if channels.ndim != 4 or channels.shape[1:] != source.array.shape:
        raise ValueError(f"channels of shape {channels.shape} do not match the source grid {source.array.shape}")
    sitk = sitk_module()
    output = np.empty((channels.shape[0], *reference.array.shape), dtype=np.float32)
    for index, channel in enumerate(channels):
        sitk_channel = sitk.GetImageFromArray(np.ascontiguousarray(channel, dtype=np.float32))
        _set_sitk_grid(sitk_channel, source.spacing_mm, source.origin_lps_mm, source.direction)
        resampled = _resample_sitk(sitk_channel, reference, sitk.sitkLinear, default_value)
        output[index] = sitk.GetArrayViewFromImage(resampled)
    return output


def crop(image: Image, slices_kji: tuple[slice, slice, slice]) -> Image:
    """A copy of a box of ``image`` whose origin moves so every voxel keeps its physical position.

    Args:
        image: the image to crop.
        slices_kji: one slice per array axis (k, j, i); steps other than 1 are not allowed.

    Returns:
        The cropped :class:`Image` (spacing and direction unchanged).
    """
    starts = []
    for axis, (box, length) in enumerate(zip(slices_kji, image.array.shape, strict=True)):
        start, stop, step = box.indices(length)
        if step != 1 or stop <= start:
            raise ValueError(f"crop axis {axis}: {box} selects no voxels or has a step (shape {length})")
        starts.append(start)
    origin = image.ijk_to_lps(np.array(starts[::-1], dtype=float))[0]
    return Image(image.array[tuple(slices_kji)].copy(), image.spacing_mm, tuple(origin), image.direction)


def bounding_box_in(
    target: Image, source: Image, mask_kji: np.ndarray, margin_mm: float
) -> tuple[slice, slice, slice] | None:
    """Index box of ``target`` covering the physical bounding box of a mask on ``source`` plus a margin.

    The mask's voxel box (outer faces), widened by ``margin_mm`` along each source axis, is mapped to
    the target's continuous indices; the box of the target voxels it touches is returned, clipped to
    the target. Inference uses it to resample probabilities back only around the liver.

    Args:
        target: the grid to index into (e.g. the input CT).
        source: the grid of the mask (e.g. the model grid).
        mask_kji: (Z, Y, X) bool array on ``source``'s grid.
        margin_mm: extra physical margin on every side, millimetres (>= 0).

    Returns:
        ``(slice_k, slice_j, slice_i)`` into ``target.array``, or None when the mask is empty or its
        box does not overlap the target.
    """
    if mask_kji.shape != source.array.shape:
        raise ValueError(f"mask of shape {mask_kji.shape} does not match the source grid {source.array.shape}")
    if margin_mm < 0:
        raise ValueError(f"margin must be >= 0 mm, got {margin_mm}")
    # Per-axis projections avoid np.nonzero's index arrays (24 bytes per mask voxel).
    occupied_kji = [np.flatnonzero(mask_kji.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if occupied_kji[0].size == 0:
        return None
    margin_ijk = margin_mm / np.asarray(source.spacing_mm)
    low_ijk = np.array([indices[0] for indices in occupied_kji[::-1]]) - 0.5 - margin_ijk
    high_ijk = np.array([indices[-1] for indices in occupied_kji[::-1]]) + 0.5 + margin_ijk
    in_target = target.lps_to_ijk(source.ijk_to_lps(corner_points(low_ijk, high_ijk)))
    # Voxel n covers continuous indices [n - 0.5, n + 0.5].
    first = np.maximum(np.floor(in_target.min(axis=0) + 0.5).astype(int), 0)
    last = np.minimum(np.ceil(in_target.max(axis=0) - 0.5).astype(int), np.asarray(target.size_ijk) - 1)
    if np.any(last < first):
        return None
    return tuple(slice(int(first[a]), int(last[a]) + 1) for a in (2, 1, 0))  # type: ignore[return-value]


def describe_grid(image: Image) -> str:
    """One line naming size, spacing, origin and direction, for log messages and errors."""
    spacing = ", ".join(f"{s:.3g}" for s in image.spacing_mm)
    origin = ", ".join(f"{o:.1f}" for o in image.origin_lps_mm)
    axis_aligned = np.allclose(np.abs(image.direction), np.round(np.abs(image.direction)), atol=1e-5)
    orientation = "axis-aligned" if axis_aligned else "oblique"
    return f"size {image.size_ijk}, spacing ({spacing}) mm, origin LPS ({origin}) mm, {orientation}"
