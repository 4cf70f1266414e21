"""report.json (for machines) and report.html with PNG views (for the clinician who reads the result).

The 2D views are sampled on patient-aligned planes, whatever the CT grid (oblique, flipped,
anisotropic): square pixels in mm, shown in radiological convention as Slicer shows them: axial and
coronal with the patient's right on the image's left, anterior (axial) or superior (coronal,
sagittal) up, sagittal with anterior on the left. The 3D view comes from :mod:`lvt.measure.surfaces`, the
only module that touches VTK; when this machine cannot render off screen the report is written
without it and says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lvt import __version__
from lvt.atomic import atomic_path
from lvt.image import Image
from lvt.labels import STRUCTURES
from lvt.measure.surfaces import OffscreenRenderingError, render_surfaces_png
from lvt.measure.volumes_and_lesions import Measurements

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from vtkmodules.vtkCommonDataModel import vtkPolyData

logger = logging.getLogger(__name__)

SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)  # level 40, width 400
MIN_VIEW_PX, MAX_VIEW_PX = 512, 800
REVIEW_NOTE = (
    "Computed automatically by research software. Every contour and measurement must be reviewed by a "
    "physician before it is used for any clinical decision."
)


def build_report(
    *,
    input_path: str | Path,
    ct_or_labels_grid: Image,
    measurements: Measurements,
    model: Mapping | None,
    inference: Mapping | None,
    dropped: Sequence[Mapping] = (),
    min_volume_ml: float = 0.0,
    warnings: Sequence[str] = (),
) -> dict:
    """The full report.json content (contracts.md schema); pure, no I/O.

    Args:
        input_path: the CT (``lvt segment``) or segmentation (``lvt measure``) the user gave.
        ct_or_labels_grid: the grid of that input; only its geometry is read.
        measurements: from :func:`lvt.measure.volumes_and_lesions.measure_labels`.
        model: a mapping with at least "name" and "version", or None when no model ran.
        inference: device, TTA, window counts, per-stage timings (seconds), or None.
        dropped: tumor components removed by post-processing ("volume_ml", "centroid_lps_mm").
        min_volume_ml: post-processing's smallest kept lesion volume.
        warnings: messages for the user.

    Returns:
        A JSON-ready dict of plain Python types.

    Raises:
        ValueError: when ``model`` lacks a name or a version.
    """
    if model is not None and not {"name", "version"} <= set(model):
        raise ValueError(f"model needs 'name' and 'version', got keys {sorted(model)}")
    grid = ct_or_labels_grid
    return {
        "lvt_version": __version__,
        "model": None if model is None else {"name": str(model["name"]), "version": str(model["version"])},
        "input": {
            "path": str(input_path),
            "size_ijk": [int(n) for n in grid.size_ijk],
            "spacing_mm": list(grid.spacing_mm),
            "origin_lps_mm": list(grid.origin_lps_mm),
            "direction": grid.direction.tolist(),
        },
        **measurements.to_dict(dropped=dropped, min_volume_ml=min_volume_ml),
        "inference": None if inference is None else _plain(inference),
        "warnings": [str(w) for w in warnings],
    }


def _plain(value: object) -> object:
    """Numpy scalars and arrays, tuples and Paths -> JSON types (inference dicts come from many places)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_report_json(report: Mapping, path: Path | str) -> Path:
    """Write report.json atomically (UTF-8, indented; NaN is refused, it is not JSON)."""
    path = Path(path)
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


# --- 2D views ---------------------------------------------------------------------------------


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

    def pixels_lps(self) -> np.ndarray:
        """(rows, cols, 3) LPS centres of all pixels."""
        rows, cols = np.mgrid[0 : self.shape[0], 0 : self.shape[1]] * self.pixel_mm
        return (
            self.origin_lps
            + cols[..., None] * np.asarray(self.plane.column_lps)
            + rows[..., None] * np.asarray(self.plane.row_lps)
        )

    def to_pixel(self, points_lps: np.ndarray) -> np.ndarray:
        """(N, 3) LPS points -> (N, 2) (col, row) pixel coordinates (projected onto the plane)."""
        offset = np.atleast_2d(points_lps) - self.origin_lps
        return np.stack([offset @ self.plane.column_lps, offset @ self.plane.row_lps], axis=1) / self.pixel_mm


def view_through(grid: Image, plane: ViewPlane, point_lps: np.ndarray) -> SampledView:
    """The display slice of ``plane`` through ``point_lps`` covering the whole grid, square pixels.

    Pixels are as fine as the grid's finest spacing, finer when the image would have fewer than
    ``MIN_VIEW_PX`` on its long side (readable text and lines), coarser above ``MAX_VIEW_PX``.
    """
    extent = np.array(grid.size_ijk) - 0.5
    corners_ijk = np.array([[a, b, c] for a in (-0.5, extent[0]) for b in (-0.5, extent[1]) for c in (-0.5, extent[2])])
    corners = grid.ijk_to_lps(corners_ijk)
    along_cols, along_rows = corners @ plane.column_lps, corners @ plane.row_lps
    span = np.array([np.ptp(along_rows), np.ptp(along_cols)])
    pixel_mm = float(np.clip(min(grid.spacing_mm), span.max() / MAX_VIEW_PX, span.max() / MIN_VIEW_PX))
    rows, cols = (int(n) for n in np.maximum(np.ceil(span / pixel_mm), 1))
    depth = float(np.dot(point_lps, plane.normal_lps))
    origin = (
        along_cols.min() * np.asarray(plane.column_lps)
        + along_rows.min() * np.asarray(plane.row_lps)
        + depth * plane.normal_lps
        + 0.5 * pixel_mm * (np.asarray(plane.column_lps) + np.asarray(plane.row_lps))
    )
    return SampledView(plane, origin, pixel_mm, (rows, cols))


def sample_view(image: Image, view: SampledView, *, order: int, outside: float) -> np.ndarray:
    """Resample an image on a display slice (order 0 for labels, 1 for CT); ``outside`` off the grid."""
    ijk = image.lps_to_ijk(view.pixels_lps().reshape(-1, 3))
    coordinates_kji = ijk[:, ::-1].T
    values = ndimage.map_coordinates(image.array, coordinates_kji, order=order, mode="constant", cval=outside)
    return values.reshape(view.shape)


def label_overlay_rgba(labels_2d: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 4) float RGBA: each label in its lvt.labels colour, background transparent."""
    rgba = np.zeros((*labels_2d.shape, 4))
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

    One PNG pixel is one display pixel (square, ``SampledView.pixel_mm`` wide), so the image has the
    patient's true proportions.
    """
    view = view_through(ct if ct is not None else labels, plane, np.asarray(point_lps, dtype=float))
    gray = (
        sample_view(ct, view, order=1, outside=-1024.0)
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
    _draw_annotations(axes, view, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return path


def _pixel_exact_figure(shape: tuple[int, int]) -> tuple:
    """An Agg figure whose single axes fill it, sized so one image pixel is one PNG pixel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(shape[1] / dpi, shape[0] / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
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


def _draw_annotations(axes: Axes, view: SampledView, title: str) -> None:
    """Orientation letters on the four edges and a title, so nobody has to guess the convention."""
    rows, cols = view.shape
    left, right, top, bottom = view.plane.edge_letters
    text = {"color": "white", "fontsize": 11, "fontweight": "bold"}
    axes.text(4, rows / 2, left, ha="left", va="center", **text)
    axes.text(cols - 5, rows / 2, right, ha="right", va="center", **text)
    axes.text(cols / 2, 4, top, ha="center", va="top", **text)
    axes.text(cols / 2, rows - 5, bottom, ha="center", va="bottom", **text)
    axes.text(6, rows - 6, title, ha="left", va="bottom", color="white", fontsize=9)


# --- the HTML page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportImage:
    """One image of the report: its file under ``views/`` and a caption."""

    path: Path
    caption: str


def write_html_report(
    report: dict,
    ct: Image | None,
    labels: Image,
    surfaces: Mapping[str, vtkPolyData] | None,
    folder: Path | str,
) -> Path:
    """Write ``report.html`` and ``views/*.png`` into ``folder``.

    Views: axial, coronal and sagittal through the largest lesion (long axis drawn on the axial one)
    and through the liver centre, plus a 3D view of the surfaces. When the 3D view cannot be
    rendered here, a warning is appended to ``report["warnings"]`` (write report.json afterwards)
    and the page is written without it.

    Args:
        report: from :func:`build_report`.
        ct: the CT for the background, or None (labels on black).
        labels: the exclusive label map the report measured.
        surfaces: from :func:`lvt.measure.surfaces.extract_surfaces`, or None for no 3D view.
        folder: output folder.

    Returns:
        The path of report.html.
    """
    folder = Path(folder)
    views = folder / "views"
    views.mkdir(parents=True, exist_ok=True)
    figures = _lesion_views(report, ct, labels, views) + _liver_views(ct, labels, views)
    if surfaces:
        try:
            path = render_surfaces_png(surfaces, views / "surfaces_3d.png")
            figures.append(ReportImage(path, "3D view from the front (patient's right on the left)"))
        except OffscreenRenderingError as error:
            message = f"3D view not rendered: {error}"
            logger.warning(message)
            report["warnings"].append(message)
    page = folder / "report.html"
    with atomic_path(page) as temporary:
        temporary.write_text(render_html(report, figures), encoding="utf-8")
    return page


def _lesion_views(report: Mapping, ct: Image | None, labels: Image, views: Path) -> list[ReportImage]:
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
        title = f"{plane.name.capitalize()}, through lesion 1 (largest)"
        path = render_view_png(ct, labels, plane, ends.mean(axis=0), views / f"lesion1_{plane.name}.png",
                               title=title, calipers=calipers if plane is AXIAL else ())
        caption = title + (f", slice {lesion['axial_slice_index']}" if plane is AXIAL else "")
        figures.append(ReportImage(path, caption))
    return figures


def _liver_views(ct: Image | None, labels: Image, views: Path) -> list[ReportImage]:
    """Axial, coronal, sagittal through the liver's centre of mass (the grid centre if there is no liver)."""
    liver = labels.array > 0
    centre_kji = np.argwhere(liver).mean(axis=0) if liver.any() else (np.array(liver.shape) - 1) / 2.0
    centre = labels.ijk_to_lps(centre_kji[::-1])[0]
    figures = []
    for plane in VIEW_PLANES:
        title = f"{plane.name.capitalize()}, through the liver centre"
        path = render_view_png(ct, labels, plane, centre, views / f"liver_{plane.name}.png", title=title)
        figures.append(ReportImage(path, title))
    return figures


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 0.9em; }
.review { background: #fff4e5; border-left: 4px solid #f0a030; padding: 0.6em 1em; margin: 1em 0; }
.warnings { background: #fdecea; border-left: 4px solid #d93025; padding: 0.6em 1em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.95em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th { background: #f4f6f8; } td.text, th.text { text-align: left; }
.views { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 1em; }
figure { margin: 0; } figure img { width: 100%; height: auto; background: #000; }
figcaption { font-size: 0.85em; color: #555; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; vertical-align: middle; }
"""


def render_html(report: Mapping, figures: Sequence[ReportImage]) -> str:
    """The report page as one self-contained HTML string (CSS inline, images embedded)."""
    model = report["model"]
    model_text = f"{model['name']} {model['version']}" if model else "none (existing segmentation measured)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>LVT Segmentation report</title>',
        f"<style>{_CSS}</style></head><body>",
        "<h1>Liver, vessel and tumor segmentation</h1>",
        f'<p class="meta">Input: {_esc(report["input"]["path"])}<br>Model: {_esc(model_text)}'
        f' &middot; LVT {_esc(report["lvt_version"])}</p>',
        f'<p class="review"><strong>For review.</strong> {_esc(REVIEW_NOTE)}</p>',
        _warnings_html(report["warnings"]),
        "<h2>Liver</h2>",
        _volumes_table(report),
        "<h2>Tumor burden</h2>",
        _burden_table(report["tumors"]),
        "<h2>Lesions</h2>",
        _lesion_table(report["lesions"]),
        _planning_html(report.get("planning")),
        "<h2>Views</h2>",
        _legend_html(),
        '<div class="views">',
        *(_figure_html(figure) for figure in figures),
        "</div>",
        _processing_html(report["input"], report["inference"]),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part)


def _esc(value: object) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """An HTML table; the first ``text_columns`` columns are left-aligned text, the rest numbers."""
    def cell(tag: str, index: int, value: str) -> str:
        css = ' class="text"' if index < text_columns else ""
        return f"<{tag}{css}>{value}</{tag}>"

    head = "".join(cell("th", n, _esc(h)) for n, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", n, v) for n, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _volumes_table(report: Mapping) -> str:
    liver, vessels = report["liver"], report["vessels"]
    rows = [
        ("Whole liver (parenchyma, vessels and tumors)", f"{liver['whole_volume_ml']:.1f}"),
        ("Liver parenchyma", f"{liver['parenchyma_volume_ml']:.1f}"),
        ("Intrahepatic vessels", f"{vessels['volume_ml']:.1f}"),
    ]
    return _table(("Structure", "Volume (mL)"), rows)


def _burden_table(tumors: Mapping) -> str:
    rows = [
        ("Number of lesions", str(tumors["count"])),
        ("Total tumor volume (mL)", f"{tumors['total_volume_ml']:.2f}"),
        ("Tumor-to-liver volume ratio", f"{100 * tumors['tumor_to_liver_volume_ratio']:.2f} %"),
    ]
    if tumors["dropped"]:
        rows.append((f"Candidates below {tumors['min_volume_ml']:g} mL not counted", str(len(tumors["dropped"]))))
    return _table(("", "Value"), rows)


def _lesion_table(lesions: Sequence[Mapping]) -> str:
    if not lesions:
        return "<p>No lesion found.</p>"
    rows = [
        (
            str(lesion["id"]),
            f"{lesion['volume_ml']:.2f}",
            f"{lesion['longest_axial_diameter_mm']:.1f}",
            f"{lesion['short_axis_diameter_mm']:.1f}",
            str(lesion["axial_slice_index"]),
            ", ".join(f"{c:.1f}" for c in lesion["centroid_lps_mm"]),
        )
        for lesion in lesions
    ]
    header = ("Lesion", "Volume (mL)", "Longest axial diameter (mm)", "Short axis (mm)", "Axial slice (index from 0)",
              "Centre (LPS mm)")
    note = ('<p class="meta">Diameters are measured in the axial slice where the lesion is widest '
            "(RECIST-style); the short axis is perpendicular to the long axis in the same slice. "
            "LPS: x grows to the patient's left, y to posterior, z to superior.</p>")
    return _table(header, rows) + note


def _planning_html(planning: Mapping | None) -> str:
    """Resection planning: each lesion's distance to the vessels and, when a region was given, the remnant."""
    if not planning:
        return ""
    parts = [_vessel_distance_table(planning), _remnant_table(planning.get("remnant"))]
    body = "\n".join(part for part in parts if part)
    return f"<h2>Resection planning</h2>\n{body}" if body else ""


def _vessel_distance_table(planning: Mapping) -> str:
    lesions = planning.get("lesions", [])
    if not lesions:
        return ""
    margin = planning["vessel_margin_mm"]
    rows = []
    for lesion in lesions:
        distance, branch = lesion["distance_to_vessels_mm"], lesion["nearest_branch_id"]
        rows.append((
            str(lesion["id"]),
            "no vessel" if distance is None else f"{distance:.1f}",
            "" if distance is None else ("yes" if lesion["vessels_within_10mm"] else "no"),
            "" if branch is None else f"{branch} ({lesion['nearest_branch_volume_ml']:.2f} mL)",
            ", ".join(str(b) for b in lesion["branches_within_10mm"]) or "none",
        ))
    header = ("Lesion", "Distance to vessels (mm)", f"Vessels within {margin:g} mm", "Nearest branch (volume)",
              f"Branches within {margin:g} mm")
    note = (f'<p class="meta">Distance: {_esc(planning["distance_definition"])}. Branch 1 is the largest '
            f"connected vessel tree. {margin:g} mm is a common safety margin in liver surgery.</p>")
    return _table(header, rows) + note


def _remnant_table(remnant: Mapping | None) -> str:
    if not remnant:
        return ""
    rows = [
        ("Whole liver (mL)", f"{remnant['whole_liver_ml']:.1f}"),
        ("Liver inside the resection region (mL)", f"{remnant['resected_liver_ml']:.1f}"),
        ("Liver remnant (mL)", f"{remnant['remnant_ml']:.1f}"),
        ("Liver remnant (% of the whole liver)", f"{remnant['remnant_percent']:.1f} %"),
        ("Tumor volume left in the remnant (mL)", f"{remnant['tumor_in_remnant_ml']:.2f}"),
        *((f"Lesion {lesion['id']} inside the region", f"{100 * lesion['fraction_resected']:.0f} %")
          for lesion in remnant["lesions"]),
    ]
    note = (f'<p class="meta">Resection region: {_esc(remnant["source"])}. The remnant is the whole liver '
            "(parenchyma, vessels and tumors) outside the region.</p>")
    return _table(("Planned resection", "Value"), rows) + note


def _warnings_html(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{_esc(w)}</li>" for w in warnings)
    return f'<div class="warnings"><strong>Warnings</strong><ul>{items}</ul></div>'


def _legend_html() -> str:
    swatches = " &nbsp; ".join(
        f'<span class="swatch" style="background: rgb{s.color_rgb}"></span> {_esc(s.segment_name)}' for s in STRUCTURES
    )
    return f'<p class="meta">{swatches} &nbsp; <span style="color:#b89900">&#9473;</span> longest axial diameter</p>'


def _figure_html(figure: ReportImage) -> str:
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    alt = _esc(figure.caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}" title="views/{_esc(figure.path.name)}">'
            f"<figcaption>{alt}</figcaption></figure>")


def _processing_html(grid: Mapping, inference: Mapping | None) -> str:
    """Image grid, and how the segmentation was computed (device, timings) when a model ran."""
    size = " x ".join(str(n) for n in grid["size_ijk"])
    spacing = " x ".join(f"{s:.3g}" for s in grid["spacing_mm"])
    lines = [f"Image grid: {size} voxels of {spacing} mm."]
    if inference:
        facts = [f"{key}: {value}" for key, value in inference.items() if not isinstance(value, (Mapping, list))]
        lines.append("Processing: " + "; ".join(facts) + ".")
        for key, value in inference.items():
            if isinstance(value, Mapping):
                items = ", ".join(f"{k} {v:.1f} s" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
                lines.append(f"{key}: {items}.")
    return '<h2>Technical details</h2><p class="meta">' + "<br>".join(_esc(line) for line in lines) + "</p>"
