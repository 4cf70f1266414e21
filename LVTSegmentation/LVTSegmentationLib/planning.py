"""Resection planning in Slicer: a line from each tumor to its nearest vessel, and the user's resection segment.

The lines come from the "planning" section of report.json (lvt.measure.planning): the two end points are
the closest points of the tumor and vessel voxel boxes, so a line's length is exactly the reported
distance. The resection region is a segment the user draws in the Segment Editor and names
"Resection"; the module hands it to ``lvt measure --resection-segment`` with the segmentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from slicer import vtkMRMLMarkupsLineNode, vtkMRMLScene, vtkMRMLSegmentationNode

from lvt.image import lps_to_ras

from .measurements import LESION_ID_ATTRIBUTE

RESECTION_SEGMENT_NAME = "Resection"
VESSEL_LINE_COLOR = (0.1, 0.75, 0.95)  # cyan: apart from the yellow-ish diameter lines


def vessel_line_ras(entry: Mapping[str, Any]) -> np.ndarray | None:
    """(2, 3) RAS end points, tumor surface first then nearest vessel point; None when there is no vessel."""
    if entry.get("distance_to_vessels_mm") is None:
        return None
    points = [entry["lesion_surface_point_lps_mm"], entry["nearest_vessel_point_lps_mm"]]
    return lps_to_ras(np.asarray(points, dtype=float))


def add_vessel_lines(
    scene: vtkMRMLScene, planning: Mapping[str, Any] | None, prefix: str
) -> list[vtkMRMLMarkupsLineNode]:
    """One locked line markup per tumor from its surface to the nearest vessel point, in RAS.

    Named "<prefix> lesion N to vessel", carrying the lesion id in ``LVT.LesionId``. Tumors without a
    vessel in the segmentation get no line. A tumor touching a vessel gets a line of length 0.
    """
    if not planning:
        return []
    margin = float(planning.get("vessel_margin_mm", 10.0))
    lines = []
    for entry in planning.get("lesions", []):
        points = vessel_line_ras(entry)
        if points is None:
            continue
        line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", f"{prefix} lesion {entry['id']} to vessel")
        line.CreateDefaultDisplayNodes()
        for point in points:
            line.AddControlPointWorld(*(float(c) for c in point))
        line.SetAttribute(LESION_ID_ATTRIBUTE, str(entry["id"]))
        line.SetLocked(True)
        line.GetDisplayNode().SetSelectedColor(*VESSEL_LINE_COLOR)
        line.SetDescription(_vessel_line_description(entry, margin))
        lines.append(line)
    return lines


def _vessel_line_description(entry: Mapping[str, Any], margin_mm: float) -> str:
    within = "within" if entry["vessels_within_10mm"] else "not within"
    return (f"Shortest distance from lesion {entry['id']} to the vessels: {entry['distance_to_vessels_mm']:.1f} mm "
            f"(branch {entry['nearest_branch_id']}, {entry['nearest_branch_volume_ml']:.2f} mL); "
            f"vessels {within} {margin_mm:g} mm")


def resection_segment_name(segmentation_node: vtkMRMLSegmentationNode) -> str | None:
    """The name of the segment called "Resection" (any case), or None; an exact match wins over others."""
    segmentation = segmentation_node.GetSegmentation()
    names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
    if RESECTION_SEGMENT_NAME in names:
        return RESECTION_SEGMENT_NAME
    matches = [name for name in names if name.lower() == RESECTION_SEGMENT_NAME.lower()]
    return matches[0] if matches else None
