"""Load one output folder of the core (``lvt segment`` or ``lvt measure``) into a Slicer scene.

What the user gets: the segmentation node (names, colours, terminology from the file; the CT as
reference geometry; closed surfaces smoothed per structure), a summary and a lesion table, one
line markup per lesion along its diameter and one from it to the nearest vessel, the report kept in
the scene, all placed under the CT's study.

Everything the module needs later (the tables, the lines, the report) is found again through node
references on the segmentation node, so it survives saving and reloading the scene.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from slicer import (
    vtkMRMLMarkupsLineNode,
    vtkMRMLNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLScene,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)

from lvt.errors import InputError
from lvt.image import Image

from . import hierarchy, measurements, planning, segmentation

SEGMENTATION_FILE = "segmentation.seg.nrrd"
REPORT_FILE = "report.json"
HTML_REPORT_FILE = "report.html"

SUMMARY_TABLE_ROLE = "LVT.SummaryTable"
LESION_TABLE_ROLE = "LVT.LesionTable"
LESION_LINE_ROLE = "LVT.LesionLine"
VESSEL_LINE_ROLE = "LVT.VesselLine"
REPORT_ROLE = "LVT.Report"
HTML_REPORT_ROLE = "LVT.HtmlReport"
_MEASUREMENT_ROLES = (SUMMARY_TABLE_ROLE, LESION_TABLE_ROLE, LESION_LINE_ROLE, VESSEL_LINE_ROLE, REPORT_ROLE,
                      HTML_REPORT_ROLE)

LIVER_OPACITY_3D = 0.4  # see vessels and tumors through the liver


@dataclass(frozen=True)
class CoreOutput:
    """The files of one core output folder, checked, and its parsed report."""

    folder: Path
    segmentation_path: Path
    report: dict[str, Any]
    html_report_path: Path | None

    @classmethod
    def from_folder(cls, folder: str | Path) -> CoreOutput:
        """Check the folder holds the contract's files and read report.json.

        Raises:
            InputError: a file is missing or report.json is not valid JSON.
        """
        folder = Path(folder)
        segmentation_path, report_path = folder / SEGMENTATION_FILE, folder / REPORT_FILE
        for path in (segmentation_path, report_path):
            if not path.is_file():
                raise InputError(path, "missing from the core's output folder")
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(report_path, f"is not valid JSON ({error})") from error
        html = folder / HTML_REPORT_FILE
        return cls(folder, segmentation_path, report, html if html.is_file() else None)

    def grid(self) -> Image:
        """The input CT grid recorded in the report (size, spacing, origin, direction; no voxels)."""
        grid = self.report["input"]
        i, j, k = (int(n) for n in grid["size_ijk"])
        # A broadcast view holds the grid's shape without allocating the voxels.
        return Image(
            np.broadcast_to(np.zeros((), dtype=np.uint8), (k, j, i)),
            tuple(grid["spacing_mm"]),
            tuple(grid["origin_lps_mm"]),
            np.asarray(grid["direction"], dtype=float),
        )


@dataclass
class LoadedResults:
    """The nodes one call of :func:`load_results` or :func:`load_measurements` created or filled."""

    segmentation_node: vtkMRMLSegmentationNode
    summary_table: vtkMRMLTableNode
    lesion_table: vtkMRMLTableNode
    lesion_lines: list[vtkMRMLMarkupsLineNode] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    vessel_lines: list[vtkMRMLMarkupsLineNode] = field(default_factory=list)


def load_results(
    scene: vtkMRMLScene,
    output_folder: str | Path,
    *,
    segmentation_node: vtkMRMLSegmentationNode | None = None,
    reference_volume_node: vtkMRMLScalarVolumeNode | None = None,
    smooth_surfaces: bool = True,
) -> LoadedResults:
    """Load ``segmentation.seg.nrrd`` and ``report.json`` of a core output folder into the scene.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` inside Slicer).
        output_folder: OUTDIR of ``lvt segment``.
        segmentation_node: node to fill (its segments are replaced); None adds one.
        reference_volume_node: the CT; gives the reference geometry and the study to place results in.
            Without it the grid recorded in the report is used and results go to the top level.
        smooth_surfaces: smooth each structure's 3D surface (vessels little); off shows raw voxels.

    Raises:
        InputError: the folder lacks the core's files or they cannot be read.
    """
    output = CoreOutput.from_folder(output_folder)
    segmentation.register_converter_rules()
    node = segmentation.read_segmentation_file(scene, output.segmentation_path, segmentation_node)
    segmentation.set_reference_geometry(node, output.grid(), reference_volume_node)
    smoothing = segmentation.slicer_smoothing_factors() if smooth_surfaces else segmentation.NO_SMOOTHING
    segmentation.create_closed_surfaces(node, smoothing)
    _set_liver_opacity(node)
    hierarchy.place_under(scene, [node], hierarchy.study_item_of(scene, reference_volume_node))
    return _replace_measurements(scene, node, output, reference_volume_node)


def load_measurements(
    scene: vtkMRMLScene,
    segmentation_node: vtkMRMLSegmentationNode,
    output_folder: str | Path,
    reference_volume_node: vtkMRMLScalarVolumeNode | None = None,
) -> LoadedResults:
    """Replace a segmentation's tables, lines and report with those of a new ``lvt measure`` folder.

    The segmentation itself is left as the user edited it.
    """
    return _replace_measurements(scene, segmentation_node, CoreOutput.from_folder(output_folder), reference_volume_node)


def _replace_measurements(
    scene: vtkMRMLScene,
    node: vtkMRMLSegmentationNode,
    output: CoreOutput,
    reference_volume_node: vtkMRMLScalarVolumeNode | None,
) -> LoadedResults:
    remove_measurement_nodes(scene, node)
    name = node.GetName()
    summary = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} summary")
    lesion_table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} lesions")
    lesions = output.report.get("lesions", [])
    measurements.fill_summary_table(summary, output.report)
    measurements.fill_lesion_table(lesion_table, lesions)
    lines = measurements.add_lesion_lines(scene, lesions, name)
    vessel_lines = planning.add_vessel_lines(scene, output.report.get("planning"), name)
    texts = {REPORT_ROLE: (f"{name} report.json", json.dumps(output.report, indent=2))}
    if output.html_report_path is not None:
        texts[HTML_REPORT_ROLE] = (f"{name} report.html", output.html_report_path.read_text(encoding="utf-8"))
    report_nodes = []
    for role, (text_name, text) in texts.items():
        text_node = scene.AddNewNodeByClass("vtkMRMLTextNode", text_name)
        text_node.SetText(text)
        node.SetNodeReferenceID(role, text_node.GetID())
        report_nodes.append(text_node)
    node.SetNodeReferenceID(SUMMARY_TABLE_ROLE, summary.GetID())
    node.SetNodeReferenceID(LESION_TABLE_ROLE, lesion_table.GetID())
    for line in lines:
        node.AddNodeReferenceID(LESION_LINE_ROLE, line.GetID())
    for line in vessel_lines:
        node.AddNodeReferenceID(VESSEL_LINE_ROLE, line.GetID())
    study = hierarchy.study_item_of(scene, reference_volume_node)
    folder = hierarchy.results_folder(scene, study, f"{name} measurements")
    hierarchy.place_under(scene, [summary, lesion_table, *lines, *vessel_lines, *report_nodes], folder)
    return LoadedResults(node, summary, lesion_table, lines, output.report, vessel_lines)


def remove_measurement_nodes(scene: vtkMRMLScene, segmentation_node: vtkMRMLSegmentationNode) -> None:
    """Remove the tables, lines and report nodes a previous load attached to this segmentation."""
    for role in _MEASUREMENT_ROLES:
        nodes = [
            segmentation_node.GetNthNodeReference(role, n)
            for n in range(segmentation_node.GetNumberOfNodeReferences(role))
        ]
        segmentation_node.RemoveNodeReferenceIDs(role)
        for node in nodes:
            if node is not None:
                _remove_node(scene, node)


def lesion_table_of(segmentation_node: vtkMRMLSegmentationNode) -> vtkMRMLTableNode | None:
    """The lesion table attached to a segmentation by this module (None before any result)."""
    return segmentation_node.GetNodeReference(LESION_TABLE_ROLE)


def summary_table_of(segmentation_node: vtkMRMLSegmentationNode) -> vtkMRMLTableNode | None:
    """The summary table attached to a segmentation by this module (None before any result)."""
    return segmentation_node.GetNodeReference(SUMMARY_TABLE_ROLE)


def lesion_line_of(segmentation_node: vtkMRMLSegmentationNode, lesion_id: int) -> vtkMRMLMarkupsLineNode | None:
    """The diameter line of lesion ``lesion_id``, found through the segmentation's references."""
    for n in range(segmentation_node.GetNumberOfNodeReferences(LESION_LINE_ROLE)):
        line = segmentation_node.GetNthNodeReference(LESION_LINE_ROLE, n)
        if line is not None and line.GetAttribute(measurements.LESION_ID_ATTRIBUTE) == str(lesion_id):
            return line
    return None


def line_midpoint_ras(line: vtkMRMLMarkupsLineNode) -> np.ndarray:
    """Middle of a line markup in world (RAS) coordinates: where to centre the slice views."""
    points = [np.array(line.GetNthControlPointPositionWorld(n)) for n in range(line.GetNumberOfControlPoints())]
    return np.mean(points, axis=0)


def stored_report(segmentation_node: vtkMRMLSegmentationNode, role: str = REPORT_ROLE) -> str | None:
    """The report text (``REPORT_ROLE`` JSON or ``HTML_REPORT_ROLE``) kept in the scene, if any."""
    text = segmentation_node.GetNodeReference(role)
    return None if text is None else text.GetText()


def export_results(
    segmentation_node: vtkMRMLSegmentationNode, folder: str | Path, surface_format: str = "STL"
) -> list[Path]:
    """Write the segments' surfaces (STL or OBJ, LPS) and the stored report (JSON, HTML) into a folder.

    Returns:
        The report files written (the surface file names are Slicer's, one per segment).
    """
    folder = Path(folder)
    segmentation.export_surface_files(segmentation_node, folder, surface_format)
    written = []
    for role, name in ((REPORT_ROLE, REPORT_FILE), (HTML_REPORT_ROLE, HTML_REPORT_FILE)):
        text = stored_report(segmentation_node, role)
        if text is not None:
            (folder / name).write_text(text, encoding="utf-8")
            written.append(folder / name)
    return written


def _set_liver_opacity(node: vtkMRMLSegmentationNode) -> None:
    display = node.GetDisplayNode()
    liver = segmentation.segment_ids_by_structure(node).get("liver")
    if display is not None and liver is not None:
        display.SetSegmentOpacity3D(liver, LIVER_OPACITY_3D)


def _remove_node(scene: vtkMRMLScene, node: vtkMRMLNode) -> None:
    """Remove a node with its display and storage nodes (the bare MRML scene leaves them behind)."""
    if node.IsA("vtkMRMLDisplayableNode"):
        for n in reversed(range(node.GetNumberOfDisplayNodes())):
            scene.RemoveNode(node.GetNthDisplayNode(n))
    if node.IsA("vtkMRMLStorableNode"):
        for n in reversed(range(node.GetNumberOfStorageNodes())):
            scene.RemoveNode(node.GetNthStorageNode(n))
    scene.RemoveNode(node)
