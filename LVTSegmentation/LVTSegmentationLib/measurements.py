"""The core's report.json as Slicer nodes: a summary table, a lesion table and one line markup per lesion.

Numbers are copied from report.json, never recomputed here: the core owns the measurement
conventions (lvt.measure.volumes_and_lesions). Points are converted from the report's LPS to Slicer's RAS with the
core's own :func:`lvt.image.lps_to_ras`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import vtk
from slicer import vtkMRMLMarkupsLineNode, vtkMRMLScene, vtkMRMLTableNode

from lvt.image import lps_to_ras
from lvt.measure.reliability import reliability_problems

LESION_ID_ATTRIBUTE = "LVT.LesionId"


@dataclass(frozen=True)
class SummaryRow:
    """One row of the summary table: where in report.json the value lives, and how it is shown."""

    label: str
    section: str
    key: str
    unit: str


SUMMARY_ROWS: tuple[SummaryRow, ...] = (
    SummaryRow("Liver volume (whole)", "liver", "whole_volume_ml", "mL"),
    SummaryRow("Liver parenchyma volume", "liver", "parenchyma_volume_ml", "mL"),
    SummaryRow("Vessel volume", "vessels", "volume_ml", "mL"),
    SummaryRow("Tumor count", "tumors", "count", ""),
    SummaryRow("Tumor burden (total volume)", "tumors", "total_volume_ml", "mL"),
    SummaryRow("Tumor-to-liver volume ratio", "tumors", "tumor_to_liver_volume_ratio", "fraction"),
)

# Shown after SUMMARY_ROWS when report.json's "planning" holds a "remnant" (lvt measure --resection).
REMNANT_ROWS: tuple[SummaryRow, ...] = (
    SummaryRow("Liver in the resection region", "remnant", "resected_liver_ml", "mL"),
    SummaryRow("Liver remnant volume", "remnant", "remnant_ml", "mL"),
    SummaryRow("Liver remnant (of the whole liver)", "remnant", "remnant_percent", "%"),
)


@dataclass(frozen=True)
class LesionColumn:
    """One numeric column of the lesion table, read from a lesion entry of report.json."""

    name: str
    unit: str
    description: str


LESION_COLUMNS: tuple[LesionColumn, ...] = (
    LesionColumn("Lesion", "", "Lesion number, 1 = largest volume"),
    LesionColumn("Volume", "mL", "Lesion volume (voxel count x voxel volume)"),
    LesionColumn("Longest axial diameter", "mm", "Longest diameter within one axial slice (RECIST-style)"),
    LesionColumn("Short axis diameter", "mm", "Longest extent perpendicular to the long axis, same slice"),
    LesionColumn("Axial slice", "", "Index of the slice of the diameters along the grid's axial axis"),
    LesionColumn("Centroid R", "mm", "Lesion centroid, RAS"),
    LesionColumn("Centroid A", "mm", "Lesion centroid, RAS"),
    LesionColumn("Centroid S", "mm", "Lesion centroid, RAS"),
)


def summary_values(report: Mapping[str, Any]) -> list[float]:
    """The summary numbers in :data:`SUMMARY_ROWS` order, exactly as report.json holds them."""
    return [float(report[row.section][row.key]) for row in SUMMARY_ROWS]


def lesion_row(lesion: Mapping[str, Any]) -> list[float]:
    """One lesion's numbers in :data:`LESION_COLUMNS` order (the centroid converted to RAS)."""
    centroid_ras = lps_to_ras(np.asarray(lesion["centroid_lps_mm"], dtype=float))[0]
    return [
        float(lesion["id"]),
        float(lesion["volume_ml"]),
        float(lesion["longest_axial_diameter_mm"]),
        float(lesion["short_axis_diameter_mm"]),
        float(lesion["axial_slice_index"]),
        *(float(c) for c in centroid_ras),
    ]


def long_axis_ras(lesion: Mapping[str, Any]) -> np.ndarray:
    """(2, 3) RAS end points of a lesion's longest axial diameter."""
    return lps_to_ras(np.asarray(lesion["long_axis_endpoints_lps_mm"], dtype=float))


def lesion_focus_ras(lesion: Mapping[str, Any]) -> np.ndarray:
    """Where to centre the slice views for a lesion: the middle of its diameter line.

    The middle of the line (not the centroid) lies on the slice where the diameter was measured,
    so the user sees the line markup and the lesion's widest section together.
    """
    return long_axis_ras(lesion).mean(axis=0)


def remnant_values(report: Mapping[str, Any]) -> list[tuple[SummaryRow, float]]:
    """The :data:`REMNANT_ROWS` with their values, or nothing when no resection region was given."""
    remnant = (report.get("planning") or {}).get("remnant")
    return [(row, float(remnant[row.key])) for row in REMNANT_ROWS] if remnant else []


def reliability_notes(report: Mapping[str, Any]) -> list[str]:
    """The lines the module shows under the summary: why the numbers may not hold, then what the model is worth.

    Recomputed from report.json by the core's own check, so a report written before the check existed
    gets its warnings too.
    """
    sentence = report.get("model_reliability")
    return [*reliability_problems(report), *([str(sentence)] if sentence else [])]


def fill_summary_table(table_node: vtkMRMLTableNode, report: Mapping[str, Any]) -> None:
    """Fill a table node with the liver, vessel and tumor-burden numbers (Measurement | Value | Unit).

    The liver remnant follows when the report has one.
    """
    labels, values, units = vtk.vtkStringArray(), vtk.vtkDoubleArray(), vtk.vtkStringArray()
    labels.SetName("Measurement")
    values.SetName("Value")
    units.SetName("Unit")
    for row, value in [*zip(SUMMARY_ROWS, summary_values(report), strict=True), *remnant_values(report)]:
        labels.InsertNextValue(row.label)
        values.InsertNextValue(value)
        units.InsertNextValue(row.unit)
    _replace_columns(table_node, [labels, values, units])


def fill_lesion_table(table_node: vtkMRMLTableNode, lesions: Sequence[Mapping[str, Any]]) -> None:
    """Fill a table node with one row per lesion (:data:`LESION_COLUMNS`), in report order."""
    columns = []
    rows = [lesion_row(lesion) for lesion in lesions]
    for n, spec in enumerate(LESION_COLUMNS):
        column = vtk.vtkIntArray() if spec.name in ("Lesion", "Axial slice") else vtk.vtkDoubleArray()
        column.SetName(spec.name)
        for row in rows:
            column.InsertNextValue(int(row[n]) if isinstance(column, vtk.vtkIntArray) else row[n])
        columns.append(column)
    _replace_columns(table_node, columns)
    for spec in LESION_COLUMNS:
        if spec.unit:
            table_node.SetColumnUnitLabel(spec.name, spec.unit)
        table_node.SetColumnDescription(spec.name, spec.description)


def add_lesion_lines(
    scene: vtkMRMLScene, lesions: Sequence[Mapping[str, Any]], prefix: str
) -> list[vtkMRMLMarkupsLineNode]:
    """One line markup per lesion along its longest axial diameter, in RAS.

    The lines are locked: they show the core's measurement, and moving one would silently
    disagree with the table. Each carries its lesion id in the ``LVT.LesionId`` attribute.
    """
    lines = []
    for lesion in lesions:
        line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", f"{prefix} lesion {lesion['id']}")
        line.CreateDefaultDisplayNodes()
        for point in long_axis_ras(lesion):
            line.AddControlPointWorld(*(float(c) for c in point))
        line.SetAttribute(LESION_ID_ATTRIBUTE, str(lesion["id"]))
        line.SetLocked(True)
        line.SetDescription(
            f"Longest axial diameter {float(lesion['longest_axial_diameter_mm']):.1f} mm "
            f"(slice {lesion['axial_slice_index']})"
        )
        lines.append(line)
    return lines


def _replace_columns(table_node: vtkMRMLTableNode, columns: Sequence[vtk.vtkAbstractArray]) -> None:
    was_modifying = table_node.StartModify()
    table_node.RemoveAllColumns()
    for column in columns:
        table_node.AddColumn(column)
    table_node.SetUseColumnNameAsColumnHeader(True)
    table_node.SetLocked(True)
    table_node.EndModify(was_modifying)
