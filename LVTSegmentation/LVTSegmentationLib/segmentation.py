"""The core's ``segmentation.seg.nrrd`` as a Slicer segmentation node: reading, geometry, 3D surfaces, export.

Only MRML and logic classes of ``slicer`` are used (no ``slicer.util``, no ``slicer.app``), so the same
code runs inside Slicer and against the ``slicer-core`` wheel under pytest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import vtk
from slicer import (
    vtkBinaryLabelmapToClosedSurfaceConversionRule,
    vtkClosedSurfaceToBinaryLabelmapConversionRule,
    vtkClosedSurfaceToFractionalLabelmapConversionRule,
    vtkFractionalLabelmapToClosedSurfaceConversionRule,
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLScene,
    vtkMRMLSegmentationNode,
    vtkSegmentation,
    vtkSegmentationConverter,
    vtkSegmentationConverterFactory,
    vtkSlicerSegmentationsModuleLogic,
)
from vtk.util import numpy_support

from lvt.errors import InputError
from lvt.image import Image, ijk_to_ras_matrix
from lvt.labels import STRUCTURES
from lvt.measure.surfaces import SURFACES

CLOSED_SURFACE = vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
SMOOTHING_PARAMETER = "Smoothing factor"

NO_SMOOTHING: Mapping[str, float] = {s.key: 0.0 for s in STRUCTURES}

_CONVERTER_RULES = (
    vtkBinaryLabelmapToClosedSurfaceConversionRule,
    vtkClosedSurfaceToBinaryLabelmapConversionRule,
    vtkClosedSurfaceToFractionalLabelmapConversionRule,
    vtkFractionalLabelmapToClosedSurfaceConversionRule,
)


def slicer_smoothing_factors() -> dict[str, float]:
    """Slicer's "Smoothing factor" (0..1) per structure key, taken from the core's surface settings.

    Slicer smooths with a windowed-sinc pass band of ``10**(-4 f)``; inverting that on the core's
    pass bands (lvt.measure.surfaces.SURFACES) smooths each structure in Slicer as much as in the files the
    core writes: the liver most, vessels least (heavy smoothing shrinks and breaks thin tubes).
    """
    return {s.key: -math.log10(SURFACES[s.segment_name.lower()].pass_band) / 4.0 for s in STRUCTURES}


def register_converter_rules() -> None:
    """Register the labelmap <-> closed surface converters, as Slicer's Segmentations module does at start-up.

    Inside Slicer they are already registered and this does nothing; with the bare ``slicer-core``
    wheel no segmentation could make a 3D surface without it.
    """
    factory = vtkSegmentationConverterFactory.GetInstance()
    registered = {rule.GetName() for rule in factory.GetConverterRules()}
    for rule_class in _CONVERTER_RULES:
        rule = rule_class()
        if rule.GetName() not in registered:
            factory.RegisterConverterRule(rule)


def read_segmentation_file(
    scene: vtkMRMLScene, path: str | Path, segmentation_node: vtkMRMLSegmentationNode | None = None
) -> vtkMRMLSegmentationNode:
    """Load a ``.seg.nrrd`` into a segmentation node, keeping segment ids, names, colours and terminology.

    The storage node is removed afterwards: the file usually lives in a temporary folder that is
    deleted next, and a storage node pointing there would make "Save" write to a vanished place.

    Args:
        scene: the scene that holds (or will hold) the node.
        path: the ``.seg.nrrd`` file.
        segmentation_node: node to fill (its segments are replaced); None adds a new one.

    Raises:
        InputError: the file is missing or Slicer cannot read it as a segmentation.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "segmentation file not found")
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation_node.GetSegmentation().RemoveAllSegments()
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    try:
        storage.SetFileName(str(path))
        if not storage.ReadData(segmentation_node):
            raise InputError(path, "Slicer could not read it as a segmentation (.seg.nrrd)")
    finally:
        scene.RemoveNode(storage)
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    return segmentation_node


def set_reference_geometry(
    segmentation_node: vtkMRMLSegmentationNode,
    grid: Image | None = None,
    reference_volume_node: vtkMRMLScalarVolumeNode | None = None,
) -> None:
    """Make the segmentation's reference grid the CT grid, so editing and export happen on the CT voxels.

    With a volume node the node reference is set too (required for DICOM SEG export and what the
    Segment Editor shows as "source geometry"); otherwise the grid comes from the core's report.

    Raises:
        ValueError: neither a grid nor a volume node is given.
    """
    if reference_volume_node is not None:
        segmentation_node.SetNodeReferenceID(
            segmentation_node.GetReferenceImageGeometryReferenceRole(), reference_volume_node.GetID()
        )
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
        return
    if grid is None:
        raise ValueError("a reference grid or a reference volume node is needed")
    i, j, k = grid.size_ijk
    geometry = vtkSegmentationConverter.SerializeImageGeometry(
        _vtk_matrix(ijk_to_ras_matrix(grid)), [0, i - 1, 0, j - 1, 0, k - 1]
    )
    segmentation_node.GetSegmentation().SetConversionParameter(
        vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry
    )


def create_closed_surfaces(segmentation_node: vtkMRMLSegmentationNode, smoothing: Mapping[str, float]) -> None:
    """Create the closed-surface representation of every segment, with a smoothing factor per structure.

    Slicer keeps one "Smoothing factor" per segmentation; each known segment is converted alone
    with its own factor and the surface stored in the segment. Segments the core does not know, and
    surfaces Slicer rebuilds after an edit, use the liver factor left on the segmentation.

    Args:
        segmentation_node: a node whose source representation is the binary labelmap.
        smoothing: factor (0 = none .. 1 = strong) per structure key ("liver", "vessel", "tumor").
    """
    register_converter_rules()
    segmentation = segmentation_node.GetSegmentation()
    by_structure = segment_ids_by_structure(segmentation_node)
    for key, segment_id in by_structure.items():
        segmentation.SetConversionParameter(SMOOTHING_PARAMETER, str(float(smoothing[key])))
        surface = vtkSlicerSegmentationsModuleLogic.CreateRepresentationForOneSegment(
            segmentation, segment_id, CLOSED_SURFACE
        )
        if surface is not None:
            segmentation.GetSegment(segment_id).AddRepresentation(CLOSED_SURFACE, surface)
            # The caller owns the returned object (vtkSlicerSegmentationsModuleLogic.h: "Need to take
            # ownership"); the Python wrapper holds its own reference, so release the creator's one.
            surface.UnRegister(None)
    segmentation.SetConversionParameter(SMOOTHING_PARAMETER, str(float(smoothing["liver"])))
    segmentation_node.CreateClosedSurfaceRepresentation()
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetPreferredDisplayRepresentationName3D(CLOSED_SURFACE)
        display.SetVisibility3D(True)


def segment_ids_by_structure(segmentation_node: vtkMRMLSegmentationNode) -> dict[str, str]:
    """Segment id of each LVT structure present ("liver", "vessel", "tumor" -> id).

    A segment is recognised by its id, else its name, else the SNOMED type code of its terminology,
    so renaming a segment in the Segment Editor does not lose it.
    """
    segmentation = segmentation_node.GetSegmentation()
    segments = [segmentation.GetNthSegment(n) for n in range(segmentation.GetNumberOfSegments())]
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    found: dict[str, str] = {}
    for structure in STRUCTURES:
        keys = (
            ids,
            [segment.GetName() for segment in segments],
            [_terminology_type_code(segment.GetTerminology() or "") for segment in segments],
        )
        wanted = (structure.segment_name, structure.segment_name, structure.type[1])
        for values, value in zip(keys, wanted, strict=True):
            if value in values:
                found[structure.key] = ids[values.index(value)]
                break
    return found


def _terminology_type_code(entry: str) -> str:
    """The type code value of a Slicer terminology string (context~category~type~...)."""
    fields = entry.split("~")
    codes = fields[2].split("^") if len(fields) > 2 else []
    return codes[1] if len(codes) > 1 else ""


def export_label_array(
    segmentation_node: vtkMRMLSegmentationNode,
    reference_volume_node: vtkMRMLScalarVolumeNode | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The LVT exclusive label map (0..3, [k, j, i]) on the reference grid, and that grid's IJK-to-RAS.

    Segments are painted liver, vessels, tumors in that order, so where a user's edits overlap the
    later one wins: the core's priority tumor > vessel > liver.
    """
    by_structure = segment_ids_by_structure(segmentation_node)
    present = [structure for structure in STRUCTURES if structure.key in by_structure]
    ids = vtk.vtkStringArray()
    for structure in present:
        ids.InsertNextValue(by_structure[structure.key])
    # The export needs its target in the scene and adds a colour table; both are scratch nodes.
    with _scratch_nodes(segmentation_node.GetScene()) as scene:
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        if not vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume_node, vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        ):
            raise RuntimeError(f"could not export segmentation {segmentation_node.GetName()!r} to a label map")
        exported = _array_kji(labelmap)
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetIJKToRASMatrix(matrix)
    # The exported values count the exported segments 1..n in list order; map them to LVT label values.
    lookup = np.zeros(len(present) + 1, dtype=np.uint8)
    for n, structure in enumerate(present, start=1):
        lookup[n] = structure.label_value
    return lookup[exported], _numpy_matrix(matrix)


def export_surface_files(segmentation_node: vtkMRMLSegmentationNode, folder: str | Path, file_format: str) -> None:
    """Write every segment's closed surface as STL or OBJ (in LPS, as 3D printing software expects).

    Raises:
        ValueError: a format other than STL or OBJ.
        OSError: Slicer could not write the files.
    """
    file_format = file_format.upper()
    if file_format not in ("STL", "OBJ"):
        raise ValueError(f"surface format must be STL or OBJ, got {file_format!r}")
    Path(folder).mkdir(parents=True, exist_ok=True)
    segmentation_node.CreateClosedSurfaceRepresentation()
    if not vtkSlicerSegmentationsModuleLogic.ExportSegmentsClosedSurfaceRepresentationToFiles(
        str(folder), segmentation_node, None, file_format, True, 1.0, False
    ):
        raise OSError(f"{folder}: could not write the {file_format} surfaces")


@contextmanager
def _scratch_nodes(scene: vtkMRMLScene) -> Iterator[vtkMRMLScene]:
    """Remove every node added to the scene inside the block (the subject hierarchy node excepted)."""
    before = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    try:
        yield scene
    finally:
        added = [scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before and not node.IsA("vtkMRMLSubjectHierarchyNode"):
                scene.RemoveNode(node)


def _array_kji(volume_node: vtkMRMLLabelMapVolumeNode) -> np.ndarray:
    image = volume_node.GetImageData()
    i, j, k = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i).copy()


def _vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row, column]))
    return result


def _numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
