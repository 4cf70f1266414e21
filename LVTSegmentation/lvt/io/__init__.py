"""Reading CTs and segmentations (``read``) and writing results (``write``): the public API of both."""

from lvt.io.dicom import DicomSeriesInfo, find_dicom_series
from lvt.io.read import (
    READABLE_FORMATS,
    is_slicer_segmentation,
    read_image,
    read_label_image,
    read_segment_mask,
    read_segmentation,
)
from lvt.io.write import SEGMENTATION_SUFFIX, WRITABLE_SUFFIXES, write_image, write_segmentation

__all__ = [
    "READABLE_FORMATS",
    "SEGMENTATION_SUFFIX",
    "WRITABLE_SUFFIXES",
    "DicomSeriesInfo",
    "find_dicom_series",
    "is_slicer_segmentation",
    "read_image",
    "read_label_image",
    "read_segment_mask",
    "read_segmentation",
    "write_image",
    "write_segmentation",
]
