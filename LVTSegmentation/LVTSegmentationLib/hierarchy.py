"""Subject hierarchy placement: the results sit under the CT's study, where a surgeon looks for them.

Inside Slicer every node gets a subject hierarchy item when it is added; with the bare
``slicer-core`` wheel it does not, so items are created when missing.
"""

from __future__ import annotations

from collections.abc import Sequence

from slicer import (
    vtkMRMLNode,
    vtkMRMLScene,
    vtkMRMLSegmentationNode,
    vtkMRMLSubjectHierarchyConstants,
    vtkMRMLSubjectHierarchyNode,
)


def item_of(scene: vtkMRMLScene, node: vtkMRMLNode) -> int:
    """The subject hierarchy item of a node, created at the top level when it has none."""
    hierarchy = vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(node)
    if not item:
        item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
    return item


def study_item_of(scene: vtkMRMLScene, volume_node: vtkMRMLNode | None) -> int:
    """The item the CT hangs under (its study when loaded from DICOM), or the scene item without a CT."""
    hierarchy = vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if volume_node is None:
        return hierarchy.GetSceneItemID()
    return hierarchy.GetItemParent(item_of(scene, volume_node))


def place_under(scene: vtkMRMLScene, nodes: Sequence[vtkMRMLNode], parent_item: int) -> None:
    """Move the nodes' items under ``parent_item``."""
    hierarchy = vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in nodes:
        hierarchy.SetItemParent(item_of(scene, node), parent_item)


def results_folder(scene: vtkMRMLScene, parent_item: int, name: str) -> int:
    """The folder item named ``name`` under ``parent_item``, created when missing.

    Reusing it keeps one folder per segmentation however often the measurements are recomputed
    (the previous tables and lines are removed through the segmentation's node references).
    """
    hierarchy = vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = hierarchy.GetItemChildWithName(parent_item, name)
    return folder if folder else hierarchy.CreateFolderItem(parent_item, name)


def loaded_from_dicom(scene: vtkMRMLScene, volume_node: vtkMRMLNode | None) -> bool:
    """Whether the volume came from Slicer's DICOM database: its item holds the SOP instance UIDs.

    Slicer's DICOM plugins record them when they load a series (DICOMPlugin.addSeriesInSubjectHierarchy);
    a DICOM Segmentation of the results must reference them, so without them there is nothing to export to.
    """
    if volume_node is None:
        return False
    hierarchy = vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(volume_node)
    uid_name = vtkMRMLSubjectHierarchyConstants.GetDICOMInstanceUIDName()
    return bool(item) and bool(hierarchy.GetItemUID(item, uid_name))


def dicom_export_item(scene: vtkMRMLScene, segmentation_node: vtkMRMLSegmentationNode | None) -> int | None:
    """The segmentation's item for Slicer's DICOM export dialog, or None when its CT did not come from DICOM.

    The CT is the segmentation's reference geometry volume (set when the results were loaded).
    """
    if segmentation_node is None:
        return None
    volume = segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole())
    return item_of(scene, segmentation_node) if loaded_from_dicom(scene, volume) else None
