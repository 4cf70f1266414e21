"""Slicer's standard segment names: what Slicer itself calls a segment with the LVT terminology codes.

Slicer names a segment after its terminology (qSlicerTerminologyNavigatorWidget::nameFromTerminology):
the type's "3dSlicerLabel" in the loaded terminology when it has one, else the type's code meaning.
The same rule applied to the SNOMED codes of lvt.labels gives names that match what another tool
writing these codes, or a user picking them in the Segment Editor, gets. Only names change: segment
ids and terminology stay, so the module and ``lvt measure`` still recognise every segment.
"""

from __future__ import annotations

from slicer import (
    vtkMRMLSegmentationNode,
    vtkSlicerTerminologiesModuleLogic,
    vtkSlicerTerminologyEntry,
    vtkSlicerTerminologyType,
)

from lvt.labels import STRUCTURES

from .segmentation import segment_ids_by_structure


def standard_segment_name(terminology_logic: vtkSlicerTerminologiesModuleLogic, terminology_entry: str) -> str:
    """Slicer's name for a terminology entry string (context~category~type~...).

    Raises:
        ValueError: the string is not a terminology entry.
    """
    entry = vtkSlicerTerminologyEntry()
    if not vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(terminology_entry, entry):
        raise ValueError(f"not a terminology entry: {terminology_entry!r}")
    wanted = entry.GetTypeObject()
    context, category = entry.GetTerminologyContextName(), entry.GetCategoryObject()
    candidate = vtkSlicerTerminologyType()
    for n in range(terminology_logic.GetNumberOfTypesInTerminologyCategory(context, category)):
        terminology_logic.GetNthTypeInTerminologyCategory(context, category, n, candidate)
        same_code = (candidate.GetCodingSchemeDesignator(), candidate.GetCodeValue()) == (
            wanted.GetCodingSchemeDesignator(), wanted.GetCodeValue())
        if same_code:
            return candidate.GetSlicerLabel() or candidate.GetCodeMeaning() or wanted.GetCodeMeaning()
    return wanted.GetCodeMeaning()


def apply_standard_names(
    segmentation_node: vtkMRMLSegmentationNode, terminology_logic: vtkSlicerTerminologiesModuleLogic
) -> dict[str, str]:
    """Rename the LVT segments to Slicer's standard names; returns the new name of each structure key."""
    segmentation = segmentation_node.GetSegmentation()
    by_key = {structure.key: structure for structure in STRUCTURES}
    names = {}
    for key, segment_id in segment_ids_by_structure(segmentation_node).items():
        segment = segmentation.GetSegment(segment_id)
        entry = segment.GetTerminology() or by_key[key].terminology_entry()
        names[key] = standard_segment_name(terminology_logic, entry)
        segment.SetName(names[key])
    return names
