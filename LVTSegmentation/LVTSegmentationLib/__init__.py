"""Qt-free logic of the LVTSegmentation module: the core's results as MRML nodes, and the core's process.

Imports only ``slicer`` MRML/logic classes and the core (``lvt``), so it runs inside Slicer and,
under pytest, against the ``slicer-core`` wheel. The widget in ``LVTSegmentation.py`` is the only
Qt code.
"""

from .compatibility import MINIMUM_SLICER_VERSION, unsupported_python_message

# Everything else needs Python >= 3.10 (the core does): on an older Slicer only the message above is
# importable, and the module shows it instead of a traceback.
if unsupported_python_message() is None:
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
        SELF_TEST_INSTALL_VARIABLE,
        Requirement,
        bundled_model_path,
        core_dir,
        missing_requirements,
        protecting_constraints,
        self_test_skip_reason,
    )
    from .files import write_segmentation_file, write_volume_file
    from .hierarchy import dicom_export_item, loaded_from_dicom
    from .measurements import reliability_notes
    from .panel import format_elapsed, log_line, model_card, model_card_of_file, optional_path, path_text
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
        kill_survivors,
        measure_command,
        parse_line,
        segment_command,
        terminate_tree,
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
    from .sample_data import SAMPLE_CATEGORY, SAMPLE_NAME, sample_file_name, sample_phantom, write_sample_ct
    from .segmentation import export_label_array, register_converter_rules, segment_ids_by_structure
    from .standard_names import apply_standard_names, standard_segment_name

__all__ = [
    "COMPARE_FILE",
    "CORE_REQUIREMENTS",
    "MINIMUM_SLICER_VERSION",
    "RESECTION_SEGMENT_NAME",
    "SAMPLE_CATEGORY",
    "SAMPLE_NAME",
    "SELF_TEST_INSTALL_VARIABLE",
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
    "apply_standard_names",
    "bundled_model_path",
    "child_environment",
    "compare_command",
    "comparison_rows",
    "comparison_summary",
    "comparison_table_of",
    "core_dir",
    "dicom_export_item",
    "export_label_array",
    "export_results",
    "fill_comparison_table",
    "format_elapsed",
    "kill_survivors",
    "lesion_line_of",
    "lesion_table_of",
    "line_midpoint_ras",
    "load_comparison",
    "load_measurements",
    "load_results",
    "loaded_from_dicom",
    "log_line",
    "measure_command",
    "missing_requirements",
    "model_card",
    "model_card_of_file",
    "optional_path",
    "parse_line",
    "path_text",
    "prior_folder_problem",
    "protecting_constraints",
    "register_converter_rules",
    "reliability_notes",
    "resection_segment_name",
    "sample_file_name",
    "sample_phantom",
    "segment_command",
    "segment_ids_by_structure",
    "self_test_skip_reason",
    "standard_segment_name",
    "stored_report",
    "study_labels",
    "summary_table_of",
    "terminate_tree",
    "unsupported_python_message",
    "write_sample_ct",
    "write_segmentation_file",
    "write_volume_file",
]
