"""The 2D views of a report: display slices through the CT and labels, with calipers, as PNG files.

The views are sampled on patient-aligned planes, whatever the CT grid (oblique, flipped,
anisotropic): square pixels in mm, shown in radiological convention as Slicer shows them: axial and
coronal with the patient's right on the image's left, anterior (axial) or superior (coronal,
sagittal) up, sagittal with anterior on the left. Each PNG has a black title band above the image, so
the title never covers the image or its orientation letters.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lvt.atomic import atomic_path
from lvt.image import AIR_HU, Image
from lvt.labels import STRUCTURES, whole_liver
from lvt.measure.region import LabelRegion
from lvt.progress import check_cancel

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)  # level 40, width 400
MIN_VIEW_PX, MAX_VIEW_PX = 512, 800
# A view shows at least this fraction of its long side across: the coronal and sagittal slices of a short
# scan (20 slices of 5 mm) are widened with background instead of being strips the letters do not fit in.
MIN_SHORT_SIDE_FRACTION = 0.5
TITLE_BAND_PX = 24
TITLE_POINTS = 9.0


@dataclass(frozen=True)
class ViewPlane:
    """A patient-aligned display plane: LPS unit vectors of the image's columns (right) and rows (down)."""

    name: str
    column_lps: tuple[float, float, float]
    row_lps: tuple[float, float, float]
    edge_letters: tuple[str, str, str, str]  # left, right, top, bottom

    @property
    def normal_lps(self) -> np.ndarray:
        return np.cross(self.column_lps, self.row_lps)


# LPS: +x patient left, +y posterior, +z superior.
AXIAL = ViewPlane("axial", (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), ("R", "L", "A", "P"))
CORONAL = ViewPlane("coronal", (1.0, 0.0, 0.0), (0.0, 0.0, -1.0), ("R", "L", "S", "I"))
SAGITTAL = ViewPlane("sagittal", (0.0, 1.0, 0.0), (0.0, 0.0, -1.0), ("A", "P", "S", "I"))
VIEW_PLANES = (AXIAL, CORONAL, SAGITTAL)


@dataclass(frozen=True)
class SampledView:
    """One display slice: pixel (row, col) lies at ``origin + col * pixel_mm * column + row * pixel_mm * row``."""

    plane: ViewPlane
    origin_lps: np.ndarray
    pixel_mm: float
    shape: tuple[int, int]

    def indices_kji(self, grid: Image) -> np.ndarray:
        """(3, rows, cols) continuous array indices (k, j, i) of the pixel centres on ``grid``.

        The map is affine, so the indices grow by a fixed step per column and per row: no
        (rows, cols, 3) array of LPS points is made and then mapped.
        """
        lps_to_ijk = np.linalg.inv(grid.direction @ np.diag(grid.spacing_mm))
        start = grid.lps_to_ijk(self.origin_lps)[0][::-1, None, None]
        per_column = (lps_to_ijk @ np.asarray(self.plane.column_lps))[::-1, None, None] * self.pixel_mm
        per_row = (lps_to_ijk @ np.asarray(self.plane.row_lps))[::-1, None, None] * self.pixel_mm
        rows, columns = np.ogrid[0 : self.shape[0], 0 : self.shape[1]]
        return start + columns * per_column + rows * per_row

    def to_pixel(self, points_lps: np.ndarray) -> np.ndarray:
        """(N, 3) LPS points -> (N, 2) (col, row) pixel coordinates (projected onto the plane)."""
        offset = np.atleast_2d(points_lps) - self.origin_lps
        return np.stack([offset @ self.plane.column_lps, offset @ self.plane.row_lps], axis=1) / self.pixel_mm


def view_through(grid: Image, plane: ViewPlane, point_lps: np.ndarray) -> SampledView:
    """The display slice of ``plane`` through ``point_lps`` covering the whole grid, square pixels.

    Pixels are as fine as the grid's finest spacing, finer when the image would have fewer than
    ``MIN_VIEW_PX`` on its long side (readable text and lines), coarser above ``MAX_VIEW_PX``. The
    short side covers at least ``MIN_SHORT_SIDE_FRACTION`` of the long one, the grid centred in it.
    """
    corners = grid.extent_corners_lps()
    along_cols, along_rows = corners @ plane.column_lps, corners @ plane.row_lps
    span = np.array([np.ptp(along_rows), np.ptp(along_cols)])
    field = np.maximum(span, MIN_SHORT_SIDE_FRACTION * span.max())
    pixel_mm = float(np.clip(min(grid.spacing_mm), field.max() / MAX_VIEW_PX, field.max() / MIN_VIEW_PX))
    rows, cols = (int(n) for n in np.maximum(np.ceil(field / pixel_mm), 1))
    low_row, low_col = np.array([along_rows.min(), along_cols.min()]) - (field - span) / 2.0
    depth = float(np.dot(point_lps, plane.normal_lps))
    origin = (
        low_col * np.asarray(plane.column_lps)
        + low_row * np.asarray(plane.row_lps)
        + depth * plane.normal_lps
        + 0.5 * pixel_mm * (np.asarray(plane.column_lps) + np.asarray(plane.row_lps))
    )
    return SampledView(plane, origin, pixel_mm, (rows, cols))


def sample_view(image: Image, view: SampledView, *, order: int, outside: float) -> np.ndarray:
    """Resample an image on a display slice (order 0 for labels, 1 for CT); ``outside`` off the grid."""
    return ndimage.map_coordinates(image.array, view.indices_kji(image), order=order, mode="constant", cval=outside)


def label_overlay_rgba(labels_2d: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 4) float RGBA: each label in its lvt.labels colour, background transparent."""
    rgba = np.zeros((*labels_2d.shape, 4), dtype=np.float32)
    for structure in STRUCTURES:
        where = labels_2d == structure.label_value
        rgba[where, :3] = structure.color_float
        rgba[where, 3] = alpha
    return rgba


@dataclass(frozen=True)
class Caliper:
    """A measured line to draw: end points in LPS mm, a label, and whether it is the long axis."""

    endpoints_lps: tuple[Sequence[float], Sequence[float]]
    text: str
    is_long_axis: bool


def render_view_png(
    ct: Image | None,
    labels: Image,
    plane: ViewPlane,
    point_lps: np.ndarray,
    path: Path,
    *,
    title: str,
    calipers: Sequence[Caliper] = (),
) -> Path:
    """Write one overlay view as PNG: CT in a soft-tissue window, translucent labels, calipers.

    Below a ``TITLE_BAND_PX`` title band, one PNG pixel is one display pixel (square,
    ``SampledView.pixel_mm`` wide), so the image has the patient's true proportions.
    """
    figure = view_figure(ct, labels, plane, point_lps, title=title, calipers=calipers)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi, facecolor=figure.get_facecolor())
    figure.clear()  # frees its images now: the figure's reference cycles would hold them until a garbage collection
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return path


def view_figure(
    ct: Image | None,
    labels: Image,
    plane: ViewPlane,
    point_lps: np.ndarray,
    *,
    title: str,
    calipers: Sequence[Caliper] = (),
) -> Figure:
    """The drawn figure of :func:`render_view_png` (its image axes are the figure's only axes)."""
    view = view_through(ct if ct is not None else labels, plane, np.asarray(point_lps, dtype=float))
    gray = (
        sample_view(ct, view, order=1, outside=AIR_HU)
        if ct is not None
        else np.full(view.shape, SOFT_TISSUE_WINDOW_HU[0])
    )
    labels_2d = sample_view(labels, view, order=0, outside=0)
    figure, axes = _pixel_exact_figure(view.shape)
    axes.imshow(gray, cmap="gray", vmin=SOFT_TISSUE_WINDOW_HU[0], vmax=SOFT_TISSUE_WINDOW_HU[1],
                interpolation="nearest")
    axes.imshow(label_overlay_rgba(labels_2d), interpolation="nearest")
    for structure in STRUCTURES:
        if (labels_2d == structure.label_value).any():
            axes.contour(labels_2d == structure.label_value, levels=[0.5], colors=[structure.color_float],
                         linewidths=0.8)
    for caliper in calipers:
        _draw_caliper(axes, view, caliper)
    _draw_letters(axes, view)
    _draw_title(figure, title)
    return figure


def _pixel_exact_figure(shape: tuple[int, int]) -> tuple:
    """An Agg figure: a black title band over axes sized so one image pixel is one PNG pixel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    rows, cols = shape
    figure = Figure(figsize=(cols / dpi, (rows + TITLE_BAND_PX) / dpi), dpi=dpi, facecolor="black")
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, rows / (rows + TITLE_BAND_PX)))
    axes.set_axis_off()
    axes.set_xlim(-0.5, shape[1] - 0.5)
    axes.set_ylim(shape[0] - 0.5, -0.5)
    return figure, axes


def _draw_caliper(axes: Axes, view: SampledView, caliper: Caliper) -> None:
    (c0, r0), (c1, r1) = view.to_pixel(np.asarray(caliper.endpoints_lps, dtype=float))
    style = {"color": "#ffd400", "linewidth": 1.6} if caliper.is_long_axis else {
        "color": "#ffd400", "linewidth": 1.0, "linestyle": "--"}
    axes.plot([c0, c1], [r0, r1], marker="+", markersize=6, **style)
    if caliper.text:
        axes.annotate(caliper.text, (max(c0, c1), min(r0, r1)), xytext=(6, -6), textcoords="offset points",
                      color="#ffd400", fontsize=9, fontweight="bold")


def _draw_letters(axes: Axes, view: SampledView) -> None:
    """Orientation letters on the four edges, so nobody has to guess the convention."""
    rows, cols = view.shape
    left, right, top, bottom = view.plane.edge_letters
    text = {"color": "white", "fontsize": 11, "fontweight": "bold"}
    axes.text(4, rows / 2, left, ha="left", va="center", **text)
    axes.text(cols - 5, rows / 2, right, ha="right", va="center", **text)
    axes.text(cols / 2, 4, top, ha="center", va="top", **text)
    axes.text(cols / 2, rows - 5, bottom, ha="center", va="bottom", **text)


def _draw_title(figure: Figure, title: str) -> None:
    """The title in the band above the image, made smaller when it would not fit the image's width."""
    width_px, height_px = figure.bbox.width, figure.bbox.height
    margin_px = 6.0
    text = figure.text(margin_px / width_px, 1.0 - TITLE_BAND_PX / 2.0 / height_px, title, ha="left", va="center",
                       color="white", fontsize=TITLE_POINTS)
    drawn_px = text.get_window_extent(figure.canvas.get_renderer()).width
    if drawn_px > width_px - 2 * margin_px:
        text.set_fontsize(TITLE_POINTS * (width_px - 2 * margin_px) / drawn_px)


@dataclass(frozen=True)
class ReportImage:
    """One image of the report: its file under ``views/`` and a caption."""

    path: Path
    caption: str


def report_views(report: Mapping, ct: Image | None, labels: Image, views: Path,
                 cancel: threading.Event | None = None) -> list[ReportImage]:
    """The report's 2D views, written into ``views``: through the largest lesion, then through the liver.

    Each view is a cancel point (:class:`lvt.errors.CancelledError` when ``cancel`` is set).
    """
    return _lesion_views(report, ct, labels, views, cancel) + _liver_views(ct, labels, views, cancel)


def _lesion_views(report: Mapping, ct: Image | None, labels: Image, views: Path,
                  cancel: threading.Event | None) -> list[ReportImage]:
    """Axial, coronal, sagittal through the middle of the largest lesion's long axis."""
    if not report["lesions"]:
        return []
    lesion = report["lesions"][0]
    ends = np.asarray(lesion["long_axis_endpoints_lps_mm"], dtype=float)
    calipers = [
        Caliper(tuple(ends), f"{lesion['longest_axial_diameter_mm']:.1f} mm", True),
        Caliper(tuple(lesion["short_axis_endpoints_lps_mm"]), "", False),
    ]
    figures = []
    for plane in VIEW_PLANES:
        check_cancel(cancel)
        title = f"{plane.name.capitalize()}, through lesion 1 (largest)"
        path = render_view_png(ct, labels, plane, ends.mean(axis=0), views / f"lesion1_{plane.name}.png",
                               title=title, calipers=calipers if plane is AXIAL else ())
        caption = title + (f", slice {lesion['axial_slice_index']}" if plane is AXIAL else "")
        figures.append(ReportImage(path, caption))
    return figures


def liver_centre_lps(labels: Image) -> tuple[np.ndarray, bool]:
    """The whole liver's centre of mass in LPS mm, or the image centre; and whether there is a liver."""
    region = LabelRegion.of(labels.array)
    found = region.box is not None
    centre_kji = region.centroid_kji(whole_liver(region.array)) if found else (np.array(labels.array.shape) - 1) / 2.0
    return labels.ijk_to_lps(centre_kji[::-1])[0], found


def _liver_views(ct: Image | None, labels: Image, views: Path, cancel: threading.Event | None) -> list[ReportImage]:
    """Axial, coronal, sagittal through the liver's centre of mass (the image centre if there is no liver)."""
    centre, found = liver_centre_lps(labels)
    where = "the liver centre" if found else "the image centre (no liver found)"
    figures = []
    for plane in VIEW_PLANES:
        check_cancel(cancel)
        title = f"{plane.name.capitalize()}, through {where}"
        path = render_view_png(ct, labels, plane, centre, views / f"liver_{plane.name}.png", title=title)
        figures.append(ReportImage(path, title))
    return figures
