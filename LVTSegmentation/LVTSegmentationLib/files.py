"""Files handed to the core's process: the CT for ``lvt segment``, the edited segmentation for ``lvt measure``.

Both are written by Slicer's own storage nodes, so the core reads exactly the grid Slicer holds
(IJK-to-RAS becomes the NRRD's LPS space directions; the core converts back with lvt.image).
"""

from __future__ import annotations

from pathlib import Path

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLScene, vtkMRMLSegmentationNode


def write_volume_file(scene: vtkMRMLScene, volume_node: vtkMRMLScalarVolumeNode, path: str | Path) -> None:
    """Write a volume as uncompressed NRRD (fast to write and read; the file is temporary).

    The storage node is made by the scene but never added to it, so the volume keeps its own.

    Raises:
        OSError: Slicer could not write the file.
    """
    storage = scene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    try:
        storage.SetFileName(str(path))
        storage.UseCompressionOff()
        if not storage.WriteData(volume_node):
            raise OSError(f"{path}: could not write volume {volume_node.GetName()!r}")
    finally:
        storage.UnRegister(None)


def write_segmentation_file(scene: vtkMRMLScene, segmentation_node: vtkMRMLSegmentationNode, path: str | Path) -> None:
    """Write a segmentation node as ``.seg.nrrd`` on its full reference grid (not cropped to the segments).

    Used to hand the user's edited segmentation back to ``lvt measure``.
    """
    storage = scene.CreateNodeByClass("vtkMRMLSegmentationStorageNode")
    try:
        storage.SetFileName(str(path))
        storage.SetCropToMinimumExtent(False)
        storage.SetUseCompression(True)
        if not storage.WriteData(segmentation_node):
            raise OSError(f"{path}: could not write segmentation {segmentation_node.GetName()!r}")
    finally:
        storage.UnRegister(None)
