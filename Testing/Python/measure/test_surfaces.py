"""Tests for lvt.measure.surfaces: closed, outward, correctly placed surfaces; files Slicer reads as LPS; 3D view."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rotation

from lvt.image import Image
from lvt.measure.surface_view import OffscreenRenderingError, check_offscreen_rendering, render_surfaces_png
from lvt.measure.surfaces import SURFACES, extract_surfaces, mask_surface, merge_blocks, write_surfaces

vtk_numpy = pytest.importorskip("vtkmodules.util.numpy_support")




GRIDS = {
    "anisotropic": ((0.7, 0.9, 2.5), np.eye(3)),
    "oblique_flipped": ((0.7, 0.9, 2.5), rotation(2, 30.0) @ np.diag([-1.0, 1.0, -1.0])),
    "tilted_flipped": ((0.8, 0.8, 1.5), rotation(0, 20.0) @ rotation(2, 10.0) @ np.diag([1.0, -1.0, 1.0])),
}


def _grid(shape_kji, spacing_mm, direction) -> Image:
    """Empty grid whose middle voxel sits at LPS (10, -20, 30)."""
    empty = Image(np.zeros(shape_kji, np.uint8), spacing_mm, (0.0, 0.0, 0.0), direction)
    origin = np.array([10.0, -20.0, 30.0]) - empty.ijk_to_lps((np.array(shape_kji[::-1]) - 1) / 2.0)[0]
    return Image(empty.array, spacing_mm, tuple(origin), direction)


def _centres_lps(grid: Image) -> np.ndarray:
    k, j, i = np.indices(grid.array.shape)
    return grid.ijk_to_lps(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*grid.array.shape, 3)


def _ellipsoid(grid: Image, semi_axes_mm, centre=(10.0, -20.0, 30.0)) -> np.ndarray:
    offset = (_centres_lps(grid) - np.asarray(centre)) @ rotation(2, 25.0)
    return np.square(offset / np.asarray(semi_axes_mm)).sum(axis=-1) <= 1.0


def _enclosed_volume_mm3(polydata) -> float:
    from vtkmodules.vtkFiltersCore import vtkMassProperties

    mass = vtkMassProperties()
    mass.SetInputData(polydata)
    mass.Update()
    return mass.GetVolume()


def _signed_volume_mm3(polydata) -> float:
    """Divergence-theorem volume: positive only when the triangles face outward."""
    points = vtk_numpy.vtk_to_numpy(polydata.GetPoints().GetData())
    triangles = vtk_numpy.vtk_to_numpy(polydata.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    a, b, c = (points[triangles[:, n]] for n in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _open_edge_count(polydata) -> int:
    from vtkmodules.vtkFiltersCore import vtkFeatureEdges

    edges = vtkFeatureEdges()
    edges.SetInputData(polydata)
    edges.BoundaryEdgesOn()
    edges.NonManifoldEdgesOn()
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    return edges.GetOutput().GetNumberOfCells()


def _mask_bounds_lps(grid: Image, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box of the voxel extents (all eight corners of every mask voxel)."""
    ijk = np.argwhere(mask)[:, ::-1].astype(float)
    corners = np.array([[a, b, c] for a in (-0.5, 0.5) for b in (-0.5, 0.5) for c in (-0.5, 0.5)])
    points = grid.ijk_to_lps((ijk[:, None, :] + corners[None]).reshape(-1, 3))
    return points.min(axis=0), points.max(axis=0)


@pytest.mark.parametrize("grid_name", list(GRIDS))
@pytest.mark.parametrize("semi_axes_mm", [(20.0, 20.0, 20.0), (26.0, 16.0, 22.0)], ids=["sphere", "ellipsoid"])
def test_surfaces_are_closed_outward_in_place_and_keep_volume(grid_name, semi_axes_mm):
    spacing_mm, direction = GRIDS[grid_name]
    grid = _grid((34, 70, 80), spacing_mm, direction)
    mask = _ellipsoid(grid, semi_axes_mm)
    labels = grid.with_array(mask.astype(np.uint8) * 3)
    surfaces = extract_surfaces(labels)
    assert set(surfaces) == {"liver", "tumors"}  # no vessel voxels: no vessel surface
    expected_mm3 = mask.sum() * np.prod(spacing_mm)
    low, high = _mask_bounds_lps(grid, mask)
    slack_mm = 0.25 * max(spacing_mm)  # smoothing rounds the flat end caps of thick slices outward a little
    for polydata in surfaces.values():
        assert _enclosed_volume_mm3(polydata) == pytest.approx(expected_mm3, rel=0.05)
        assert _signed_volume_mm3(polydata) == pytest.approx(expected_mm3, rel=0.05)
        assert _open_edge_count(polydata) == 0
        points = vtk_numpy.vtk_to_numpy(polydata.GetPoints().GetData())
        assert np.all(points >= low - slack_mm) and np.all(points <= high + slack_mm)
        assert np.allclose(points.mean(axis=0), (10.0, -20.0, 30.0), atol=1.5)


def test_thin_vessel_is_not_smoothed_away():
    grid = _grid((31, 41, 41), (0.7, 0.7, 1.0), GRIDS["tilted_flipped"][1])
    axis = grid.direction[:, 2]
    offset = _centres_lps(grid) - np.array([10.0, -20.0, 30.0])
    radial = offset - (offset @ axis)[..., None] * axis
    cylinder = (np.linalg.norm(radial, axis=-1) <= 1.5 * 0.7 + 1e-6) & (np.abs(offset @ axis) < 12.0)
    labels = grid.with_array(np.where(cylinder, 2, 0).astype(np.uint8))
    vessel = extract_surfaces(labels)["vessels"]
    expected_mm3 = cylinder.sum() * 0.7 * 0.7 * 1.0
    assert _enclosed_volume_mm3(vessel) == pytest.approx(expected_mm3, rel=0.25)
    assert _open_edge_count(vessel) == 0
    # the liver's strong smoothing would shrink the same tube to a fraction: the per-structure setting matters
    assert _enclosed_volume_mm3(mask_surface(labels.with_array(cylinder), SURFACES["liver"])) < 0.5 * expected_mm3


def test_liver_surface_wraps_all_liver_labels_and_structures_are_separate():
    grid = _grid((30, 60, 60), (1.0, 1.0, 1.5), np.eye(3))
    liver = _ellipsoid(grid, (25.0, 22.0, 18.0))
    labels = np.where(liver, 1, 0).astype(np.uint8)
    labels[_ellipsoid(grid, (6.0, 6.0, 6.0), centre=(20.0, -20.0, 30.0))] = 3
    labels[_ellipsoid(grid, (6.0, 6.0, 6.0), centre=(0.0, -20.0, 30.0))] = 2
    surfaces = extract_surfaces(grid.with_array(labels))
    assert set(surfaces) == {"liver", "vessels", "tumors"}
    assert _enclosed_volume_mm3(surfaces["liver"]) == pytest.approx(liver.sum() * 1.5, rel=0.05)
    tumor_centre = vtk_numpy.vtk_to_numpy(surfaces["tumors"].GetPoints().GetData()).mean(axis=0)
    assert np.allclose(tumor_centre, (20.0, -20.0, 30.0), atol=1.0)


def test_merged_blocks_follow_the_majority_and_the_first_voxel_on_ties():
    rng = np.random.default_rng(5)
    mask = rng.random((7, 11, 10)) < 0.5
    block = np.array([1, 2, 3])
    merged = merge_blocks(mask, block)
    assert merged.shape == (7, 6, 4)  # padded with background to whole blocks
    padded = np.zeros((7, 12, 12), bool)
    padded[:, :11, :10] = mask
    for k, j, i in np.ndindex(merged.shape):
        voxels = padded[k, 2 * j : 2 * j + 2, 3 * i : 3 * i + 3]
        inside = voxels.sum()
        assert merged[k, j, i] == (inside > 3 or (inside == 3 and voxels[0, 0]))
    assert merge_blocks(mask, np.ones(3, int)) is mask
    assert np.array_equal(SURFACES["liver"].block_kji((0.74, 0.74, 1.6)), [1, 2, 2])
    assert np.array_equal(SURFACES["liver"].block_kji((0.5, 0.5, 0.5)), [3, 3, 3])
    assert np.array_equal(SURFACES["vessels"].block_kji((0.5, 0.5, 0.5)), [1, 1, 1])


def test_liver_of_a_fine_grid_is_built_at_its_resolution_in_place_and_with_its_volume():
    """On 0.5 mm voxels the liver surface is built from 1.5 mm blocks: a tenth of the triangles, same shape."""
    grid = _grid((60, 100, 110), (0.5, 0.5, 0.5), GRIDS["tilted_flipped"][1])
    mask = _ellipsoid(grid, (24.0, 21.0, 13.0))
    labels = grid.with_array(mask.astype(np.uint8))
    liver = extract_surfaces(labels)["liver"]
    raw = extract_surfaces(labels, smooth=False)["liver"]
    assert liver.GetNumberOfPolys() < 0.15 * raw.GetNumberOfPolys()
    assert _enclosed_volume_mm3(liver) == pytest.approx(mask.sum() * 0.125, rel=0.03)
    assert _open_edge_count(liver) == 0
    points = vtk_numpy.vtk_to_numpy(liver.GetPoints().GetData())
    low, high = _mask_bounds_lps(grid, mask)
    assert np.all(points >= low - 0.5) and np.all(points <= high + 0.5)  # within a third of a block
    assert np.allclose(points.mean(axis=0), (10.0, -20.0, 30.0), atol=0.5)


def test_written_files_carry_lps_and_round_trip(tmp_path):
    from vtkmodules.vtkIOGeometry import vtkSTLReader
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    grid = _grid((20, 40, 40), (1.0, 1.0, 2.0), np.eye(3))
    surfaces = extract_surfaces(grid.with_array(_ellipsoid(grid, (12.0, 10.0, 14.0)).astype(np.uint8) * 3))
    written = write_surfaces(surfaces, tmp_path / "surfaces", include_obj=True)
    names = sorted(p.name for p in written)
    assert names == sorted(f"{n}.{e}" for n in ("liver", "tumors") for e in ("stl", "vtp", "obj"))
    assert sorted(p.name for p in (tmp_path / "surfaces").iterdir()) == names  # no temporary files left
    stl = vtkSTLReader()
    stl.SetFileName(str(tmp_path / "surfaces" / "tumors.stl"))
    stl.Update()
    assert "SPACE=LPS" in stl.GetHeader()
    assert stl.GetOutput().GetNumberOfPolys() == surfaces["tumors"].GetNumberOfPolys()
    vtp = vtkXMLPolyDataReader()
    vtp.SetFileName(str(tmp_path / "surfaces" / "tumors.vtp"))
    vtp.Update()
    assert vtp.GetOutput().GetFieldData().GetAbstractArray("SPACE").GetValue(0) == "LPS"
    assert _enclosed_volume_mm3(vtp.GetOutput()) == pytest.approx(_enclosed_volume_mm3(surfaces["tumors"]))
    obj_lines = (tmp_path / "surfaces" / "liver.obj").read_text(encoding="utf-8").splitlines()
    assert "SPACE=LPS" in obj_lines[0]
    assert sum(line.startswith("v ") for line in obj_lines) == surfaces["liver"].GetNumberOfPoints()
    assert sum(line.startswith("f ") for line in obj_lines) == surfaces["liver"].GetNumberOfPolys()


def test_front_view_shows_the_patients_right_on_the_left(tmp_path):
    try:
        check_offscreen_rendering()
    except OffscreenRenderingError as error:
        pytest.skip(str(error))
    import matplotlib.image

    grid = _grid((24, 60, 80), (1.0, 1.0, 2.0), np.eye(3))
    labels = np.where(_ellipsoid(grid, (30.0, 20.0, 16.0)), 1, 0).astype(np.uint8)
    labels[_ellipsoid(grid, (7.0, 7.0, 7.0), centre=(-8.0, -20.0, 30.0))] = 3  # patient's right: smaller L
    surfaces = extract_surfaces(grid.with_array(labels))
    path = render_surfaces_png({"tumors": surfaces["tumors"]}, tmp_path / "view.png", size_px=(200, 160))
    rgb = matplotlib.image.imread(path)[..., :3]
    assert rgb.shape == (160, 200, 3)
    tumor_green = (rgb[..., 1] - rgb[..., 0] > 0.15) & (rgb[..., 1] - rgb[..., 2] > 0.15)
    columns = np.nonzero(tumor_green)[1]
    assert columns.size > 50
    assert columns.mean() < 100
    with_liver = matplotlib.image.imread(render_surfaces_png(surfaces, tmp_path / "all.png", size_px=(200, 160)))
    liver_tinted = with_liver[..., 0] - with_liver[..., 2] > 0.15
    assert liver_tinted.mean() > 0.2  # the translucent liver is drawn too (depth peeling once hid it)


def test_lines_are_drawn_over_the_surfaces_that_hide_them(tmp_path):
    """A lesion's longest diameter runs inside its opaque tumor: the 3D view draws it on top, at its place."""
    try:
        check_offscreen_rendering()
    except OffscreenRenderingError as error:
        pytest.skip(str(error))
    import matplotlib.image

    from lvt.measure.surface_view import LINE_COLOUR

    grid = _grid((24, 60, 80), (1.0, 1.0, 2.0), np.eye(3))
    labels = np.where(_ellipsoid(grid, (12.0, 12.0, 12.0)), 3, 0).astype(np.uint8)
    tumor = extract_surfaces(grid.with_array(labels))
    # from the tumor's centre 10 mm towards the patient's left (LPS +x), which the front view shows on the right
    line = ((10.0, -20.0, 30.0), (20.0, -20.0, 30.0))

    def line_pixels(**options) -> np.ndarray:
        rgb = matplotlib.image.imread(render_surfaces_png(tumor, tmp_path / "v.png", size_px=(200, 200), **options))
        return np.linalg.norm(rgb[..., :3] - np.asarray(LINE_COLOUR), axis=-1) < 0.12

    assert not line_pixels().any()
    drawn = line_pixels(lines_lps=[line])
    rows, columns = np.nonzero(drawn)
    assert columns.size > 40
    assert np.ptp(rows) < 0.3 * np.ptp(columns)  # horizontal on the screen, as an L-R line seen from the front
    assert columns.min() >= 95 and columns.mean() > 115  # the image's right half, from its centre


def test_the_3d_view_is_rendered_once(tmp_path, monkeypatch):
    """The grab renders the scene: a render before it drew every triangle twice (half the 3D view's time)."""
    try:
        check_offscreen_rendering()
    except OffscreenRenderingError as error:
        pytest.skip(str(error))
    import lvt.measure.surface_view as surface_view

    renders = []
    make_window = surface_view._offscreen_render_window

    def counted_window():
        window = make_window()
        window.AddObserver("EndEvent", lambda *_: renders.append(1))
        return window

    monkeypatch.setattr(surface_view, "_offscreen_render_window", counted_window)
    grid = _grid((24, 60, 80), (1.0, 1.0, 2.0), np.eye(3))
    surfaces = extract_surfaces(grid.with_array(_ellipsoid(grid, (20.0, 15.0, 12.0)).astype(np.uint8)))
    render_surfaces_png(surfaces, tmp_path / "view.png", size_px=(120, 100), lines_lps=[((0, -20, 30), (20, -20, 30))])
    assert len(renders) == 1


def test_the_rendering_check_runs_once_per_process_and_can_start_ahead(monkeypatch):
    """``lvt segment`` starts the probe before reading the CT; a cohort must not pay 0.7 s per case for it."""
    import lvt.measure.surface_view as surface_view

    spawned = []
    spawn = surface_view._OffscreenCheck._spawn
    monkeypatch.setattr(surface_view._OffscreenCheck, "_spawn", staticmethod(lambda: spawned.append(1) or spawn()))
    check = surface_view._OffscreenCheck()
    check.start()
    check.start()  # the probe already running is the one that answers
    try:
        window = check.result(120.0)
    except OffscreenRenderingError as error:
        pytest.skip(str(error))
    check.start()
    assert check.result(120.0) == window
    assert len(spawned) == 1


def test_a_failed_rendering_check_is_not_remembered(monkeypatch):
    import lvt.measure.surface_view as surface_view

    check = surface_view._OffscreenCheck()
    monkeypatch.setattr(surface_view, "_PROBE", "import sys; sys.stderr.write('no EGL display'); sys.exit(3)")
    with pytest.raises(OffscreenRenderingError, match="exit code 3: no EGL display"):
        check.result(120.0)
    monkeypatch.setattr(surface_view, "_PROBE", "print('vtkFakeWindow')")
    assert check.result(120.0) == "vtkFakeWindow"  # probed again, not the failure replayed
