"""Reading CT (files and DICOM folders), input validation, label maps, and .seg.nrrd in and out."""

from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from conftest import SHARED_DATA

from lvt import io
from lvt.errors import InputError
from lvt.grid import image_from_sitk
from lvt.image import Image, ijk_to_ras_matrix
from lvt.labels import STRUCTURES

DATA = SHARED_DATA
EXAMPLE = DATA / "totalsegmentator_example"
OBLIQUE = np.array([[0.9, -0.3, 0.3146], [0.3, 0.9539, -0.0094], [-0.3146, 0.0094, 0.9492]])


def orthonormal(matrix: np.ndarray) -> np.ndarray:
    """The nearest rotation-like matrix (keeps the determinant's sign)."""
    u, _, vt = np.linalg.svd(matrix)
    return u @ vt


def ct_like(shape: tuple[int, int, int] = (6, 20, 24)) -> np.ndarray:
    """Air at -1000 HU around an ellipse of soft tissue at 40 HU, with noise."""
    _, y, x = np.indices(shape)
    body = ((y - shape[1] / 2) / (shape[1] / 3)) ** 2 + ((x - shape[2] / 2) / (shape[2] / 3)) ** 2 < 1
    noise = np.random.default_rng(0).normal(0.0, 10.0, size=shape)
    return np.where(body, 40.0, -1000.0) + noise


def oblique_image(array: np.ndarray) -> Image:
    direction = orthonormal(OBLIQUE) @ np.diag([1.0, -1.0, 1.0])
    return Image(array, (0.7, 0.9, 2.5), (-120.5, 33.25, 410.0), direction)


def write_sitk(array: np.ndarray, path: Path, *, is_vector: bool = False) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=is_vector), str(path))
    return path


def write_dicom_series(folder: Path, array: np.ndarray, uid: str, modality: str, description: str) -> None:
    """A minimal DICOM series (one file per slice) as a scanner export would lay it out."""
    volume = sitk.GetImageFromArray(array.astype(np.int16))
    volume.SetSpacing((0.8, 0.8, 2.5))
    volume.SetOrigin((-10.0, 5.0, 100.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{uid}.{k + 1}",
            "0008|0060": modality, "0008|103e": description, "0020|000d": "1.2.826.0.1.99",
            "0020|000e": uid, "0020|0013": str(k + 1), "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": "\\".join(str(v) for v in position),
        }
        plane = volume[:, :, k]
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid}_{k:03d}.dcm"))
        writer.Execute(plane)


# --- reading CT and its validation --------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_write_then_read_keeps_oblique_grid_and_values(tmp_path: Path, suffix: str) -> None:
    image = oblique_image(ct_like().astype(np.float32))
    path = tmp_path / f"ct{suffix}"
    io.write_image(image, path)
    back = io.read_image(path)
    assert back.array.dtype == np.float32
    assert back.same_grid(image)
    np.testing.assert_allclose(back.array, image.array, atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_write_image_keeps_dtype(tmp_path: Path, dtype: type) -> None:
    path = tmp_path / "labels.nii.gz"
    io.write_image(oblique_image(np.arange(6 * 7 * 8).reshape(6, 7, 8).astype(dtype) % 5), path)
    assert sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))).dtype == dtype


def test_write_image_replaces_existing_file_and_rejects_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "ct.nrrd"
    io.write_image(oblique_image(np.zeros((3, 4, 5), np.int16)), path)
    io.write_image(oblique_image(np.ones((3, 4, 5), np.int16)), path)
    assert io.read_label_image(path).array.min() == 1
    with pytest.raises(InputError, match=r"\.nii\.gz"):
        io.write_image(oblique_image(np.zeros((3, 4, 5), np.int16)), tmp_path / "ct.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd"]


def test_failed_write_leaves_target_untouched_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.nii"
    target.write_bytes(b"old")

    def fail(temp: Path) -> None:
        temp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.write._write_atomically(target, ".nii", fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii"]


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as caught:
        io.read_image(tmp_path / "nothing.nii.gz")
    assert caught.value.path == tmp_path / "nothing.nii.gz"


@pytest.mark.parametrize("name", ["notes.txt", "broken.nii.gz"])
def test_file_that_is_not_an_image(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not an image" * 20)
    with pytest.raises(InputError, match=r"not an image file|could not be read"):
        io.read_image(path)


def test_2d_image(tmp_path: Path) -> None:
    path = write_sitk(ct_like()[0].astype(np.int16), tmp_path / "slice.nii.gz")
    with pytest.raises(InputError, match="2D image or a single slice"):
        io.read_image(path)


def test_single_slice_volume(tmp_path: Path) -> None:
    path = write_sitk(ct_like()[:1].astype(np.int16), tmp_path / "one.nrrd")
    with pytest.raises(InputError, match=r"single slice \(size \(24, 20, 1\)\)"):
        io.read_image(path)


def test_4d_image(tmp_path: Path) -> None:
    frames = [sitk.GetImageFromArray(ct_like().astype(np.int16)) for _ in range(3)]
    path = tmp_path / "series.nrrd"
    sitk.WriteImage(sitk.JoinSeries(frames), str(path))
    with pytest.raises(InputError, match="4D image"):
        io.read_image(path)


def test_4d_image_with_one_time_point_is_a_volume(tmp_path: Path) -> None:
    path = tmp_path / "single_frame.nrrd"
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(ct_like().astype(np.int16))]), str(path))
    assert io.read_image(path).array.shape == (6, 20, 24)


def test_multi_component_image(tmp_path: Path) -> None:
    rgb = np.repeat(ct_like()[..., None], 3, axis=-1).astype(np.int16)
    path = write_sitk(rgb, tmp_path / "rgb.mha", is_vector=True)
    with pytest.raises(InputError, match="3 values per voxel"):
        io.read_image(path)


NOT_CT = {
    "mr": np.abs(np.random.default_rng(1).normal(800.0, 400.0, size=(6, 20, 24))),
    "8bit": np.random.default_rng(2).integers(0, 256, size=(6, 20, 24)).astype(np.uint8),
    "no_intercept": ct_like() + 1024.0,
    "z_scored": np.random.default_rng(3).normal(0.0, 1.0, size=(6, 20, 24)),
}


@pytest.mark.parametrize("kind", sorted(NOT_CT))
def test_values_that_are_not_hounsfield_units(tmp_path: Path, kind: str) -> None:
    array = NOT_CT[kind]
    path = write_sitk(array.astype(array.dtype if array.dtype == np.uint8 else np.float32), tmp_path / "x.nrrd")
    with pytest.raises(InputError, match=r"do not look like CT Hounsfield units.*--force"):
        io.read_image(path)
    assert io.read_image(path, allow_non_ct=True).array.dtype == np.float32


def test_soft_tissue_crop_without_air_is_accepted_as_ct(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    crop = np.where(rng.random((6, 20, 24)) < 0.1, -100.0, 60.0) + rng.normal(0.0, 15.0, (6, 20, 24))
    path = write_sitk(crop.astype(np.int16), tmp_path / "liver_crop.nii.gz")
    assert io.read_image(path).array.mean() == pytest.approx(crop.astype(np.int16).mean(), abs=0.01)


def test_constant_image(tmp_path: Path) -> None:
    path = write_sitk(np.full((6, 20, 24), -1024, np.int16), tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match=r"same value \(-1024\) in every voxel"):
        io.read_image(path, allow_non_ct=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_values(tmp_path: Path, bad: float) -> None:
    array = ct_like().astype(np.float32)
    array[2, 3, 4] = bad
    path = write_sitk(array, tmp_path / "bad.nrrd")
    with pytest.raises(InputError, match="NaN or infinite"):
        io.read_image(path, allow_non_ct=True)


# --- DICOM folders ------------------------------------------------------------------------------


def test_dicom_folder_picks_the_ct_series_with_most_slices(tmp_path: Path) -> None:
    array = np.round(ct_like((5, 8, 9)))
    write_dicom_series(tmp_path, array, "1.2.826.0.1.99.1", "CT", "CT small")
    write_dicom_series(tmp_path, array[:4] + 7, "1.2.826.0.1.99.2", "CT", "CT fewer")
    write_dicom_series(tmp_path, np.abs(ct_like((7, 8, 9))), "1.2.826.0.1.99.3", "MR", "MR more slices")
    series = io.find_dicom_series(tmp_path)
    assert [(s.uid[-1], s.modality, s.num_slices) for s in series] == [("3", "MR", 7), ("1", "CT", 5), ("2", "CT", 4)]
    image = io.read_image(tmp_path)
    np.testing.assert_array_equal(image.array, array)
    assert image.spacing_mm == pytest.approx((0.8, 0.8, 2.5))
    assert image.origin_lps_mm == pytest.approx((-10.0, 5.0, 100.0))
    np.testing.assert_array_equal(io.read_image(tmp_path, series_uid="1.2.826.0.1.99.2").array, array[:4] + 7)


def test_dicom_folder_with_tied_ct_series_asks_for_a_choice(tmp_path: Path) -> None:
    array = np.round(ct_like((4, 8, 9)))
    write_dicom_series(tmp_path, array, "1.2.826.0.1.99.1", "CT", "arterial")
    subfolder = tmp_path / "series2"  # series in subfolders are found too
    subfolder.mkdir()
    write_dicom_series(subfolder, array + 3, "1.2.826.0.1.99.2", "CT", "venous")
    with pytest.raises(InputError, match=r"2 CT series of 4 slices.*--series") as caught:
        io.read_image(tmp_path)
    message = str(caught.value)
    assert "1.2.826.0.1.99.1 [CT, 'arterial', 4 slices]" in message
    assert "1.2.826.0.1.99.2 [CT, 'venous', 4 slices]" in message
    np.testing.assert_array_equal(io.read_image(tmp_path, series_uid="1.2.826.0.1.99.2").array, array + 3)


def test_dicom_folder_without_ct(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, np.abs(ct_like((4, 8, 9))), "1.2.826.0.1.99.5", "MR", "T1")
    with pytest.raises(InputError, match=r"no CT series.*1\.2\.826\.0\.1\.99\.5 \[MR, 'T1', 4 slices\]"):
        io.read_image(tmp_path)


def test_dicom_folder_unknown_series_and_empty_folder(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, np.round(ct_like((4, 8, 9))), "1.2.826.0.1.99.6", "CT", "CT")
    with pytest.raises(InputError, match=r"no DICOM series with UID 9\.9\.9"):
        io.read_image(tmp_path, series_uid="9.9.9")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="without any DICOM series"):
        io.read_image(empty)


def test_single_dicom_file_points_to_the_folder(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, np.round(ct_like((3, 8, 9))), "1.2.826.0.1.99.7", "CT", "CT")
    with pytest.raises(InputError, match="give the folder"):
        io.read_image(next(tmp_path.glob("*.dcm")))


# --- real files (skipped where shared/data is absent) -------------------------------------------


def test_real_nifti_with_flipped_axes() -> None:
    path = EXAMPLE / "example_ct.nii.gz"
    if not path.exists():
        pytest.skip("shared/data/totalsegmentator_example is absent")
    image = io.read_image(path)
    assert image.array.shape == (112, 101, 122) and image.array.dtype == np.float32
    np.testing.assert_allclose(image.direction, np.diag([-1.0, -1.0, 1.0]))
    assert image.spacing_mm == pytest.approx((3.0, 3.0, 3.0))
    assert image.origin_lps_mm == pytest.approx((177.96, -11.32, 94.30), abs=0.01)
    assert image.array.min() == pytest.approx(-1207.0)


def test_real_dicom_folder() -> None:
    folder = EXAMPLE / "example_ct_dicom"
    if not folder.is_dir():
        pytest.skip("shared/data/totalsegmentator_example/example_ct_dicom is absent")
    (series,) = io.find_dicom_series(folder)
    assert (series.modality, series.description, series.num_slices) == ("CT", "CT Body 3.0", 20)
    image = io.read_image(folder)
    assert image.size_ijk == (512, 512, 20)
    assert image.spacing_mm == pytest.approx((0.977, 0.977, 2.0), abs=1e-3)
    assert image.origin_lps_mm == pytest.approx((-249.51, -437.51, -804.5), abs=0.01)
    np.testing.assert_allclose(image.direction, np.eye(3))
    assert (image.array.min(), image.array.max()) == (-1024.0, 1839.0)


def test_real_ircadb_geometry() -> None:
    path = DATA / "ircadb01_17" / "ircadb01_17_ct.nii.gz"
    if not path.exists():
        pytest.skip("shared/data/ircadb01_17 is absent")
    image = io.read_image(path)
    assert image.size_ijk == (512, 512, 119)
    assert image.spacing_mm == pytest.approx((0.743, 0.743, 1.6), abs=1e-3)
    assert image.origin_lps_mm == pytest.approx((0.0, 0.0, 0.0), abs=1e-3)


# --- label maps ---------------------------------------------------------------------------------


def test_read_label_image_accepts_whole_number_floats_and_rejects_fractions(tmp_path: Path) -> None:
    labels = np.zeros((4, 5, 6), np.float32)
    labels[1:3, 2:4, 2:5] = 255.0
    path = write_sitk(labels, tmp_path / "mask.nii.gz")
    result = io.read_label_image(path)
    assert result.array.dtype == np.uint8 and set(np.unique(result.array)) == {0, 255}
    labels[0, 0, 0] = 0.5
    with pytest.raises(InputError, match="non-integer"):
        io.read_label_image(write_sitk(labels, tmp_path / "soft.nii.gz"))
    with pytest.raises(InputError, match="is a folder"):
        io.read_label_image(tmp_path)


def test_read_segmentation_of_label_map_with_value_map(tmp_path: Path) -> None:
    array = np.zeros((4, 5, 6), np.uint8)
    array[1, :, :] = 5
    array[2, :, :] = 63
    array[3, 1:3, 1:3] = 255
    path = write_sitk(array, tmp_path / "total.nii.gz")
    labels = io.read_segmentation(path, {0: 0, 5: 1, 63: 2, 255: 3})
    assert labels.array.dtype == np.uint8
    np.testing.assert_array_equal(labels.array, np.select([array == 5, array == 63, array == 255], [1, 2, 3], 0))
    with pytest.raises(InputError, match="label values 63, 255 that the value map does not cover"):
        io.read_segmentation(path, {0: 0, 5: 1})
    with pytest.raises(InputError, match="label values 5, 63, 255"):
        io.read_segmentation(path)


def test_read_segmentation_of_label_map_identity_default(tmp_path: Path) -> None:
    array = np.random.default_rng(5).integers(0, 4, size=(4, 5, 6)).astype(np.int16)
    labels = io.read_segmentation(write_sitk(array, tmp_path / "labels.nrrd"))
    np.testing.assert_array_equal(labels.array, array)


# --- Slicer segmentations -----------------------------------------------------------------------


def asymmetric_labels() -> Image:
    array = np.zeros((5, 6, 7), np.uint8)
    array[1:4, 1:5, 1:6] = 1
    array[2, 2:4, 2:4] = 2
    array[3, 3, 4] = 3
    array[0, 0, 6] = 3  # a corner that a wrong transpose would move
    return oblique_image(array)


def test_write_segmentation_is_a_slicer_segmentation_on_the_labels_grid(tmp_path: Path) -> None:
    labels = asymmetric_labels()
    path = tmp_path / "segmentation.seg.nrrd"
    io.write_segmentation(labels, path)
    assert [p.name for p in tmp_path.iterdir()] == ["segmentation.seg.nrrd"]
    segmentation = slicerio.read_segmentation(str(path))
    assert segmentation["voxels"].shape == labels.size_ijk
    assert segmentation["voxels"][6, 0, 0] == 3
    np.testing.assert_allclose(segmentation["ijkToLPS"], labels.ijk_to_lps_matrix(), atol=1e-9)
    for segment, structure in zip(segmentation["segments"], STRUCTURES, strict=True):
        assert (segment["id"], segment["name"]) == (structure.segment_name, structure.segment_name)
        assert (segment["labelValue"], segment["layer"]) == (structure.label_value, 0)
        np.testing.assert_allclose(segment["color"], structure.color_float, atol=1e-6)
        assert segment["terminology"]["type"] == list(structure.type)
        assert segment["terminology"]["category"] == list(structure.category)
    # An independent reader (ITK) sees the same grid and voxels.
    itk_view = image_from_sitk(sitk.ReadImage(str(path)))
    assert itk_view.same_grid(labels)
    np.testing.assert_array_equal(itk_view.array, labels.array)
    assert nrrd.read_header(str(path))["space"] == "left-posterior-superior"


def test_segmentation_round_trip(tmp_path: Path) -> None:
    labels = asymmetric_labels()
    path = tmp_path / "seg.seg.nrrd"
    io.write_segmentation(labels, path)
    back = io.read_segmentation(path)
    assert back.same_grid(labels)
    np.testing.assert_array_equal(back.array, labels.array)


def test_write_segmentation_rejects_values_outside_lvt_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"0\.\.3"):
        io.write_segmentation(oblique_image(np.full((3, 4, 5), 4, np.uint8)), tmp_path / "x.seg.nrrd")


def test_read_overlapping_slicer_segments_by_terminology_and_name(tmp_path: Path) -> None:
    grid = oblique_image(np.zeros((6, 7, 8), np.uint8))
    segmentation = slicerio.create_segmentation(grid.size_ijk, grid.ijk_to_lps_matrix())
    liver, vessel, tumor, spleen = (np.zeros(grid.size_ijk, bool) for _ in range(4))  # (i, j, k) masks
    liver[1:7, 1:6, 1:5] = True
    vessel[2:4, 2:4, 1:5] = True
    tumor[3:6, 3:5, 2:4] = True
    spleen[0, 0, :] = True
    neoplasm = {"contextName": "x", "category": ["SCT", "49755003", "Morph"], "type": ["SCT", "108369006", "Neo"]}
    slicerio.add_segment(segmentation, liver, {"id": "a", "name": "LIVER"})
    slicerio.add_segment(segmentation, vessel, {"id": "b", "name": "Hepatic vessels"})
    slicerio.add_segment(segmentation, tumor, {"id": "c", "name": "Segment_1", "terminology": neoplasm})
    slicerio.add_segment(segmentation, spleen, {"id": "d", "name": "Spleen"})
    assert segmentation["voxels"].ndim == 4  # overlapping segments live in several layers
    path = tmp_path / "manual.nrrd"  # recognised by its header, not its name
    slicerio.write_segmentation(str(path), segmentation)
    labels = io.read_segmentation(path)
    expected = np.select([tumor, vessel, liver], [3, 2, 1], 0).transpose(2, 1, 0)
    assert labels.same_grid(grid)
    np.testing.assert_array_equal(labels.array, expected)


def test_slicer_segmentation_without_lvt_segments(tmp_path: Path) -> None:
    grid = oblique_image(np.zeros((3, 4, 5), np.uint8))
    segmentation = slicerio.create_segmentation(grid.size_ijk, grid.ijk_to_lps_matrix())
    slicerio.add_segment(segmentation, np.ones(grid.size_ijk, bool), {"id": "s", "name": "Spleen"})
    path = tmp_path / "other.seg.nrrd"
    slicerio.write_segmentation(str(path), segmentation)
    with pytest.raises(InputError, match=r"no liver, vessel or tumor segment \(segments: \['Spleen'\]\)"):
        io.read_segmentation(path)


def test_slicer_reads_written_segmentation_on_the_labels_grid(tmp_path: Path) -> None:
    """The real MRML storage node (slicer-core wheel) loads our file with names, colours and geometry."""
    slicer = pytest.importorskip("slicer")
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy

    labels = asymmetric_labels()
    path = tmp_path / "segmentation.seg.nrrd"
    io.write_segmentation(labels, path)
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    for structure in STRUCTURES:
        segment = node.GetSegmentation().GetSegment(structure.segment_name)
        assert segment.GetName() == structure.segment_name
        np.testing.assert_allclose(segment.GetColor(), structure.color_float, atol=1e-6)
        labelmap = slicer.vtkOrientedImageData()
        node.GetBinaryLabelmapRepresentation(structure.segment_name, labelmap)
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(matrix)
        ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        np.testing.assert_allclose(ijk_to_ras, ijk_to_ras_matrix(labels), atol=1e-6)
        assert labelmap.GetExtent() == (0, 6, 0, 5, 0, 4)
        voxels = vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(labels.array.shape)
        np.testing.assert_array_equal(voxels > 0, labels.array == structure.label_value)


def test_corrupt_slicer_segmentation(tmp_path: Path) -> None:
    path = tmp_path / "broken.seg.nrrd"
    path.write_bytes(b"not a nrrd file" * 10)
    with pytest.raises(InputError, match="not a readable Slicer segmentation"):
        io.read_segmentation(path)
