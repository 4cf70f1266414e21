"""Checks of a read image's grid: plausible voxel sizes, and a rectangular grid (resampled when sheared).

A grid whose axes are not perpendicular (DICOM gantry tilt, a sheared NRRD or MetaImage header)
holds correct voxels, but every later step assumes perpendicular axes: a voxel's volume would be the
product of its spacings (too large by 1/cos of the tilt) and shapes would be skewed. Such an image is
resampled once, here, onto a rectangular grid, as Slicer does for tilted series.
"""

from __future__ import annotations

import numpy as np

from lvt.errors import InputError
from lvt.grid import canonical_grid, resample_like
from lvt.image import AIR_HU, Image, corner_points

MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
# A shear that moves no voxel by more than this fraction of the smallest voxel size is rounding noise.
SHEAR_TOLERANCE = 0.1
AXIS_NAMES = ("i (along a row)", "j (along a column)", "k (between slices)")


def check_spacing(path: object, image: Image) -> None:
    """Refuse voxel sizes no CT has: a wrong header would scale every volume by the same wrong factor."""
    sizes = np.linalg.norm(image.direction @ np.diag(image.spacing_mm), axis=0)  # columns may not be unit
    for axis, size in enumerate(sizes):
        if not MIN_SPACING_MM <= size <= MAX_SPACING_MM:
            raise InputError(
                path, f"has a voxel size of {size:.4g} mm along axis {AXIS_NAMES[axis]}; CT voxels are "
                f"{MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm, so the size in its header is wrong and no volume "
                "could be trusted"
            )


def rectangular_grid(path: object, image: Image) -> tuple[Image, str | None]:
    """The image on a grid with perpendicular axes, and a note when it had to be resampled.

    The first axis keeps its direction, the second stays in the plane of the first two (the slice
    plane) and the third becomes its normal; spacings are the distances between the resulting
    planes, so a voxel's volume is unchanged. The new grid covers the whole region of the old one,
    values are interpolated linearly and the space around it is air.

    Raises:
        InputError: the axes are (nearly) parallel, so the image is not a volume.
    """
    matrix = image.direction @ np.diag(image.spacing_mm)
    q, spacing, drift_mm = _shear(path, image)
    if drift_mm <= SHEAR_TOLERANCE * spacing.min():
        lengths = np.linalg.norm(matrix, axis=0)  # a header may give direction columns that are not unit
        if np.allclose(lengths, image.spacing_mm, rtol=1e-6):
            return image, None
        return Image(image.array, tuple(lengths), image.origin_lps_mm, matrix / lengths), None
    grid = canonical_grid(image, spacing, direction=q)
    resampled = resample_like(image, grid, interpolation="linear", default_value=AIR_HU)
    cosines = np.clip(np.sum(matrix * q, axis=0) / np.linalg.norm(matrix, axis=0), -1.0, 1.0)
    angle = float(np.degrees(np.arccos(cosines)).max())
    note = (
        f"the voxel grid of the input is sheared: its axes are up to {angle:.1f} degrees from perpendicular "
        "(a gantry tilt or a non-orthogonal header). It was resampled onto a rectangular grid with the same "
        f"slice plane ({'x'.join(str(n) for n in grid.size_ijk)} voxels of "
        f"{', '.join(f'{s:.3g}' for s in spacing)} mm, linear interpolation, air outside), as Slicer does"
    )
    return resampled, note


def refuse_sheared(path: object, image: Image) -> None:
    """Refuse a label map on a sheared grid: its volumes would be wrong, and nearest resampling alters it."""
    _, spacing, drift_mm = _shear(path, image)
    if drift_mm > SHEAR_TOLERANCE * spacing.min():
        raise InputError(path, f"has a sheared voxel grid (axes not perpendicular; voxels up to {drift_mm:.1f} mm "
                         "off a rectangular grid), on which volumes cannot be measured; resample it onto the "
                         "rectangular grid of its CT as read by lvt")


def _shear(path: object, image: Image) -> tuple[np.ndarray, np.ndarray, float]:
    """Perpendicular axes (QR: the first axis kept, the second in the plane of the first two), their
    spacings, and how far (mm) the farthest voxel centre lies from the rectangular grid they make."""
    q, r = np.linalg.qr(image.direction @ np.diag(image.spacing_mm))
    signs = np.where(np.diag(r) < 0, -1.0, 1.0)
    q, r = q * signs, signs[:, None] * r  # now the diagonal of r is positive
    spacing = np.diag(r).copy()
    if spacing.min() < 1e-3 * spacing.max():
        raise InputError(path, "has a voxel grid whose axes are (nearly) parallel; it is not a 3D volume")
    corners = corner_points((0.0, 0.0, 0.0), [n - 1 for n in image.size_ijk])
    drift_mm = float(np.linalg.norm(corners @ (r - np.diag(spacing)).T, axis=1).max())
    return q, spacing, drift_mm

