"""Reading CTs and segmentations (``read``) and writing results (``write``): the public API of both."""

from lvt.io.dicom import DicomSeriesInfo, find_dicom_series
from lvt.io.read import (
    READABLE_FORMATS,
    ReadInfo,
    read_image,
    read_image_with_info,
    read_label_image,
    read_segmentation,
)
from lvt.io.slicer_segmentation import is_slicer_segmentation, read_segment_mask
from lvt.io.write import SEGMENTATION_SUFFIX, WRITABLE_SUFFIXES, write_image, write_segmentation

__all__ = [
    "READABLE_FORMATS",
    "SEGMENTATION_SUFFIX",
    "WRITABLE_SUFFIXES",
    "DicomSeriesInfo",
    "ReadInfo",
    "find_dicom_series",
    "is_slicer_segmentation",
    "read_image",
    "read_image_with_info",
    "read_label_image",
    "read_segment_mask",
    "read_segmentation",
    "write_image",
    "write_segmentation",
]
