"""The follow-up reports: compare.json + compare.html, volumetry.json + volumetry.html.

compare.html shows, for every pair of consecutive studies, each matched, new and vanished lesion
side by side (axial views around the lesion, long axis drawn where it is present; where it is not,
the same place mapped through the registration), and a plot of lesion sizes over all studies.
The views and the page layout are those of the single-study report (:mod:`lvt.measure.report`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lvt.atomic import atomic_path
from lvt.grid import crop
from lvt.image import Image
from lvt.measure.html import PAGE_CSS, REVIEW_NOTE, escape, figure_html, table, warnings_html
from lvt.measure.report import write_report_json
from lvt.measure.views import AXIAL, Caliper, ReportImage, render_view_png

if TYPE_CHECKING:
    from lvt.followup.compare import FollowUp, LesionTrack
    from lvt.followup.studies import Study
    from lvt.measure.volumes_and_lesions import Lesion

logger = logging.getLogger(__name__)

VIEW_HALF_WIDTH_MM = 45.0  # the side-by-side views show this much around the lesion in each direction


# ----------------------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class ViewPair:
    """One lesion in two studies, side by side."""

    caption: str
    before: ReportImage | None
    after: ReportImage | None


def write_compare_report(folder: Path, document: dict, followup: FollowUp) -> Path:
    """Write compare.json, compare.html and views/*.png into ``folder``.

    Args:
        folder: output folder (exists).
        document: from :func:`lvt.followup.document.followup_document`.
        followup: the follow-up the document describes (images and registrations for the views).

    Returns:
        The path of compare.html.
    """
    folder = Path(folder)
    views = folder / "views"
    views.mkdir(parents=True, exist_ok=True)
    plot = ReportImage(plot_sizes_over_time(document, views / "sizes_over_time.png"),
                       "Longest axial diameter and volume of each lesion over the studies")
    pairs = {c["to_study"]: comparison_views(document, c, followup, views) for c in document["comparisons"]}
    write_report_json(document, folder / "compare.json")
    page = folder / "compare.html"
    with atomic_path(page) as temporary:
        temporary.write_text(render_compare_html(document, plot, pairs), encoding="utf-8")
    return page


def comparison_views(document: Mapping, comparison: Mapping, followup: FollowUp, views: Path) -> list[ViewPair]:
    """Side-by-side axial views of every matched, new and vanished lesion of one comparison."""
    if comparison["status"] != "compared":
        return []
    before, after = comparison["from_study"], comparison["to_study"]
    tracks = {track.id: track for track in followup.tracks}
    pairs = []
    for kind in ("matched", "new", "vanished"):
        for entry in comparison[kind]:
            track = tracks[entry["track"]]
            caption = f"Lesion {track.id} ({kind}): {_study_name(document, before)} | {_study_name(document, after)}"
            images = _pair_images(followup, track, (before, after), views / f"study{after}_lesion{track.id}")
            pairs.append(ViewPair(caption, *images))
    return pairs


def _study_name(document: Mapping, index: int) -> str:
    return str(document["studies"][index]["name"])


def _name_cell(document: Mapping, index: int) -> str:
    """A study's name escaped for a table cell (cells are HTML, headers are escaped by ``table``)."""
    return escape(_study_name(document, index))


def _pair_images(followup: FollowUp, track: LesionTrack, studies: tuple[int, int],
                 stem: Path) -> tuple[ReportImage | None, ReportImage | None]:
    """Render the lesion in both studies; where it is absent, at its place mapped from the other study."""
    lesions = {s: followup.lesions_of(track, s) for s in studies}
    present = next(s for s in studies if lesions[s])
    centre = _long_axis_middle(lesions[present][0])
    images = []
    for study in studies:
        point = centre if study == present else followup.map_point(centre, present, study)
        calipers = [Caliper(tuple(lesion.diameters.long_axis_endpoints_lps_mm),
                            f"{lesion.diameters.longest_mm:.1f} mm", True) for lesion in lesions[study]]
        title = f"{followup.studies[study].name}" + ("" if lesions[study] else " (not found here)")
        images.append(_zoomed_view(followup.studies[study], point, calipers, Path(f"{stem}_{study}.png"), title))
    return images[0], images[1]


def _long_axis_middle(lesion: Lesion) -> np.ndarray:
    return np.asarray(lesion.diameters.long_axis_endpoints_lps_mm, dtype=float).mean(axis=0)


def _zoomed_view(study: Study, point_lps: np.ndarray, calipers: Sequence[Caliper], path: Path,
                 title: str) -> ReportImage | None:
    """An axial view of ``VIEW_HALF_WIDTH_MM`` around a point; None when the point is outside the study."""
    box = _box_around(study.labels, point_lps, VIEW_HALF_WIDTH_MM)
    if box is None:
        return None
    ct = None if study.ct is None else crop(study.ct, box)
    render_view_png(ct, crop(study.labels, box), AXIAL, point_lps, path, title=title, calipers=calipers)
    return ReportImage(path, title)


def _box_around(grid: Image, point_lps: np.ndarray, half_width_mm: float) -> tuple[slice, slice, slice] | None:
    """Index box (k, j, i) of the voxels within ``half_width_mm`` of a point along each grid axis."""
    centre = grid.lps_to_ijk(point_lps)[0]
    half = half_width_mm / np.asarray(grid.spacing_mm)
    low = np.maximum(np.floor(centre - half).astype(int), 0)
    high = np.minimum(np.ceil(centre + half).astype(int) + 1, grid.size_ijk)
    if np.any(centre < -0.5) or np.any(centre > np.asarray(grid.size_ijk) - 0.5) or np.any(high <= low):
        return None
    return tuple(slice(int(low[a]), int(high[a])) for a in (2, 1, 0))  # type: ignore[return-value]


def _series(document: Mapping, track: Mapping, key: str) -> list[float]:
    """A track's value per study; NaN where it was not yet seen or not evaluated."""
    return [float("nan") if entry[key] is None else float(entry[key]) for entry in track["per_study"]]


def plot_sizes_over_time(document: Mapping, path: Path) -> Path:
    """Line plot of every lesion's longest axial diameter and volume over the studies, with the target SLD."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [study["name"] for study in document["studies"]]
    x = np.arange(len(names))
    figure = Figure(figsize=(8.0, 6.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    diameter_axes, volume_axes = figure.subplots(2, 1, sharex=True)
    for track in document["tracks"]:
        label = f"lesion {track['id']}" + (" (target)" if track["target"] else "")
        style = {"linewidth": 2.0} if track["target"] else {"linewidth": 1.0, "alpha": 0.8}
        diameter_axes.plot(x, _series(document, track, "longest_axial_diameter_mm"), marker="o", label=label, **style)
        volume_axes.plot(x, _series(document, track, "volume_ml"), marker="o", **style)
    sums = [float("nan")] + [float("nan") if c["recist"] is None else c["recist"]["sum_of_longest_diameters_mm"]
                             ["current"] for c in document["comparisons"]]
    if document["recist"]["targets"]:
        sums[0] = sum(t["baseline_longest_axial_diameter_mm"] for t in document["recist"]["targets"])
        diameter_axes.plot(x, sums, color="black", linestyle="--", linewidth=2.0, marker="s",
                           label="sum of target diameters")
    diameter_axes.set_ylabel("longest axial diameter (mm)")
    volume_axes.set_ylabel("volume (mL)")
    volume_axes.set_xticks(x, names, rotation=20)
    for axes in (diameter_axes, volume_axes):
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0)
    if document["tracks"]:
        diameter_axes.legend(fontsize=8, loc="best")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return path


def render_compare_html(document: Mapping, plot: ReportImage, pairs: Mapping[int, Sequence[ViewPair]]) -> str:
    """compare.html as one self-contained page (CSS inline, images embedded)."""
    studies = "<br>".join(f"{s['index'] + 1}. {escape(s['name'])}: {escape(s['source'])}" for s in document["studies"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>LVT follow-up comparison</title>',
        f"<style>{PAGE_CSS}{_PAIR_CSS}</style></head><body>",
        "<h1>Follow-up comparison</h1>",
        f'<p class="meta">{studies}<br>LVT {escape(document["lvt_version"])}</p>',
        f'<p class="review"><strong>For review.</strong> {escape(REVIEW_NOTE)} '
        f'{escape(document["recist"]["note"])}</p>',
        warnings_html(document["warnings"]),
        "<h2>Alignment of the livers</h2>", _registration_table(document),
        "<h2>Liver volume</h2>", _liver_table(document),
        "<h2>Response (RECIST 1.1)</h2>", f'<p class="meta">{escape(document["recist"]["target_rule"])}</p>',
        _recist_table(document),
        "<h2>Lesions over time</h2>", _series_table(document), figure_html(plot),
    ]
    for comparison in document["comparisons"]:
        parts += _comparison_html(document, comparison, pairs.get(comparison["to_study"], ()))
    parts.append("</body></html>")
    return "\n".join(part for part in parts if part)


_PAIR_CSS = """
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 0.5em; margin-bottom: 1.2em; }
.pair h3 { grid-column: 1 / 3; font-size: 1em; margin: 0.4em 0 0; }
"""


def _number(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _signed(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:+.{digits}f}{suffix}"


def _registration_table(document: Mapping) -> str:
    rows = []
    for entry in document["registrations"][1:]:
        residual = entry["residual"]
        rows.append((_name_cell(document, entry["study"]), _name_cell(document, 0), escape(entry["driven_by"]),
                     "accepted" if entry["accepted"] else "<strong>refused</strong>",
                     f"{residual['liver_dice']:.3f}", f"{residual['mean_surface_distance_mm']:.2f}",
                     ", ".join(f"{s:.3f}" for s in residual["scale_factors"]),
                     _number(residual["ct_correlation"], 2), escape("; ".join(entry["refusal_reasons"]) or "–")))
    header = ("Study", "Aligned to", "Driven by", "Result", "Liver Dice", "Mean surface distance (mm)",
              "Scale factors", "CT correlation", "Why refused")
    return table(header, rows, text_columns=4)


def _liver_table(document: Mapping) -> str:
    rows = [(_name_cell(document, e["study"]), f"{e['whole_volume_ml']:.1f}",
             _signed(e.get("change_from_previous_ml")), _signed(e.get("change_from_previous_percent"), 1, " %"),
             _signed(e.get("change_from_baseline_ml")), _signed(e.get("change_from_baseline_percent"), 1, " %"))
            for e in document["liver_volume"]]
    header = ("Study", "Whole liver (mL)", "Change from previous (mL)", "(%)", "Change from baseline (mL)", "(%)")
    return table(header, rows)


def _recist_table(document: Mapping) -> str:
    rows = []
    for comparison in document["comparisons"]:
        recist = comparison["recist"]
        if recist is None:
            rows.append((_name_cell(document, comparison["to_study"]), "–", "–", "–", "–", "–", "not evaluated",
                         "registration refused"))
            continue
        sums = recist["sum_of_longest_diameters_mm"]
        rows.append((_name_cell(document, comparison["to_study"]), f"{sums['baseline']:.1f}", f"{sums['nadir']:.1f}",
                     f"{sums['current']:.1f}", _signed(recist["change_from_baseline_percent"], 1, " %"),
                     ", ".join(str(t) for t in recist["new_lesion_tracks"]) or "none",
                     f"<strong>{escape(recist['category'])}</strong>", escape(recist["reason"])))
    header = ("Study", "SLD baseline (mm)", "SLD nadir (mm)", "SLD now (mm)", "Change from baseline",
              "New lesions", "Category (to be confirmed)", "Why")
    return table(header, rows)


def _series_table(document: Mapping) -> str:
    if not document["tracks"]:
        return "<p>No lesion in any study.</p>"
    rows = []
    for track in document["tracks"]:
        cells = []
        for entry in track["per_study"]:
            if entry["longest_axial_diameter_mm"] is None:
                cells.append(escape(entry["status"]))
            else:
                cells.append(f"{entry['longest_axial_diameter_mm']:.1f} mm / {entry['volume_ml']:.2f} mL"
                             + ("" if entry["status"] == "present" else f" ({escape(entry['status'])})"))
        rows.append((f"{track['id']}" + (" (target)" if track["target"] else ""), *cells))
    header = ("Lesion", *(s["name"] for s in document["studies"]))
    note = ('<p class="meta">Longest axial diameter / volume per study; a lesion that split is the sum of its parts '
            "(RECIST 1.1). Lesion numbers are the baseline report's; new lesions are numbered after them.</p>")
    return table(header, rows) + note


def _comparison_html(document: Mapping, comparison: Mapping, pairs: Sequence[ViewPair]) -> list[str]:
    before, after = _study_name(document, comparison["from_study"]), _study_name(document, comparison["to_study"])
    parts = [f"<h2>{escape(before)} &rarr; {escape(after)}</h2>"]
    if comparison["status"] != "compared":
        reasons = "".join(f"<li>{escape(r)}</li>" for r in comparison["refusal_reasons"])
        return [*parts, f'<div class="warnings"><strong>Lesions not matched: the alignment was refused.</strong>'
                        f"<ul>{reasons}</ul></div>"]
    rows = [(str(m["track"]), ", ".join(map(str, m["lesion_ids"][0])), ", ".join(map(str, m["lesion_ids"][1])),
             f"{m['volume_ml'][0]:.2f} → {m['volume_ml'][1]:.2f}", _signed(m["volume_change_ml"], 2),
             _signed(m["volume_change_percent"], 1, " %"),
             f"{m['longest_axial_diameter_mm'][0]:.1f} → {m['longest_axial_diameter_mm'][1]:.1f}",
             _signed(m["diameter_change_mm"]), _signed(m["diameter_change_percent"], 1, " %"))
            for m in comparison["matched"]]
    header = ("Lesion", f"Id in {before}", f"Id in {after}", "Volume (mL)", "Change (mL)", "(%)",
              "Longest axial diameter (mm)", "Change (mm)", "(%)")
    parts += ["<h3>Matched lesions</h3>", table(header, rows) if rows else "<p>None.</p>",
              "<h3>New lesions</h3>", _single_table(comparison["new"], after),
              "<h3>Vanished lesions</h3>", _single_table(comparison["vanished"], before)]
    for pair in pairs:
        cells = [figure_html(image) if image else "<p>Outside the field of view.</p>"
                 for image in (pair.before, pair.after)]
        parts.append(f'<div class="pair"><h3>{escape(pair.caption)}</h3>{cells[0]}{cells[1]}</div>')
    return parts


def _single_table(entries: Sequence[Mapping], study: str) -> str:
    if not entries:
        return "<p>None.</p>"
    rows = [(str(e["track"]), ", ".join(map(str, e["lesion_ids"])), f"{e['volume_ml']:.2f}",
             f"{e['longest_axial_diameter_mm']:.1f}", _note(e)) for e in entries]
    return table(("Lesion", f"Id in {study}", "Volume (mL)", "Longest axial diameter (mm)", "Note"), rows)


def _note(entry: Mapping) -> str:
    if entry.get("reappeared"):
        return "seen before, absent in between"
    if entry.get("coalesced_into") is not None:
        return f"merged into lesion {entry['coalesced_into']}"
    return ""


# --------------------------------------------------------------------------------------- volumetry


def write_volumetry_report(folder: Path, document: dict) -> Path:
    """Write volumetry.json, volumetry.html and views/volumetry.png into ``folder``.

    Args:
        folder: output folder (exists).
        document: from :func:`lvt.followup.volumetry.volumetry_document`.

    Returns:
        The path of volumetry.html.
    """
    folder = Path(folder)
    (folder / "views").mkdir(parents=True, exist_ok=True)
    chart = ReportImage(plot_volumetry(document, folder / "views" / "volumetry.png"),
                        "Deviation of each phase's liver volume from the mean; the band is the flag threshold")
    write_report_json(document, folder / "volumetry.json")
    page = folder / "volumetry.html"
    with atomic_path(page) as temporary:
        temporary.write_text(render_volumetry_html(document, chart), encoding="utf-8")
    return page


def plot_volumetry(document: Mapping, path: Path) -> Path:
    """Bar chart of each phase's deviation from the mean liver volume, with the ±threshold band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    phases = document["phases"]
    threshold = document["threshold_percent"]
    deviations = [p["deviation_from_mean_percent"] for p in phases]
    figure = Figure(figsize=(7.0, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    colours = ["#d93025" if p["flagged"] else "#dd8265" for p in phases]
    bars = axes.bar(range(len(phases)), deviations, color=colours)
    axes.bar_label(bars, [f"{p['liver_volume_ml']:.0f} mL" for p in phases], padding=3, fontsize=9)
    axes.axhspan(-threshold, threshold, color="grey", alpha=0.2)
    axes.axhline(0.0, color="black", linewidth=1.0)
    limit = max(1.5 * threshold, 1.3 * max(abs(d) for d in deviations))
    axes.set_ylim(-limit, limit)
    axes.set_xticks(range(len(phases)), [p["name"] for p in phases], rotation=15)
    axes.set_ylabel(f"deviation from the mean {document['mean_liver_volume_ml']:.0f} mL (%)")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return path


def render_volumetry_html(document: Mapping, chart: ReportImage) -> str:
    """volumetry.html as one self-contained page."""
    rows = [(escape(p["name"]), escape(p["source"]), f"{p['liver_volume_ml']:.1f}",
             _signed(p["deviation_from_mean_percent"], 2, " %"), "<strong>flagged</strong>" if p["flagged"] else "")
            for p in document["phases"]]
    phase_table = table(("Phase", "Source", "Whole liver (mL)", "Deviation from mean", ""), rows, text_columns=2)
    summary = (f"Mean {document['mean_liver_volume_ml']:.1f} mL; largest deviation "
               f"{document['max_abs_deviation_percent']:.2f} %; phases deviating more than "
               f"{document['threshold_percent']:g} % are flagged.")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>LVT liver volumetry across phases</title>',
        f"<style>{PAGE_CSS}</style></head><body>",
        "<h1>Liver volume across contrast phases</h1>",
        f'<p class="review"><strong>For review.</strong> {escape(REVIEW_NOTE)}</p>',
        warnings_html(document["warnings"]),
        f"<p>{escape(summary)}</p>", phase_table,
        f'<p class="meta">{escape(document["note"])}</p>',
        figure_html(chart),
        "</body></html>",
    ])
