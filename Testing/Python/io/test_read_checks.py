"""Reading gives the right image or refuses: damaged files, uneven or tilted DICOM series, sheared grids,
impossible voxel sizes, NaN voxels, ITK's warnings, and the DICOM series recorded for the report."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from lvt import io
from lvt.errors import InputError
from lvt.image import AIR_HU, Image

IOP_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def ct_like(shape: tuple[int, int, int] = (12, 20, 24)) -> np.ndarray:
    """Air around an ellipse of soft tissue at 40 HU, with noise (int16 CT values)."""
    _, y, x = np.indices(shape)
    body = ((y - shape[1] / 2) / (shape[1] / 3)) ** 2 + ((x - shape[2] / 2) / (shape[2] / 3)) ** 2 < 1
    noise = np.random.default_rng(0).normal(0.0, 10.0, size=shape)
    return np.round(np.where(body, 40.0, -1000.0) + noise).astype(np.int16)


def write_ct(path: Path, array: np.ndarray | None = None, spacing: tuple[float, ...] = (0.8, 0.8, 2.5)) -> Path:
    image = sitk.GetImageFromArray(ct_like() if array is None else array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), True)
    return path


def sphere_values(points_lps: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """40 HU inside a sphere and -1000 HU outside, with the fraction of each voxel inside (4x4x4 samples)."""
    return np.where(np.linalg.norm(points_lps - center, axis=-1) <= radius, 40.0, -1000.0)


def sampled_sphere(shape_kji: tuple[int, int, int], matrix: np.ndarray, origin: np.ndarray,
                   center: np.ndarray, radius: float) -> np.ndarray:
    """A sphere rendered on any (even sheared) grid, each voxel the mean of 4x4x4 sub-samples."""
    k, j, i = np.indices(shape_kji, dtype=float)
    total = np.zeros(shape_kji)
    offsets = (np.arange(4) + 0.5) / 4 - 0.5
    for di in offsets:
        for dj in offsets:
            for dk in offsets:
                ijk = np.stack([i + di, j + dj, k + dk], axis=-1)
                total += sphere_values(ijk @ matrix.T + origin, center, radius)
    return total / 64


def sphere_volume_ml(image: Image) -> float:
    return float(np.count_nonzero(image.array > -480.0)) * image.voxel_volume_ml


def write_dicom_slices(folder: Path, planes: np.ndarray, positions: np.ndarray, *, uid: str = "1.2.826.0.1.77.1",
                       description: str = "CT test", spacing: tuple[float, float] = (0.8, 0.8)) -> None:
    """One DICOM file per plane, at the given ImagePositionPatient (LPS, mm), axial orientation."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index, (plane_values, position) in enumerate(zip(planes, positions, strict=True)):
        plane = sitk.GetImageFromArray(plane_values[None].astype(np.int16))
        plane.SetSpacing((*spacing, 1.0))
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{uid}.{index + 1}", "0008|0060": "CT",
            "0008|103e": description, "0020|000d": "1.2.826.0.1.77", "0020|000e": uid,
            "0020|0013": str(index + 1), "0020|0037": "\\".join(str(v) for v in IOP_AXIAL),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid}_{index:03d}.dcm"))
        writer.Execute(plane)


# --- 1. compressed and truncated files ----------------------------------------------------------


def test_truncated_nii_gz_is_refused_not_read_with_zero_slices(tmp_path: Path) -> None:
    path = write_ct(tmp_path / "ct.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="is truncated"):
        io.read_image(path)


def test_gzip_crc_failure_is_refused(tmp_path: Path) -> None:
    path = write_ct(tmp_path / "ct.nii.gz")
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer no longer matches the data
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="is damaged: gzip CRC check failed"):
        io.read_image(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_corrupted_middle_of_compressed_file_is_refused(tmp_path: Path, suffix: str) -> None:
    path = write_ct(tmp_path / f"ct{suffix}", np.tile(ct_like(), (4, 2, 2)))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = np.random.default_rng(7).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="is damaged"):
        io.read_image(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("compressed", [True, False])
def test_truncated_file_is_refused(tmp_path: Path, suffix: str, compressed: bool) -> None:
    path = tmp_path / f"ct{suffix}"
    image = sitk.GetImageFromArray(ct_like())
    sitk.WriteImage(image, str(path), compressed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match="is truncated"):
        io.read_image(path)


@pytest.mark.parametrize(("dtype", "spelling"), [(np.int8, "signed char"), (np.uint16, "unsigned short int"),
                                                (np.int32, "int"), (np.float64, "double"),
                                                (np.int64, "signed long long int")])
def test_raw_nrrd_one_sample_short_is_refused_for_every_type_spelling(tmp_path: Path, dtype: type,
                                                                        spelling: str) -> None:
    path = tmp_path / "ct.nrrd"
    nrrd.write(str(path), np.zeros((6, 7, 8), dtype), {"encoding": "raw", "space": "left-posterior-superior",
                                                       "space directions": np.eye(3), "space origin": np.zeros(3)})
    header, _, data = path.read_bytes().partition(b"\n\n")
    header = b"\n".join(line if not line.startswith(b"type:") else b"type: " + spelling.encode()
                         for line in header.split(b"\n"))
    path.write_bytes(header + b"\n\n" + data[: -np.dtype(dtype).itemsize])
    with pytest.raises(InputError, match="is truncated"):
        io.read_image(path)


def test_whole_compressed_file_in_many_chunks_reads_the_same(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(io.integrity, "CHUNK_BYTES", 997)  # odd chunks split voxels and gzip members
    array = ct_like((8, 30, 40)).astype(np.float32)
    path = write_ct(tmp_path / "ct.nii.gz", array)
    with path.open("ab") as handle:  # a second gzip member, as concatenating tools write
        handle.write(gzip.compress(b""))
    np.testing.assert_array_equal(io.read_image(path).array, array)


def test_damaged_slicer_segmentation_is_refused(tmp_path: Path) -> None:
    labels = Image(np.tile(np.arange(4, dtype=np.uint8), (6, 20, 6)), (1.0, 1.0, 1.0))
    path = tmp_path / "seg.seg.nrrd"
    io.write_segmentation(labels, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 12])
    with pytest.raises(InputError, match=r"is truncated|is damaged"):
        io.read_segmentation(path)


# --- 2. DICOM slice positions -------------------------------------------------------------------


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path: Path) -> None:
    planes = ct_like((10, 8, 9))
    heights = [2.5 * k for k in range(11) if k != 6]
    write_dicom_slices(tmp_path, planes, np.array([(0.0, 0.0, h) for h in heights]))
    with pytest.raises(InputError, match=r"uneven slice spacing: a gap of 5 mm after slice 6 \(at 12\.50 mm"
                                         r".* the others are 2\.5 mm \(a missing slice\?\)"):
        io.read_image(tmp_path)


def test_dicom_series_with_two_slices_at_one_position_is_refused(tmp_path: Path) -> None:
    heights = [0.0, 2.5, 5.0, 5.0, 7.5, 10.0]
    write_dicom_slices(tmp_path, ct_like((6, 8, 9)), np.array([(0.0, 0.0, h) for h in heights]))
    with pytest.raises(InputError, match="slices at the same or out-of-order positions"):
        io.read_image(tmp_path)


def test_dicom_positions_with_rounding_noise_are_accepted(tmp_path: Path) -> None:
    jitter = np.random.default_rng(3).uniform(-0.004, 0.004, size=(8, 3))
    positions = np.array([(-10.0, 5.0, 100.0 + 1.25 * k) for k in range(8)]) + jitter
    write_dicom_slices(tmp_path, ct_like((8, 8, 9)), positions)
    image, info = io.read_image_with_info(tmp_path)
    assert image.spacing_mm == pytest.approx((0.8, 0.8, 1.25), abs=2e-3)
    assert info.notes == ()


# --- 3. gantry tilt and sheared grids -----------------------------------------------------------


def test_tilted_dicom_series_keeps_the_volume_of_a_sphere(tmp_path: Path) -> None:
    """A 20 degree gantry tilt: ITK alone stacks the slices 1/cos(20) = 6.4 % too far apart."""
    step, tilt, radius = 2.5, np.radians(20.0), 20.0
    slice_step = np.array([0.0, step * np.tan(tilt), step])  # each slice shifts along y (gantry tilt)
    matrix = np.column_stack([(0.8, 0.0, 0.0), (0.0, 0.8, 0.0), slice_step])
    origin = np.array([-30.0, -30.0, -30.0])
    center = np.array([0.0, 12.0, 0.0])
    planes = sampled_sphere((24, 110, 76), matrix, origin, center, radius)
    write_dicom_slices(tmp_path, np.round(planes), origin + np.arange(24)[:, None] * slice_step)
    image, info = io.read_image_with_info(tmp_path)
    truth_ml = 4.0 / 3.0 * np.pi * radius**3 / 1000.0
    assert sphere_volume_ml(image) == pytest.approx(truth_ml, rel=0.02)
    np.testing.assert_allclose(image.direction, np.eye(3), atol=1e-9)
    assert image.spacing_mm == pytest.approx((0.8, 0.8, step))
    assert len(info.notes) == 1 and "20.0 degrees" in info.notes[0] and "resampled" in info.notes[0]
    # The sphere stays where it is in the patient.
    inside = np.argwhere(image.array > -480.0)[:, ::-1].astype(float)
    np.testing.assert_allclose(image.ijk_to_lps(inside).mean(axis=0), center, atol=0.3)


def test_sheared_nrrd_keeps_the_volume_of_a_sphere(tmp_path: Path) -> None:
    """Non-orthogonal space directions: ITK keeps them, and the product of spacings overstates the voxel."""
    matrix = np.column_stack([(0.9, 0.0, 0.0), (0.3, 0.9, 0.0), (0.0, 1.2, 2.0)])  # two shears
    origin = np.array([-25.0, -45.0, -25.0])
    center, radius = np.array([10.0, 0.0, 0.0]), 18.0
    array = sampled_sphere((26, 75, 64), matrix, origin, center, radius)
    header = {"space": "left-posterior-superior", "space directions": matrix.T, "space origin": origin,
              "kinds": ["domain"] * 3, "encoding": "gzip"}
    path = tmp_path / "sheared.nrrd"
    nrrd.write(str(path), np.round(array).astype(np.int16).transpose(2, 1, 0).copy(), header)
    image, info = io.read_image_with_info(path)
    assert sphere_volume_ml(image) == pytest.approx(4.0 / 3.0 * np.pi * radius**3 / 1000.0, rel=0.02)
    assert abs(np.linalg.det(image.direction)) == pytest.approx(1.0)
    np.testing.assert_allclose(image.direction.T @ image.direction, np.eye(3), atol=1e-9)
    assert len(info.notes) == 1 and "sheared" in info.notes[0]


def test_oblique_but_rectangular_grid_is_not_resampled(tmp_path: Path) -> None:
    rotation = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))[0]
    image = Image(ct_like().astype(np.float32), (0.7, 0.9, 2.5), (1.0, 2.0, 3.0), rotation)
    path = tmp_path / "oblique.nrrd"
    io.write_image(image, path)
    back, info = io.read_image_with_info(path)
    assert back.same_grid(image) and info.notes == ()


# --- 4. voxel sizes -----------------------------------------------------------------------------


def _patch_nifti_pixdim(path: Path, axis: int, value: float) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into("<f", data, 76 + 4 * axis, value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("value", [0.0, float("nan")])
def test_nifti_with_zero_voxel_size_is_refused(tmp_path: Path, value: float) -> None:
    """ITK reads a pixdim of 0 as 1 mm: a liver of 2.5 mm slices would come out 2.5 times too small."""
    path = write_ct(tmp_path / "ct.nii")
    _patch_nifti_pixdim(path, 3, value)
    with pytest.raises(InputError, match=r"voxel size of (0|nan) mm along axis k .*pixdim\[3\]"):
        io.read_image(path)


@pytest.mark.parametrize(("spacing", "shown"), [((0.8, 0.01, 2.5), r"0\.01 mm along axis j"),
                                                ((0.8, 0.8, 25.0), r"25 mm along axis k")])
def test_implausible_voxel_size_is_refused(tmp_path: Path, spacing: tuple[float, ...], shown: str) -> None:
    path = write_ct(tmp_path / "ct.nrrd", spacing=spacing)
    with pytest.raises(InputError, match=shown):
        io.read_image(path)


def test_zero_spacing_in_metaimage_is_refused_in_words(tmp_path: Path) -> None:
    path = write_ct(tmp_path / "ct.mha")
    text = re.sub(rb"ElementSpacing = [^\n]*", b"ElementSpacing = 0.8 0 2.5", path.read_bytes())
    path.write_bytes(text)
    with pytest.raises(InputError, match="voxel size of 0 mm"):
        io.read_image(path)


def test_negative_nifti_pixdim_is_read_as_the_standard_says(tmp_path: Path) -> None:
    """The sign of pixdim is ignored (orientation comes from the qform); ITK alone flips the axis."""
    path = write_ct(tmp_path / "ct.nii")
    expected = io.read_image(path)
    _patch_nifti_pixdim(path, 3, -2.5)
    image, info = io.read_image_with_info(path)
    assert image.same_grid(expected)
    np.testing.assert_array_equal(image.array, expected.array)
    assert len(info.notes) == 1 and "negative voxel size" in info.notes[0]


# --- 5. NaN and infinite voxels -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_nan_voxels_are_counted_and_refused(tmp_path: Path, suffix: str) -> None:
    """ITK reads NaN and inf in a float NIfTI as 0 HU; they must not become water in silence."""
    array = ct_like().astype(np.float32)
    array[2, 3, 4:7] = [np.nan, np.inf, -np.inf]
    path = write_ct(tmp_path / f"ct{suffix}", array)
    with pytest.raises(InputError, match=r"has 3 NaN or infinite voxels of 5,760"):
        io.read_image(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_nan_voxels_can_be_filled_with_air(tmp_path: Path, suffix: str) -> None:
    array = ct_like().astype(np.float32)
    array[2, 3, 4:6] = np.nan
    image, info = io.read_image_with_info(write_ct(tmp_path / f"ct{suffix}", array), fill_nonfinite=True)
    assert image.array[2, 3, 4] == image.array[2, 3, 5] == AIR_HU
    bad = np.zeros(array.shape, bool)
    bad[2, 3, 4:6] = True
    np.testing.assert_array_equal(image.array[~bad], array[~bad])
    assert info.notes == ("2 NaN or infinite voxels of the input set to air (-1024 HU)",)


def test_all_nan_image_is_not_called_constant_zero(tmp_path: Path) -> None:
    path = write_ct(tmp_path / "ct.nii.gz", np.full((4, 5, 6), np.nan, np.float32))
    with pytest.raises(InputError, match=r"has 120 NaN or infinite voxels \(all of them\)"):
        io.read_image(path, allow_non_ct=True)


def test_nan_in_a_float_nifti_label_map_is_refused(tmp_path: Path) -> None:
    labels = np.zeros((4, 5, 6), np.float32)
    labels[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="1 NaN or infinite voxel "):
        io.read_label_image(write_ct(tmp_path / "labels.nii.gz", labels))


# --- 6. ITK's warnings --------------------------------------------------------------------------


def test_itk_warnings_do_not_reach_the_terminal(tmp_path: Path, capfd) -> None:
    tilted = tmp_path / "tilted"
    write_dicom_slices(tilted, ct_like((6, 8, 9)), np.array([(0.0, 0.7 * k, 2.5 * k) for k in range(6)]))
    missing = tmp_path / "missing"
    write_dicom_slices(missing, ct_like((5, 8, 9)), np.array([(0.0, 0.0, h) for h in (0.0, 2.5, 5.0, 10.0, 12.5)]))
    flipped = write_ct(tmp_path / "ct.nii")
    _patch_nifti_pixdim(flipped, 3, -2.5)  # ITK warns about "unexpected scales in sform"
    capfd.readouterr()
    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    io.read_image(tilted)
    io.read_image(flipped)
    with pytest.raises(InputError, match="uneven slice spacing"):
        io.read_image(missing)
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err + captured.out
    assert sitk.ProcessObject.GetGlobalWarningDisplay() == before


# --- 7. the DICOM series read, and the others ---------------------------------------------------


def test_read_info_names_the_series_read_and_the_others(tmp_path: Path) -> None:
    write_dicom_slices(tmp_path, ct_like((6, 8, 9)), np.array([(0.0, 0.0, 2.0 * k) for k in range(6)]),
                       uid="1.2.826.0.1.77.1", description="venous")
    write_dicom_slices(tmp_path / "scout", ct_like((3, 8, 9)), np.array([(0.0, 0.0, 5.0 * k) for k in range(3)]),
                       uid="1.2.826.0.1.77.2", description="scout")
    image, info = io.read_image_with_info(tmp_path)
    assert image.size_ijk == (9, 8, 6)
    assert info.to_dict() == {
        "notes": [],
        "dicom_series": {"uid": "1.2.826.0.1.77.1", "modality": "CT", "description": "venous", "num_slices": 6},
        "other_dicom_series": [
            {"uid": "1.2.826.0.1.77.2", "modality": "CT", "description": "scout", "num_slices": 3},
        ],
    }
    assert io.read_image_with_info(write_ct(tmp_path / "ct.nrrd"))[1] == io.ReadInfo()


def test_label_map_on_a_sheared_grid_is_refused(tmp_path: Path) -> None:
    directions = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0.8, 2.0]])
    header = {"space": "left-posterior-superior", "space directions": directions,
              "space origin": np.zeros(3), "kinds": ["domain"] * 3, "encoding": "gzip"}
    path = tmp_path / "labels.nrrd"
    nrrd.write(str(path), np.ones((6, 7, 8), np.uint8), header)
    with pytest.raises(InputError, match="sheared voxel grid"):
        io.read_segmentation(path)


def test_on_header_runs_once_before_the_voxels_and_never_for_a_file_refused_on_its_header(tmp_path: Path) -> None:
    """``lvt segment`` starts loading the model from ``on_header``: a refused header must not start it."""
    calls = []
    good = write_ct(tmp_path / "ct.nii.gz")
    image, _ = io.read_image_with_info(good, on_header=lambda: calls.append("header"))
    assert calls == ["header"] and image.array.shape == (12, 20, 24)
    four_components = sitk.Compose(*[sitk.GetImageFromArray(ct_like())] * 4)
    sitk.WriteImage(four_components, str(tmp_path / "rgba.nii.gz"), True)
    with pytest.raises(InputError, match=r"rgba\.nii\.gz"):
        io.read_image_with_info(tmp_path / "rgba.nii.gz", on_header=lambda: calls.append("refused"))
    assert calls == ["header"]
