"""The NIfTI header, read by us because ITK reads parts of it in ways that give a wrong answer in silence.

ITK takes a zero voxel size as 1 mm, turns a negative one into a flipped axis (the standard says the
sign is ignored and orientation comes from the qform or sform), and replaces NaN and infinite voxels
of float data by 0. This module parses the fields that decide those cases, for NIfTI-1 and NIfTI-2.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvt.errors import InputError

NIFTI1_SIZE = 348
NIFTI2_SIZE = 540
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])

# NIfTI datatype code -> numpy type (without byte order); the float ones are scanned for NaN/inf.
DATATYPES = {
    2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8",
}


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI header that decide geometry and the size of the voxel data."""

    byte_order: str  # "<" or ">"
    dims: tuple[int, ...]  # dim[1..dim[0]]
    datatype: int
    bitpix: int
    pixdim: tuple[float, ...]  # pixdim[0..7]; pixdim[0] is qfac
    vox_offset: int
    qform_code: int
    sform_code: int
    quatern: tuple[float, ...]  # quatern_b, c, d, qoffset_x, y, z
    srow: np.ndarray  # (3, 4), RAS

    @property
    def voxel_count(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64))

    @property
    def data_bytes(self) -> int:
        return self.voxel_count * self.bitpix // 8

    def float_dtype(self) -> np.dtype | None:
        """The numpy dtype of float voxel data (which may hold NaN/inf), else None."""
        code = DATATYPES.get(self.datatype)
        return np.dtype(self.byte_order + code) if code in ("f4", "f8") else None


def header_size(data: bytes) -> int | None:
    """348 (NIfTI-1) or 540 (NIfTI-2) from a file's first bytes, in either byte order; else None."""
    for order in ("<", ">"):
        if len(data) >= 4 and struct.unpack_from(order + "i", data)[0] in (NIFTI1_SIZE, NIFTI2_SIZE):
            return struct.unpack_from(order + "i", data)[0]
    return None


def parse_header(data: bytes) -> NiftiHeader | None:
    """The header from the first bytes of a single-file NIfTI (decompressed), or None for anything else."""
    for order in ("<", ">"):
        if len(data) >= NIFTI1_SIZE and struct.unpack_from(order + "i", data)[0] == NIFTI1_SIZE:
            return _parse_nifti1(data, order) if data[344:348] == b"n+1\0" else None
        if len(data) >= NIFTI2_SIZE and struct.unpack_from(order + "i", data)[0] == NIFTI2_SIZE:
            return _parse_nifti2(data, order) if data[4:8] == b"n+2\0" else None
    return None


def _parse_nifti1(data: bytes, order: str) -> NiftiHeader:
    dim = struct.unpack_from(order + "8h", data, 40)
    datatype, bitpix = struct.unpack_from(order + "2h", data, 70)
    qform, sform = struct.unpack_from(order + "2h", data, 252)
    srow = np.array(struct.unpack_from(order + "12f", data, 280), dtype=float).reshape(3, 4)
    return NiftiHeader(
        order, tuple(dim[1 : 1 + max(0, min(dim[0], 7))]), datatype, bitpix,
        struct.unpack_from(order + "8f", data, 76), int(struct.unpack_from(order + "f", data, 108)[0]),
        qform, sform, struct.unpack_from(order + "6f", data, 256), srow,
    )


def _parse_nifti2(data: bytes, order: str) -> NiftiHeader:
    datatype, bitpix = struct.unpack_from(order + "2h", data, 12)
    dim = struct.unpack_from(order + "8q", data, 16)
    qform, sform = struct.unpack_from(order + "2i", data, 344)
    srow = np.array(struct.unpack_from(order + "12d", data, 400), dtype=float).reshape(3, 4)
    return NiftiHeader(
        order, tuple(dim[1 : 1 + max(0, min(dim[0], 7))]), datatype, bitpix,
        struct.unpack_from(order + "8d", data, 104), struct.unpack_from(order + "q", data, 168)[0],
        qform, sform, struct.unpack_from(order + "6d", data, 352), srow,
    )


def check_voxel_size(path: Path, header: NiftiHeader) -> None:
    """Refuse a zero or non-finite voxel size: ITK would read it as 1 mm, a liver several times too small."""
    for axis, size in enumerate(header.pixdim[1 : 1 + min(3, len(header.dims))]):
        if not np.isfinite(size) or size == 0.0:
            raise InputError(
                path, f"has a voxel size of {size:g} mm along axis {'ijk'[axis]} in its header "
                f"(NIfTI pixdim[{axis + 1}]); the real voxel size is unknown, so no volume can be measured"
            )


def standard_geometry(path: Path, header: NiftiHeader) -> tuple[np.ndarray, np.ndarray] | None:
    """The (3x3 IJK-to-LPS matrix, LPS origin) the standard gives when a voxel size is negative, else None.

    The standard takes the voxel size as positive; orientation comes from the qform (its quaternion
    and qfac), else from the sform. Without either, the sign cannot be placed and the file is refused.
    """
    if min(header.pixdim[1:4]) > 0.0:
        return None
    sizes = np.abs(np.asarray(header.pixdim[1:4], dtype=float))
    if header.qform_code > 0:
        qfac = -1.0 if header.pixdim[0] < 0 else 1.0
        matrix = _quaternion_matrix(*header.quatern[:3]) @ np.diag(sizes * [1.0, 1.0, qfac])
        offset = np.asarray(header.quatern[3:], dtype=float)
    elif header.sform_code > 0:
        matrix, offset = header.srow[:, :3], header.srow[:, 3]
    else:
        raise InputError(
            path, f"has a negative voxel size in its header (pixdim {list(header.pixdim[1:4])}) and no qform "
            "or sform to orient it; the orientation of the image is unknown"
        )
    return _LPS_FROM_RAS @ matrix, _LPS_FROM_RAS @ offset


def _quaternion_matrix(b: float, c: float, d: float) -> np.ndarray:
    """The NIfTI qform rotation from its quaternion (b, c, d); a is implied (nifti1.h, method 2)."""
    a = float(np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d))))
    return np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ])
