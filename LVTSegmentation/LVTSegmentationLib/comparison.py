"""``lvt compare`` in Slicer: the command's compare.json as a table node, found again through the CT.

The table shows the last comparison of compare.json (the current study against the one before it):
the liver, every matched, new and vanished lesion with its sizes at both times and the change, and
a RECIST 1.1 row whose note says that a radiologist confirms the category. Numbers are copied from
compare.json, never recomputed here: the core owns matching and RECIST (lvt.followup.compare, lvt.followup.recist).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vtk
from slicer import vtkMRMLNode, vtkMRMLScene, vtkMRMLTableNode

from lvt.errors import InputError

from . import hierarchy
from .results import CoreOutput

COMPARE_FILE = "compare.json"
COMPARISON_TABLE_ROLE = "LVT.ComparisonTable"
RECIST_ITEM = "RECIST 1.1"
NOT_APPLICABLE = math.nan

# Text columns, then number columns: (name, unit, description).
TEXT_COLUMNS = (
    ("Item", "Liver, lesion (track number: baseline lesion number, then new ones) or RECIST 1.1"),
    ("Status", "matched, new or vanished; for RECIST 1.1 the category"),
    ("Target", "yes when the lesion is a RECIST 1.1 target lesion"),
)
NUMBER_COLUMNS = (
    ("Volume before", "mL", "Volume in the earlier study (0 when absent)"),
    ("Volume now", "mL", "Volume in the current study (0 when absent)"),
    ("Volume change", "%", "Volume change in percent of the earlier volume"),
    ("Diameter before", "mm", "Longest axial diameter in the earlier study; RECIST: sum of target diameters"),
    ("Diameter now", "mm", "Longest axial diameter now; RECIST: sum of target diameters"),
    ("Diameter change", "mm", "Change of the longest axial diameter (RECIST: of the sum, from baseline)"),
    ("Diameter change %", "%", "Change in percent (RECIST: of the sum, from baseline)"),
)
NOTE_COLUMN = ("Note", "Lesion numbers in each study, RECIST reason and the radiologist-confirmation note")


@dataclass(frozen=True)
class ComparisonRow:
    """One table row: the text cells, the numbers (NaN where they do not apply) and a note."""

    item: str
    status: str
    target: str
    numbers: tuple[float, ...]
    note: str = ""


@dataclass(frozen=True)
class LoadedComparison:
    """The table node filled from compare.json, and the document itself."""

    table: vtkMRMLTableNode
    document: dict[str, Any]


def read_compare_document(output_folder: str | Path) -> dict[str, Any]:
    """compare.json of an ``lvt compare`` output folder.

    Raises:
        InputError: the file is missing or not valid JSON.
    """
    path = Path(output_folder) / COMPARE_FILE
    if not path.is_file():
        raise InputError(path, "missing from the output folder of lvt compare")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"is not valid JSON ({error})") from error


def prior_folder_problem(folder: str | Path) -> str | None:
    """Why a folder cannot be the prior study of ``lvt compare`` (not an ``lvt segment`` output), or None."""
    try:
        CoreOutput.from_folder(folder)
    except InputError as error:
        return str(error)
    return None


def study_labels(prior_name: str, current_name: str) -> list[str]:
    """``--names`` for the two studies: distinct (the core makes a folder per name) and not option-like."""
    names = [name.strip().lstrip("-") or fallback for name, fallback in ((prior_name, "prior"),
                                                                          (current_name, "current"))]
    if names[0] == names[1]:
        names = [f"{names[0]} (prior)", f"{names[1]} (current)"]
    return names


def _number(value: float | None) -> float:
    return NOT_APPLICABLE if value is None else float(value)


def _lesion_note(document: Mapping[str, Any], comparison: Mapping[str, Any], ids: Sequence[Sequence[int]]) -> str:
    """Which lesion numbers of each study's own report the row is (e.g. "lesion 2 in May, lesion 1 in June")."""
    names = [document["studies"][comparison[key]]["name"] for key in ("from_study", "to_study")]
    parts = [f"lesion {', '.join(str(i) for i in lesion_ids)} in {name}"
             for lesion_ids, name in zip(ids, names, strict=True) if lesion_ids]
    return "; ".join(parts)


def _liver_row(document: Mapping[str, Any], comparison: Mapping[str, Any]) -> ComparisonRow:
    volumes = {entry["study"]: entry["whole_volume_ml"] for entry in document["liver_volume"]}
    before, now = volumes[comparison["from_study"]], volumes[comparison["to_study"]]
    change = 100.0 * (now - before) / before if before > 0 else None
    return ComparisonRow("Liver", "measured", "", (before, now, _number(change), *[NOT_APPLICABLE] * 4),
                         "whole liver volume (parenchyma, vessels and tumors)")


def _matched_row(document: Mapping[str, Any], comparison: Mapping[str, Any], entry: Mapping[str, Any]) -> ComparisonRow:
    numbers = (*entry["volume_ml"], _number(entry["volume_change_percent"]), *entry["longest_axial_diameter_mm"],
               float(entry["diameter_change_mm"]), _number(entry["diameter_change_percent"]))
    return ComparisonRow(f"Lesion {entry['track']}", "matched", "yes" if entry["target"] else "",
                         tuple(float(n) for n in numbers), _lesion_note(document, comparison, entry["lesion_ids"]))


def _single_row(document: Mapping[str, Any], comparison: Mapping[str, Any], entry: Mapping[str, Any],
                status: str) -> ComparisonRow:
    """A new lesion (absent before: 0) or a vanished one (absent now: 0)."""
    volume, diameter = float(entry["volume_ml"]), float(entry["longest_axial_diameter_mm"])
    if status == "new":
        numbers = (0.0, volume, NOT_APPLICABLE, 0.0, diameter, diameter, NOT_APPLICABLE)
        ids, extra = [[], entry["lesion_ids"]], "; seen in an earlier study" if entry.get("reappeared") else ""
    else:
        numbers = (volume, 0.0, -100.0, diameter, 0.0, -diameter, -100.0)
        merged = entry.get("coalesced_into")
        ids, extra = [entry["lesion_ids"], []], f"; merged into lesion {merged}" if merged is not None else ""
    return ComparisonRow(f"Lesion {entry['track']}", status, "yes" if entry["target"] else "", numbers,
                         _lesion_note(document, comparison, ids) + extra)


def _recist_row(document: Mapping[str, Any], comparison: Mapping[str, Any]) -> ComparisonRow:
    recist = comparison.get("recist")
    if comparison["status"] != "compared" or recist is None:
        reasons = "; ".join(comparison.get("refusal_reasons", [])) or "no comparison"
        return ComparisonRow(RECIST_ITEM, "not evaluated", "", (NOT_APPLICABLE,) * 7,
                             f"Lesions were not matched: the registration was refused ({reasons}).")
    sums = recist["sum_of_longest_diameters_mm"]
    numbers = (NOT_APPLICABLE, NOT_APPLICABLE, NOT_APPLICABLE, float(sums["baseline"]), float(sums["current"]),
               float(sums["current"] - sums["baseline"]), _number(recist["change_from_baseline_percent"]))
    note = (f"{recist['reason'].rstrip('.')}. Sum of target diameters: baseline {sums['baseline']:.1f} mm, nadir "
            f"{sums['nadir']:.1f} mm, now {sums['current']:.1f} mm. {recist['note']}")
    return ComparisonRow(RECIST_ITEM, recist["category"], "", numbers, note)


def comparison_rows(document: Mapping[str, Any]) -> list[ComparisonRow]:
    """The rows of the last comparison in compare.json: liver, matched, new, vanished lesions, RECIST 1.1."""
    comparison = document["comparisons"][-1]
    rows = [_liver_row(document, comparison)]
    rows += [_matched_row(document, comparison, entry) for entry in comparison["matched"]]
    rows += [_single_row(document, comparison, entry, "new") for entry in comparison["new"]]
    rows += [_single_row(document, comparison, entry, "vanished") for entry in comparison["vanished"]]
    return [*rows, _recist_row(document, comparison)]


def fill_comparison_table(table_node: vtkMRMLTableNode, document: Mapping[str, Any]) -> None:
    """Fill a table node with :func:`comparison_rows` (text, number and note columns; NaN = not applicable)."""
    rows = comparison_rows(document)
    columns: list[vtk.vtkAbstractArray] = []
    for n, (name, _description) in enumerate(TEXT_COLUMNS):
        columns.append(_string_column(name, [(row.item, row.status, row.target)[n] for row in rows]))
    for n, (name, _unit, _description) in enumerate(NUMBER_COLUMNS):
        column = vtk.vtkDoubleArray()
        column.SetName(name)
        for row in rows:
            column.InsertNextValue(row.numbers[n])
        columns.append(column)
    columns.append(_string_column(NOTE_COLUMN[0], [row.note for row in rows]))
    was_modifying = table_node.StartModify()
    table_node.RemoveAllColumns()
    for column in columns:
        table_node.AddColumn(column)
    table_node.SetUseColumnNameAsColumnHeader(True)
    for name, unit, description in NUMBER_COLUMNS:
        table_node.SetColumnUnitLabel(name, unit)
        table_node.SetColumnDescription(name, description)
    for name, description in (*TEXT_COLUMNS, NOTE_COLUMN):
        table_node.SetColumnDescription(name, description)
    table_node.SetLocked(True)
    table_node.EndModify(was_modifying)


def _string_column(name: str, values: Sequence[str]) -> vtk.vtkStringArray:
    column = vtk.vtkStringArray()
    column.SetName(name)
    for value in values:
        column.InsertNextValue(value)
    return column


def load_comparison(
    scene: vtkMRMLScene, output_folder: str | Path, volume_node: vtkMRMLNode | None = None
) -> LoadedComparison:
    """Load compare.json of an ``lvt compare`` output folder into a table node.

    With the current CT's volume node, the table replaces the one a previous comparison attached to
    it (node reference ``LVT.ComparisonTable``) and is placed under the CT's study.

    Raises:
        InputError: compare.json is missing or unreadable.
    """
    document = read_compare_document(output_folder)
    names = [study["name"] for study in document["studies"]]
    comparison = document["comparisons"][-1]
    title = f"Follow-up {names[comparison['from_study']]} to {names[comparison['to_study']]}"
    previous = comparison_table_of(volume_node) if volume_node is not None else None
    table = previous or scene.AddNewNodeByClass("vtkMRMLTableNode")
    table.SetName(title)
    fill_comparison_table(table, document)
    if volume_node is not None:
        volume_node.SetNodeReferenceID(COMPARISON_TABLE_ROLE, table.GetID())
    hierarchy.place_under(scene, [table], hierarchy.study_item_of(scene, volume_node))
    return LoadedComparison(table, document)


def comparison_table_of(volume_node: vtkMRMLNode) -> vtkMRMLTableNode | None:
    """The follow-up table a comparison attached to this CT (None before any)."""
    return volume_node.GetNodeReference(COMPARISON_TABLE_ROLE)


def comparison_summary(document: Mapping[str, Any]) -> str:
    """One line for the panel's status: counts and the suggested RECIST 1.1 category."""
    comparison = document["comparisons"][-1]
    if comparison["status"] != "compared":
        return "Lesions not matched: " + "; ".join(comparison.get("refusal_reasons", []))
    counts = ", ".join(f"{len(comparison[key])} {key}" for key in ("matched", "new", "vanished"))
    category = comparison["recist"]["category"] if comparison.get("recist") else "not evaluated"
    return f"Lesions: {counts}. RECIST 1.1 suggestion: {category} (a radiologist confirms it)."
