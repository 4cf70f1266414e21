"""report.html: the page the clinician reads, one self-contained file (CSS inline, images embedded).

The 2D views come from :mod:`lvt.measure.views`, the 3D view from :mod:`lvt.measure.surface_view`;
when this machine cannot render off screen the page is written without the 3D view and says so.
The follow-up reports (:mod:`lvt.followup.report`) share this page's style and pieces.
"""

from __future__ import annotations

import base64
import html
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lvt.atomic import atomic_path
from lvt.image import Image
from lvt.labels import STRUCTURES
from lvt.measure.reliability import NO_LIVER_ASSESSMENT, cut_sides_text, liver_found
from lvt.measure.surface_view import OffscreenRenderingError, render_surfaces_png
from lvt.measure.views import ReportImage, report_views
from lvt.progress import check_cancel

if TYPE_CHECKING:
    from vtkmodules.vtkCommonDataModel import vtkPolyData

logger = logging.getLogger(__name__)

REVIEW_NOTE = (
    "Computed automatically by research software. Every contour and measurement must be reviewed by a "
    "physician before it is used for any clinical decision."
)


def write_html_report(
    report: dict,
    ct: Image | None,
    labels: Image,
    surfaces: Mapping[str, vtkPolyData] | None,
    folder: Path | str,
    cancel: threading.Event | None = None,
) -> Path:
    """Write ``report.html`` and ``views/*.png`` into ``folder``; each view is a cancel point.

    Views: axial, coronal and sagittal through the largest lesion (long axis drawn on the axial one)
    and through the liver centre, plus a 3D view of the surfaces. When the 3D view cannot be
    rendered here, a warning is appended to ``report["warnings"]`` (write report.json afterwards)
    and the page is written without it.

    Args:
        report: from :func:`lvt.measure.report.build_report`.
        ct: the CT for the background, or None (labels on black).
        labels: the exclusive label map the report measured.
        surfaces: from :func:`lvt.measure.surfaces.extract_surfaces`, or None for no 3D view.
        folder: output folder.
        cancel: stops the rendering (:class:`lvt.errors.CancelledError`) when set.

    Returns:
        The path of report.html.
    """
    figures = report_views(report, ct, labels, views_folder(folder), cancel)
    check_cancel(cancel)
    return write_report_page(report, [*figures, *surface_view_figure(report, surfaces, folder)], folder)


def views_folder(folder: Path | str) -> Path:
    """``folder/views``, made if missing: where the report's PNG views go."""
    views = Path(folder) / "views"
    views.mkdir(parents=True, exist_ok=True)
    return views


def surface_view_figure(report: dict, surfaces: Mapping[str, vtkPolyData] | None,
                        folder: Path | str) -> list[ReportImage]:
    """The 3D view of ``surfaces`` written under ``folder/views``: one report image, or none without surfaces.

    When this machine cannot render off screen, a warning is appended to ``report["warnings"]``
    (write report.json afterwards) and there is no image.
    """
    if not surfaces:
        return []
    try:
        path = render_surfaces_png(surfaces, views_folder(folder) / "surfaces_3d.png")
    except OffscreenRenderingError as error:
        message = f"3D view not rendered: {error}"
        logger.warning(message)
        report["warnings"].append(message)
        return []
    return [ReportImage(path, "3D view from the front (patient's right on the left)")]


def write_report_page(report: Mapping, figures: Sequence[ReportImage], folder: Path | str) -> Path:
    """Write ``folder/report.html`` with views already drawn (:func:`report_views`, :func:`surface_view_figure`).

    Apart from drawing them so that a caller can draw the 2D views while it builds the surfaces.
    """
    page = Path(folder) / "report.html"
    with atomic_path(page) as temporary:
        temporary.write_text(render_html(report, figures), encoding="utf-8")
    return page


# The style of every LVT page (the follow-up pages add their own rules after it).
PAGE_CSS = """
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


def _series_html(source: Mapping) -> str:
    """The DICOM series that was measured and the others in the folder (a wrong series is a silent error)."""
    series = source.get("dicom_series")
    if not series:
        return ""
    def one(info: Mapping) -> str:
        return f"{info['uid']} ('{info['description']}', {info['modality']}, {info['num_slices']} slices)"
    others = source.get("other_dicom_series") or []
    text = f"<br>DICOM series used: {escape(one(series))}"
    if others:
        text += f"<br>Other series in the folder (not used): {escape('; '.join(one(o) for o in others))}"
    return text


def render_html(report: Mapping, figures: Sequence[ReportImage]) -> str:
    """The report page as one self-contained HTML string (CSS inline, images embedded)."""
    model = report["model"]
    model_text = f"{model['name']} {model['version']}" if model else "none (existing segmentation measured)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>LVT Segmentation report</title>',
        f"<style>{PAGE_CSS}</style></head><body>",
        "<h1>Liver, vessel and tumor segmentation</h1>",
        warnings_html(report["warnings"]),
        f'<p class="meta">Input: {escape(report["input"]["path"])}{_series_html(report["input"])}'
        f'<br>Model: {escape(model_text)} &middot; LVT {escape(report["lvt_version"])}</p>',
        f'<p class="review"><strong>For review.</strong> {escape(REVIEW_NOTE)}</p>',
        "<h2>Liver</h2>",
        _volumes_table(report),
        "<h2>Tumor burden</h2>",
        _model_reliability_html(report.get("model_reliability")),
        _burden_table(report["tumors"]) if liver_found(report) else _no_assessment_html(),
        "<h2>Lesions</h2>",
        _lesion_table(report["lesions"]) if liver_found(report) else _no_assessment_html(),
        _planning_html(report.get("planning")),
        "<h2>Views</h2>",
        _legend_html(),
        '<div class="views">',
        *(figure_html(figure) for figure in figures),
        "</div>",
        _processing_html(report["input"], report["inference"]),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part)


def escape(value: object) -> str:
    """Any value as HTML text: file names and model names may hold ``<`` or ``&``."""
    return html.escape(str(value))


def table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """An HTML table; the first ``text_columns`` columns are left-aligned text, the rest numbers."""
    def cell(tag: str, index: int, value: str) -> str:
        css = ' class="text"' if index < text_columns else ""
        return f"<{tag}{css}>{value}</{tag}>"

    head = "".join(cell("th", n, escape(h)) for n, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", n, v) for n, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _volumes_table(report: Mapping) -> str:
    """The volumes; a liver cut by the image's edge is shown as a lower bound (&ge;) with the sides it is cut at."""
    liver, vessels = report["liver"], report["vessels"]
    cut = (report.get("liver_cut_by_image_edge") or []) if liver_found(report) else []
    at_least = "&ge; " if cut else ""
    rows = [
        ("Whole liver (parenchyma, vessels and tumors)", f"{at_least}{liver['whole_volume_ml']:.1f}"),
        ("Liver parenchyma", f"{at_least}{liver['parenchyma_volume_ml']:.1f}"),
        ("Intrahepatic vessels", f"{vessels['volume_ml']:.1f}"),
    ]
    note = (f'<p class="warnings"><strong>Lower bound.</strong> The liver reaches {escape(cut_sides_text(cut))}: '
            "it goes on beyond the image, so the liver volumes are lower bounds.</p>") if cut else ""
    return table(("Structure", "Volume (mL)"), rows) + note


def _no_assessment_html() -> str:
    """Said instead of the tumor numbers when there is no liver: an empty table would read as a negative finding."""
    return f'<p class="warnings"><strong>{escape(NO_LIVER_ASSESSMENT)}</strong></p>'


def _model_reliability_html(sentence: str | None) -> str:
    """What the model's tumor output can be trusted for, from its manifest (nothing when no model ran)."""
    return f'<p class="review"><strong>Model on real CT.</strong> {escape(sentence)}</p>' if sentence else ""


def _burden_table(tumors: Mapping) -> str:
    rows = [
        ("Number of lesions", str(tumors["count"])),
        ("Total tumor volume (mL)", f"{tumors['total_volume_ml']:.2f}"),
        ("Tumor-to-liver volume ratio", f"{100 * tumors['tumor_to_liver_volume_ratio']:.2f} %"),
    ]
    if tumors["dropped"]:
        rows.append((f"Candidates below {tumors['min_volume_ml']:g} mL not counted", str(len(tumors["dropped"]))))
    return table(("", "Value"), rows)


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
    return table(header, rows) + note


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
    note = (f'<p class="meta">Distance: {escape(planning["distance_definition"])}. Branch 1 is the largest '
            f"connected vessel tree. {margin:g} mm is a common safety margin in liver surgery.</p>")
    return table(header, rows) + note


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
    note = (f'<p class="meta">Resection region: {escape(remnant["source"])}. The remnant is the whole liver '
            "(parenchyma, vessels and tumors) outside the region.</p>")
    return table(("Planned resection", "Value"), rows) + note


def warnings_html(warnings: Sequence[str]) -> str:
    """The warnings box at the top of a page; nothing when there are no warnings."""
    if not warnings:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
    return f'<div class="warnings"><strong>Warnings</strong><ul>{items}</ul></div>'


def _legend_html() -> str:
    swatches = " &nbsp; ".join(
        f'<span class="swatch" style="background: rgb{s.color_rgb}"></span> {escape(s.segment_name)}'
        for s in STRUCTURES
    )
    return f'<p class="meta">{swatches} &nbsp; <span style="color:#b89900">&#9473;</span> longest axial diameter</p>'


def figure_html(figure: ReportImage) -> str:
    """One image embedded in the page (base64), so the page stays one file that can be mailed."""
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    alt = escape(figure.caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}" title="views/{escape(figure.path.name)}">'
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
    return '<h2>Technical details</h2><p class="meta">' + "<br>".join(escape(line) for line in lines) + "</p>"
