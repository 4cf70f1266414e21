"""Where the scanner's reconstruction circle cuts the liver: a cut that no face of the image grid shows.

A CT slice is reconstructed inside a circle (the scan field of view); most scanners fill the corners outside it
with a padding value far below air (-2048, -3024 HU). A liver that reaches the circle goes on beyond the image
although its box touches no face of the grid, and its volume is then too small in silence. Where the padding is
-1024 HU, as low as air, the circle cannot be told from the air around the patient and nothing is found.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lvt.image import PATIENT_SIDES_LPS, Image
from lvt.measure.region import LabelRegion

PADDING_BELOW_HU = -1500.0  # below any tissue or air a scanner reconstructs (air is about -1000 HU)


def padding_value(ct: Image) -> float | None:
    """The value outside the reconstruction circle, when the scanner wrote one below air into the slice corners.

    Looked up in the in-plane corners of every slice (where the circle leaves the square grid), so it costs
    four columns, not a pass over the volume.
    """
    corners = np.stack([ct.array[:, 0, 0], ct.array[:, 0, -1], ct.array[:, -1, 0], ct.array[:, -1, -1]])
    lowest = float(corners.min())
    if lowest > PADDING_BELOW_HU or np.mean(corners.min(axis=0) == lowest) < 0.5:
        return None
    return lowest


def field_of_view_cut_sides(ct: Image, labels: Image) -> tuple[str, ...]:
    """The patient side ("right", "posterior"...) where the liver touches the padding outside the circle; () if none.

    Args:
        ct: the CT the labels were made from, on the same grid.
        labels: the exclusive label map (every nonzero voxel is liver).

    Only the liver's box plus one voxel is read. The side is the patient direction from the liver's centre to
    the centre of its voxels that touch the padding.
    """
    padding = padding_value(ct) if ct.same_grid(labels) else None
    region = LabelRegion.of(labels.array)
    if padding is None or region.box is None:
        return ()
    box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(region.box, ct.array.shape,
                                                                            strict=True))
    liver = labels.array[box] > 0
    contact = liver & ndimage.binary_dilation(ct.array[box] <= padding + 0.5)
    if not contact.any():
        return ()
    towards_kji = np.subtract(ndimage.center_of_mass(contact), ndimage.center_of_mass(liver))
    towards_lps = ct.direction @ (towards_kji[::-1] * np.asarray(ct.spacing_mm))
    axis = int(np.argmax(np.abs(towards_lps)))
    return (PATIENT_SIDES_LPS[axis][int(towards_lps[axis] > 0)],)
