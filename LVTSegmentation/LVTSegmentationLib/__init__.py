"""Qt-free logic of the LVTSegmentation module: the core's results as MRML nodes, and the core's process.

Imports only ``slicer`` MRML/logic classes and the core (``lvt``), so it runs inside Slicer and,
under pytest, against the ``slicer-core`` wheel. The widget in ``LVTSegmentation.py`` is the only
Qt code.
"""

from .environment import (
    CORE_REQUIREMENTS,
    Requirement,
    bundled_model_path,
    core_dir,
    missing_requirements,
    protecting_constraints,
)
from .files import write_segmentation_file, write_volume_file
from .process import (
    BackgroundProcess,
    DoneEvent,
    ErrorEvent,
    ExitEvent,
    LogEvent,
    ProgressEvent,
    child_environment,
    kill_process_tree,
    measure_command,
    parse_line,
    segment_command,
)
from .results import (
    CoreOutput,
    LoadedResults,
    export_results,
    lesion_line_of,
    lesion_table_of,
    line_midpoint_ras,
    load_measurements,
    load_results,
    stored_report,
    summary_table_of,
)
from .segmentation import export_label_array, register_converter_rules, segment_ids_by_structure

__all__ = [
    "CORE_REQUIREMENTS",
    "BackgroundProcess",
    "CoreOutput",
    "DoneEvent",
    "ErrorEvent",
    "ExitEvent",
    "LoadedResults",
    "LogEvent",
    "ProgressEvent",
    "Requirement",
    "bundled_model_path",
    "child_environment",
    "core_dir",
    "export_label_array",
    "export_results",
    "kill_process_tree",
    "lesion_line_of",
    "lesion_table_of",
    "line_midpoint_ras",
    "load_measurements",
    "load_results",
    "measure_command",
    "missing_requirements",
    "parse_line",
    "protecting_constraints",
    "register_converter_rules",
    "segment_command",
    "segment_ids_by_structure",
    "stored_report",
    "summary_table_of",
    "write_segmentation_file",
    "write_volume_file",
]
