"""Qt-free logic of the LVTSegmentation module: the core's results as MRML nodes, and the core's process.

Imports only ``slicer`` MRML/logic classes and the core (``lvt``), so it runs inside Slicer and,
under pytest, against the ``slicer-core`` wheel. The widget in ``LVTSegmentation.py`` is the only
Qt code.
"""

from .comparison import (
    COMPARE_FILE,
    LoadedComparison,
    comparison_rows,
    comparison_summary,
    comparison_table_of,
    fill_comparison_table,
    load_comparison,
    prior_folder_problem,
    study_labels,
)
from .environment import (
    CORE_REQUIREMENTS,
    Requirement,
    bundled_model_path,
    core_dir,
    missing_requirements,
    protecting_constraints,
)
from .files import write_segmentation_file, write_volume_file
from .measurements import reliability_notes
from .planning import RESECTION_SEGMENT_NAME, add_vessel_lines, resection_segment_name
from .process import (
    BackgroundProcess,
    DoneEvent,
    ErrorEvent,
    ExitEvent,
    LogEvent,
    ProgressEvent,
    child_environment,
    compare_command,
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
    "COMPARE_FILE",
    "CORE_REQUIREMENTS",
    "RESECTION_SEGMENT_NAME",
    "BackgroundProcess",
    "CoreOutput",
    "DoneEvent",
    "ErrorEvent",
    "ExitEvent",
    "LoadedComparison",
    "LoadedResults",
    "LogEvent",
    "ProgressEvent",
    "Requirement",
    "add_vessel_lines",
    "bundled_model_path",
    "child_environment",
    "compare_command",
    "comparison_rows",
    "comparison_summary",
    "comparison_table_of",
    "core_dir",
    "export_label_array",
    "export_results",
    "fill_comparison_table",
    "kill_process_tree",
    "lesion_line_of",
    "lesion_table_of",
    "line_midpoint_ras",
    "load_comparison",
    "load_measurements",
    "load_results",
    "measure_command",
    "missing_requirements",
    "parse_line",
    "prior_folder_problem",
    "protecting_constraints",
    "register_converter_rules",
    "reliability_notes",
    "resection_segment_name",
    "segment_command",
    "segment_ids_by_structure",
    "stored_report",
    "study_labels",
    "summary_table_of",
    "write_segmentation_file",
    "write_volume_file",
]
