"""Reading CT and segmentations: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd),
a DICOM folder, and Slicer's ``.seg.nrrd``.

Reading gives the right image or refuses: everything a user (or a damaged file) can get wrong about
an input becomes an :class:`lvt.errors.InputError` that names the file and the problem, before any
model is loaded. What reading had to do to give the right image (resample a tilted series, fill
NaN) is returned as notes for the report (:func:`read_image_with_info`). ITK's own warnings never
reach the terminal. SimpleITK and slicerio are imported lazily so that nodes without them can still
import the core.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from lvt.errors import InputError
from lvt.grid import describe_grid, image_from_sitk, itk_warnings_off, sitk_module
from lvt.heap import retained_heap
from lvt.image import Image
from lvt.io import nifti
from lvt.io.dicom import DicomSeriesInfo, choose_dicom_series, find_dicom_series, series_geometry
from lvt.io.geometry import check_spacing, rectangular_grid, refuse_sheared
from lvt.io.integrity import VerifiedFile, verify_image_file
from lvt.io.slicer_segmentation import is_slicer_segmentation, read_slicer_segmentation
from lvt.io.values import finite_range, hounsfield_problem, replace_nonfinite
from lvt.labels import NUM_CLASSES

logger = logging.getLogger(__name__)

READABLE_FORMATS = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM folder"
IDENTITY_VALUE_MAP: Mapping[int, int] = MappingProxyType({value: value for value in range(NUM_CLASSES + 1)})


@dataclass(frozen=True)
class ReadInfo:
    """What a report should record about reading a CT.

    Attributes:
        notes: what was done to give the right image (resampling a sheared grid, filling NaN,
            ignoring the sign of a NIfTI voxel size), one sentence each: the report's warnings.
        series: for a DICOM folder, the series that was read.
        other_series: the folder's other series, most slices first.
    """

    notes: tuple[str, ...] = ()
    series: DicomSeriesInfo | None = None
    other_series: tuple[DicomSeriesInfo, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"notes": [...], "dicom_series": {...} | None, "other_dicom_series": [...]}``."""
        return {
            "notes": list(self.notes),
            "dicom_series": None if self.series is None else self.series.to_dict(),
            "other_dicom_series": [info.to_dict() for info in self.other_series],
        }


def read_image(
    path: str | Path, *, series_uid: str | None = None, allow_non_ct: bool = False, fill_nonfinite: bool = False
) -> Image:
    """Read a CT volume as float32 Hounsfield units on its own LPS grid (see :func:`read_image_with_info`)."""
    return read_image_with_info(path, series_uid=series_uid, allow_non_ct=allow_non_ct,
                                fill_nonfinite=fill_nonfinite)[0]


def read_image_with_info(
    path: str | Path, *, series_uid: str | None = None, allow_non_ct: bool = False, fill_nonfinite: bool = False,
    on_header: Callable[[], None] | None = None,
) -> tuple[Image, ReadInfo]:
    """Read a CT volume as float32 Hounsfield units on its own LPS grid, with what the report should say.

    Args:
        path: a NIfTI, NRRD or MetaImage file, or a folder holding a DICOM series.
        series_uid: for a DICOM folder, the SeriesInstanceUID to read; by default the CT series
            with the most slices.
        allow_non_ct: skip the check that the values look like Hounsfield units (the CLI's ``--force``).
        fill_nonfinite: set NaN/inf voxels to air (with a note) instead of refusing the image.
        on_header: called once the header shows a single readable 3D volume, before its voxels are read
            (``lvt segment`` starts loading the model then, so that a file refused on its header never
            loads torch).

    Returns:
        An :class:`Image` with a float32 array ``[k, j, i]``, any orientation and spacing, on a grid
        with perpendicular axes; and the :class:`ReadInfo` (notes, DICOM series).

    Raises:
        InputError: the path is missing or unreadable; the file is truncated or damaged; not a single
            3D scalar volume; a voxel size is zero or implausible; a DICOM series has missing or
            uneven slices, or the series choice is ambiguous; NaN/inf (unless filled) or constant
            values; values that do not look like CT.
    """
    path = _existing_path(path)
    with retained_heap():  # the file's buffers and the float32 copy reuse freed pages
        with itk_warnings_off():
            if path.is_dir():
                image, verified, info = _read_dicom_folder(path, series_uid, on_header)
            else:
                image, verified, file_notes = _read_image_file(path, on_header)
                info = ReadInfo(notes=file_notes)
        notes = list(info.notes)
        array = image.array.astype(np.float32, copy=False)
        fill_note = replace_nonfinite(path, array, verified.nonfinite_mask, fill=fill_nonfinite)
        notes += [fill_note] if fill_note else []
        low, high = finite_range(path, array)
        if low == high:
            raise InputError(path, f"has the same value ({low:g}) in every voxel; the image is empty")
        if not allow_non_ct:
            problem = hounsfield_problem(array)
            if problem:
                raise InputError(path, f"{problem}. If this really is CT in HU, run again with --force.")
        check_spacing(path, image)
        image, grid_note = rectangular_grid(path, image.with_array(array))
        notes += [grid_note] if grid_note else []
        logger.info("Read %s: %s, values %.0f..%.0f", path, describe_grid(image), low, high)
        for note in notes:
            logger.info("%s: %s", path, note)
        return image, ReadInfo(tuple(notes), info.series, info.other_series)


def read_label_image(path: str | Path) -> Image:
    """Read an integer label map (no Hounsfield check; all label values are allowed, even all zero).

    Returns:
        An :class:`Image` with an integer array; float files with whole-number values become uint8
        (or int32 when the values do not fit).

    Raises:
        InputError: missing or unreadable file, a folder, not a single 3D scalar volume, or
            non-integer values.
    """
    path = _existing_path(path)
    if path.is_dir():
        raise InputError(path, "is a folder; a label map must be one image file (NIfTI, NRRD or MetaImage)")
    with itk_warnings_off():
        image, verified, _ = _read_image_file(path)
    replace_nonfinite(path, image.array, verified.nonfinite_mask, fill=False)
    check_spacing(path, image)
    refuse_sheared(path, image)
    return image.with_array(_integer_labels(path, image.array))


def read_segmentation(path: str | Path, value_map: Mapping[int, int] | None = None, *,
                      others_background: bool = False) -> Image:
    """Read a segmentation as the exclusive LVT label map (0 bg, 1 liver parenchyma, 2 vessel, 3 tumor).

    A Slicer ``.seg.nrrd`` is read with slicerio: segments are recognised by terminology (Liver,
    Blood vessel, Neoplasm or any morphologically altered structure), else by a whole word of their
    name (liver; vessel(s); tumor(s), tumour(s), lesion(s)); overlapping layers are combined by the
    priority tumor > vessel > liver. The result is on the grid stored in the file, which Slicer may
    have cropped: resample it onto the CT grid (nearest) before comparing voxel by voxel.
    Any other file is read as a label map and translated by ``value_map``.

    Args:
        path: a ``.seg.nrrd`` or a label map file.
        value_map: label value in the file -> LVT label (0..3); default identity on 0..3.
            Ignored for ``.seg.nrrd`` files.
        others_background: values that ``value_map`` does not list become background (else refused).

    Returns:
        An :class:`Image` with a uint8 array of values 0..3.

    Raises:
        InputError: unreadable file, no recognisable segment, or label values outside the value map.
    """
    path = _existing_path(path)
    if is_slicer_segmentation(path):
        return read_slicer_segmentation(path)
    labels = read_label_image(path)
    value_map = IDENTITY_VALUE_MAP if value_map is None else value_map
    return labels.with_array(_map_label_values(path, labels.array, value_map, others_background))


def _existing_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(path, "does not exist")
    return path


def _read_image_file(path: Path, on_header: Callable[[], None] | None = None
                     ) -> tuple[Image, VerifiedFile, tuple[str, ...]]:
    """Read one image file after checking that it is whole and, from its header, a single 3D scalar volume.

    Returns:
        The image (any dtype), what the integrity check learnt, and notes on what was corrected.
    """
    verified = verify_image_file(path)  # first: ITK reads (or fails on) a damaged file with its own words
    sitk = sitk_module()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(path, f"is not an image file that can be read; expected {READABLE_FORMATS}") from error
    is_dicom = reader.GetImageIOFromFileName(str(path)) == "GDCMImageIO"
    hint = "; for DICOM, give the folder that holds the whole series" if is_dicom else ""
    _check_structure(path, reader.GetSize(), reader.GetNumberOfComponents(), hint)
    if on_header is not None:
        on_header()
    try:
        sitk_image = reader.Execute()
    except RuntimeError as error:
        raise InputError(path, f"could not be read ({_itk_reason(error)})") from error
    if sitk_image.GetDimension() == 4:
        # A 4D file with a single time point (NRRD/MHA keep the trailing 1) is just a volume.
        sitk_image = sitk.Extract(sitk_image, [*sitk_image.GetSize()[:3], 0], [0, 0, 0, 0])
    image = image_from_sitk(sitk_image)
    del sitk_image  # free ITK's copy
    notes: tuple[str, ...] = ()
    if verified.nifti_header is not None:
        image, notes = _nifti_standard_geometry(path, image, verified.nifti_header)
    return image, verified, notes


def _nifti_standard_geometry(path: Path, image: Image, header: nifti.NiftiHeader) -> tuple[Image, tuple[str, ...]]:
    """The grid the NIfTI standard gives where ITK flips an axis of negative voxel size."""
    standard = nifti.standard_geometry(path, header)
    if standard is None:
        return image, ()
    matrix, origin = standard
    if np.allclose(matrix, image.ijk_to_lps_matrix()[:3, :3], atol=1e-4) and np.allclose(
            origin, image.origin_lps_mm, atol=1e-3):
        return image, ()
    sizes = np.linalg.norm(matrix, axis=0)
    source = "qform" if header.qform_code > 0 else "sform"
    note = (f"the NIfTI header gives a negative voxel size (pixdim {[round(p, 4) for p in header.pixdim[1:4]]}); "
            f"as the NIfTI standard says, its sign was ignored and the orientation taken from the {source}")
    return Image(image.array, tuple(sizes), tuple(origin), matrix / sizes), (note,)


def _check_structure(path: Path, size: tuple[int, ...], components: int, hint: str = "") -> None:
    if components > 1:
        raise InputError(
            path, f"has {components} values per voxel (a colour or vector image); a scalar 3D volume is needed"
        )
    if len(size) > 3 and any(n > 1 for n in size[3:]):
        raise InputError(
            path, f"is a {len(size)}D image of size {tuple(size)}; a single 3D volume is needed (one time point)"
        )
    if len(size) < 3 or min(size[:3]) < 2:
        raise InputError(path, f"is a 2D image or a single slice (size {tuple(size)}); a 3D volume is needed{hint}")


def _read_dicom_folder(folder: Path, series_uid: str | None, on_header: Callable[[], None] | None = None
                       ) -> tuple[Image, VerifiedFile, ReadInfo]:
    """The chosen series on the grid its slice positions give (see :func:`lvt.io.dicom.series_geometry`)."""
    sitk = sitk_module()
    found = find_dicom_series(folder)
    if not found:
        raise InputError(folder, f"is a folder without any DICOM series; expected {READABLE_FORMATS}")
    series = choose_dicom_series(folder, found, series_uid)
    logger.info("Reading DICOM series %s from %s", series.describe(), folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    reader.MetaDataDictionaryArrayUpdateOn()
    if on_header is not None:
        on_header()
    try:
        sitk_image = reader.Execute()
    except RuntimeError as error:
        raise InputError(folder, f"DICOM series {series.uid} could not be read ({_itk_reason(error)})") from error
    _check_structure(folder, sitk_image.GetSize(), sitk_image.GetNumberOfComponentsPerPixel())

    def tag(index: int, key: str) -> str:
        return reader.GetMetaData(index, key).strip() if reader.HasMetaDataKey(index, key) else ""

    geometry = series_geometry(folder, series, tag, sitk_image.GetSpacing()[:2])
    image = image_from_sitk(sitk_image)
    del sitk_image
    if geometry is not None:
        matrix, origin = geometry
        sizes = np.linalg.norm(matrix, axis=0)
        image = Image(image.array, tuple(sizes), tuple(origin), matrix / sizes)
    others = tuple(info for info in found if info.uid != series.uid)
    return image, VerifiedFile(), ReadInfo(series=series, other_series=others)


def _integer_labels(path: Path, array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        return array
    low, high = finite_range(path, array)
    if not np.array_equal(array, np.round(array)):
        raise InputError(path, "has non-integer values; a label map holds whole-number labels")
    dtype = np.uint8 if low >= 0 and high <= 255 else np.int32
    return array.astype(dtype)


def _map_label_values(path: Path, array: np.ndarray, value_map: Mapping[int, int],
                      others_background: bool = False) -> np.ndarray:
    """Translate file label values to LVT labels with a lookup table, one slice at a time (bounded memory)."""
    if any(not 0 <= target <= NUM_CLASSES for target in value_map.values()):
        raise ValueError(f"value map targets must be LVT labels 0..{NUM_CLASSES}, got {value_map}")
    present = np.unique(array)
    unknown = [] if others_background else sorted(int(v) for v in present if int(v) not in value_map)
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:20]) + (", ..." if len(unknown) > 20 else "")
        raise InputError(
            path, f"has label values {shown} that the value map does not cover "
            f"(map {dict(value_map)}); give a value map for every label value in the file"
        )
    offset = int(present.min())
    lookup = np.zeros(int(present.max()) - offset + 1, dtype=np.uint8)
    for value, target in value_map.items():
        if offset <= value < offset + lookup.size:
            lookup[value - offset] = target
    output = np.empty(array.shape, dtype=np.uint8)
    for k, plane in enumerate(array):
        output[k] = lookup[plane.astype(np.int64) - offset]
    return output


def _itk_reason(error: BaseException) -> str:
    """The reason in an ITK exception (its last non-empty line), in words where ITK's are obscure."""
    text = str(error)
    if "Zero-valued spacing" in text:
        return "its header gives a voxel size of 0 mm, so the real voxel size is unknown"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
