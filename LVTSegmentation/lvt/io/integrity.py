"""Is an image file whole? Checked before ITK reads it, because ITK reads some damaged files in silence.

ITK reads a truncated ``.nii.gz`` (or ``.nii``) with the missing slices as 0, and a gzip stream whose
CRC fails (NIfTI, NRRD, compressed MetaImage) as garbage. Here the voxel data is streamed once, in
chunks of 1 MiB (never a second full copy), checking each compressed stream's checksum and that it
holds all the bytes the header announces. NIfTI float data is scanned for NaN/inf on the way, since
ITK turns them into 0.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lvt.errors import InputError
from lvt.io import nifti

CHUNK_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_METAIMAGE_SIZES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


@dataclass(frozen=True)
class VerifiedFile:
    """What the check learnt that ITK hides: the NIfTI header, and where NIfTI float data is NaN/inf."""

    nifti_header: nifti.NiftiHeader | None = None
    nonfinite_mask: np.ndarray | None = None  # bool [k, j, i], only when there are such voxels


def verify_image_file(path: Path) -> VerifiedFile:
    """Check that the voxel data is complete and undamaged, streaming it once.

    Raises:
        InputError: the file is truncated, a compressed stream is damaged, or a NIfTI voxel size is 0.
    """
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _scan_nifti(path, gzipped=name.endswith(".gz"))
    if name.endswith((".nrrd", ".nhdr")):
        verify_nrrd(path)
    elif name.endswith((".mha", ".mhd")):
        _verify_metaimage(path)
    return VerifiedFile()


def _scan_nifti(path: Path, *, gzipped: bool) -> VerifiedFile:
    with path.open("rb") as handle:
        gzipped = gzipped and handle.read(2) == _GZIP_MAGIC  # ITK reads a .nii.gz that is not gzip as is
        handle.seek(0)
        stream = _Stream(_decoded_chunks(path, handle, "gzip" if gzipped else "raw"))
        start = stream.read(nifti.NIFTI1_SIZE)
        if nifti.header_size(start) == nifti.NIFTI2_SIZE:
            start += stream.read(nifti.NIFTI2_SIZE - nifti.NIFTI1_SIZE)
        header = nifti.parse_header(start)
        if header is None:
            return VerifiedFile()  # not a single-file NIfTI: ITK will read it or say why not
        nifti.check_voxel_size(path, header)
        stream.skip(header.vox_offset - stream.position)
        mask = _scan_values(stream, header.float_dtype(), header.voxel_count, header.bitpix // 8)
        if stream.position < header.vox_offset + header.data_bytes:
            raise _truncated(path, max(0, stream.position - header.vox_offset), header.data_bytes)
        stream.drain()
    shape = tuple(reversed(header.dims[:3]))
    if mask is not None and mask.size != int(np.prod(shape)):
        mask = None  # not one 3D volume: refused by the structure check that follows
    return VerifiedFile(header, None if mask is None else mask.reshape(shape))


def _scan_values(stream: _Stream, dtype: np.dtype | None, count: int, itemsize: int) -> np.ndarray | None:
    """Read ``count`` voxels; for float data, the mask of NaN/inf ones (None when there are none)."""
    if dtype is None:
        stream.skip(count * itemsize)
        return None
    mask, done = None, 0
    while done < count:
        wanted = min(count - done, CHUNK_BYTES // itemsize) * itemsize
        piece = stream.read(wanted)
        bad = ~np.isfinite(np.frombuffer(piece, dtype=dtype, count=len(piece) // itemsize))
        if bad.any():
            mask = np.zeros(count, dtype=bool) if mask is None else mask
            mask[done : done + bad.size] = bad
        done += bad.size
        if len(piece) < wanted:
            break
    return mask


def verify_nrrd(path: Path) -> None:
    """A NRRD (``.nrrd``, ``.nhdr`` or Slicer's ``.seg.nrrd``) whose raw or gzip data is complete and undamaged."""
    import nrrd

    with path.open("rb") as handle:
        try:
            header = nrrd.read_header(handle)
        except (nrrd.NRRDError, UnicodeDecodeError, ValueError):
            return  # the reader will refuse it with its own words
        encoding = str(header.get("encoding", "")).lower()
        if encoding not in ("raw", "gzip", "gz") or "line skip" in header or "lineskip" in header:
            return
        data_file = header.get("data file", header.get("datafile"))
        if data_file is None:
            _verify_stream(path, handle, "raw" if encoding == "raw" else "gzip", _nrrd_data_bytes(header))
        elif "%" not in str(data_file) and not str(data_file).upper().startswith("LIST"):
            data_path = (path.parent / str(data_file)).resolve()
            if not data_path.is_file():
                raise InputError(path, f"names a data file {data_file} that does not exist")
            with data_path.open("rb") as data_handle:
                _verify_stream(data_path, data_handle, "raw" if encoding == "raw" else "gzip",
                               _nrrd_data_bytes(header))


# Bytes per sample of every NRRD "type" spelling (NRRD0005 specification, "type:" field).
_NRRD_TYPE_BYTES: dict[str, int] = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
                     "double"), 8),
}


def _nrrd_data_bytes(header: dict) -> int | None:
    """Bytes of the data the header announces; None when it cannot say (unknown type: the reader refuses it)."""
    skip = int(header.get("byte skip", header.get("byteskip", 0)))
    itemsize = _NRRD_TYPE_BYTES.get(str(header.get("type", "")).strip().lower())
    if itemsize is None and str(header.get("type", "")).strip().lower() == "block":
        itemsize = int(header.get("block size", header.get("blocksize", 0))) or None
    if itemsize is None or skip < 0:
        return None
    return int(np.prod(header["sizes"], dtype=np.int64)) * itemsize + skip


def _verify_metaimage(path: Path) -> None:
    fields: dict[str, str] = {}
    with path.open("rb") as handle:
        for raw_line in handle:
            key, _, value = raw_line.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile" or len(fields) > 100:
                break
        data_file = fields.get("ElementDataFile", "")
        if not data_file or "HeaderSize" in fields or data_file.upper().startswith("LIST") or "%" in data_file:
            return
        codec = "zlib" if fields.get("CompressedData", "False").lower() == "true" else "raw"
        expected = _metaimage_data_bytes(fields)
        if data_file.upper() == "LOCAL":
            _verify_stream(path, handle, codec, expected)
            return
    data_path = path.parent / data_file
    if not data_path.is_file():
        raise InputError(path, f"names a data file {data_file} that does not exist")
    with data_path.open("rb") as data_handle:
        _verify_stream(data_path, data_handle, codec, expected)


def _metaimage_data_bytes(fields: dict[str, str]) -> int | None:
    try:
        sizes = [int(n) for n in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        return int(np.prod(sizes, dtype=np.int64)) * channels * _METAIMAGE_SIZES[fields["ElementType"]]
    except (KeyError, ValueError):
        return None


def _verify_stream(path: Path, handle: BinaryIO, codec: str, expected_bytes: int | None) -> None:
    """Decode the rest of an open file; refuse it when damaged or shorter than ``expected_bytes``."""
    stream = _Stream(_decoded_chunks(path, handle, codec))
    stream.drain()
    if expected_bytes is not None and stream.position < expected_bytes:
        raise _truncated(path, stream.position, expected_bytes)


def _decoded_chunks(path: Path, handle: BinaryIO, codec: str) -> Iterator[bytes]:
    """The rest of an open file, decompressed ("gzip", "zlib") or not ("raw"), at most 1 MiB at a time."""
    if codec == "raw":
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk
        return
    wbits = zlib.MAX_WBITS | 16 if codec == "gzip" else zlib.MAX_WBITS
    decoder = zlib.decompressobj(wbits)
    while data := handle.read(CHUNK_BYTES):
        while data:
            try:
                yield decoder.decompress(data, CHUNK_BYTES)
            except zlib.error as error:
                raise _damaged(path, codec, error) from error
            data = decoder.unconsumed_tail
            if decoder.eof:
                data = decoder.unused_data
                if not (codec == "gzip" and data.startswith(_GZIP_MAGIC)):
                    return  # a complete stream; anything after it is padding that no reader uses
                decoder = zlib.decompressobj(wbits)  # the next member of a multi-member gzip file
    if not decoder.eof:
        raise InputError(path, "is truncated: its compressed data ends before the end of the stream")


def _damaged(path: Path, codec: str, error: zlib.error) -> InputError:
    text = str(error)
    if "incorrect data check" in text:
        reason = f"{codec} CRC check failed" if codec == "gzip" else "zlib checksum check failed"
    elif "incorrect length check" in text:
        reason = "gzip length check failed"
    else:
        reason = f"its {codec} data cannot be decompressed ({text})"
    return InputError(path, f"is damaged: {reason}; the file was altered or corrupted after it was written")


def _truncated(path: Path, got: int, expected: int) -> InputError:
    return InputError(path, f"is truncated: it holds {got:,} of the {expected:,} bytes of voxel data its header "
                      "announces")


class _Stream:
    """Exact-size reads from a chunk iterator, counting the bytes consumed."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buffer = chunks, b""
        self.position = 0

    def read(self, size: int) -> bytes:
        """``size`` bytes, fewer only at the end of the data."""
        parts, length = [self._buffer], len(self._buffer)
        while length < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            length += len(chunk)
        data = b"".join(parts)
        self._buffer = data[size:]
        self.position += min(size, len(data))
        return data[:size]

    def skip(self, size: int) -> None:
        """Consume ``size`` bytes (fewer at the end of the data), 1 MiB at a time."""
        while size > 0:
            piece = self.read(min(size, CHUNK_BYTES))
            if not piece:
                return
            size -= len(piece)

    def drain(self) -> None:
        """Consume the rest (checking every checksum on the way)."""
        self.position += len(self._buffer)
        self._buffer = b""
        for chunk in self._chunks:
            self.position += len(chunk)
