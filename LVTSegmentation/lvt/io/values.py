"""Checks of a read image's values: finite numbers, not constant, and (for CT) Hounsfield units."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lvt.errors import InputError
from lvt.image import AIR_HU, AIR_THRESHOLD_HU


def replace_nonfinite(path: Path, array: np.ndarray, from_file: np.ndarray | None, *, fill: bool) -> str | None:
    """Refuse NaN/inf voxels, or (``fill``) set them to air in place and return a note saying so.

    Args:
        path: named in the error.
        array: the voxels, float and writable when ``fill``.
        from_file: mask of voxels that were NaN/inf in the file but that the reader turned into
            numbers (ITK reads them as 0 from NIfTI), or None.
        fill: set them to air instead of refusing the image.
    """
    count = 0 if from_file is None else int(np.count_nonzero(from_file))
    if np.issubdtype(array.dtype, np.floating):
        count += sum(int(np.count_nonzero(~np.isfinite(plane))) for plane in array)  # one slice at a time
    if count == 0:
        return None
    if not fill:
        share = " (all of them)" if count >= array.size else f" of {array.size:,}"
        voxels = "voxel" if count == 1 else "voxels"
        raise InputError(path, f"has {count:,} NaN or infinite {voxels}{share}; an image must hold finite numbers")
    for k, plane in enumerate(array):
        bad = ~np.isfinite(plane)
        if from_file is not None:
            bad |= from_file[k]
        plane[bad] = AIR_HU
    return f"{count:,} NaN or infinite {'voxel' if count == 1 else 'voxels'} of the input set to air ({AIR_HU:g} HU)"


def finite_range(path: Path, array: np.ndarray) -> tuple[float, float]:
    """Minimum and maximum, after checking for NaN/inf (NaN propagates through min and max)."""
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        replace_nonfinite(path, array, None, fill=False)
    return low, high


def hounsfield_problem(array: np.ndarray) -> str | None:
    """Why the values do not look like CT Hounsfield units, or None when they do.

    CT shows air near -1000 HU around the body or in the lungs (or the scanner's padding below it).
    A crop without air still has fat below 0 HU and a median near soft tissue. MR, PET, 8-bit
    exports and CT stored without its rescale intercept (air near 0) all fail both tests.
    """
    step = max(1, array.size // 1_000_000)
    low, median, high = np.percentile(array.reshape(-1)[::step], [0.5, 50.0, 99.5])
    has_air = low <= AIR_THRESHOLD_HU
    looks_like_soft_tissue = low < -20.0 and -300.0 <= median <= 300.0 and high - low >= 100.0
    if has_air or looks_like_soft_tissue:
        return None
    return (
        f"values do not look like CT Hounsfield units (0.5th percentile {low:.0f}, median {median:.0f}, "
        f"99.5th percentile {high:.0f}; CT has air near -1000 HU and soft tissue near 0..100 HU). "
        "It may be MR, an 8-bit or rescaled export, or CT stored without its rescale intercept"
    )
