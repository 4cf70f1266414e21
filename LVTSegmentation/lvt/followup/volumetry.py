"""Liver volume across the contrast phases of one day (the paper's Figure 5).

The liver does not change between the arterial, portal venous and late phases of one examination,
so the spread of its segmented volume across phases measures how consistent the segmentation is
(the paper found about 5 %). Each phase's whole-liver volume (labels 1, 2, 3, as in report.json)
is compared with the mean over the phases: deviation = (V - mean) / mean. A phase whose deviation
exceeds the threshold (default 5 %) in either direction is flagged for a closer look; a flag is a
finding, not an error.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from lvt import __version__
from lvt.errors import InputError
from lvt.followup.report import write_volumetry_report
from lvt.followup.studies import load_studies, study_names
from lvt.progress import ProgressCallback, report
from lvt.segment.pipeline import SegmentOptions, atomic_output_folder

DEFAULT_THRESHOLD_PERCENT = 5.0
NOTE = ("Deviation is (phase volume - mean) / mean over the phases given. The liver is the same organ in every "
        "phase of one day, so a large deviation points at a segmentation to review (a missed lobe, a leak into a "
        "neighbouring organ), not at a change of the liver.")


def volumetry_document(names: Sequence[str], sources: Sequence[str], volumes_ml: Sequence[float],
                       threshold_percent: float = DEFAULT_THRESHOLD_PERCENT, warnings: Sequence[str] = ()) -> dict:
    """Per-phase liver volume, relative deviation from the mean, and flags (the content of volumetry.json).

    Args:
        names: one name per phase (e.g. "arterial").
        sources: the input of each phase (CT or result folder), for the record.
        volumes_ml: whole-liver volume of each phase, mL.
        threshold_percent: a phase deviating more than this from the mean is flagged.
        warnings: messages for the user.

    Returns:
        ``{"lvt_version", "threshold_percent", "mean_liver_volume_ml", "max_abs_deviation_percent",
        "flagged": [names], "phases": [{"name", "source", "liver_volume_ml",
        "deviation_from_mean_percent", "flagged"}], "note", "warnings"}``.

    Raises:
        InputError: fewer than two phases, a phase without liver, or a negative threshold.
    """
    if len(volumes_ml) < 2:
        raise InputError(None, f"volumetry needs at least two phases, got {len(volumes_ml)}")
    if threshold_percent < 0:
        raise InputError(None, f"--threshold-percent must be >= 0, got {threshold_percent}")
    empty = [name for name, volume in zip(names, volumes_ml, strict=True) if volume <= 0]
    if empty:
        raise InputError(None, f"no liver found in {', '.join(empty)}; volumetry needs a liver in every phase")
    mean = sum(volumes_ml) / len(volumes_ml)
    deviations = [100.0 * (volume - mean) / mean for volume in volumes_ml]
    phases = [{"name": name, "source": str(source), "liver_volume_ml": float(volume),
               "deviation_from_mean_percent": deviation, "flagged": abs(deviation) > threshold_percent}
              for name, source, volume, deviation in zip(names, sources, volumes_ml, deviations, strict=True)]
    return {
        "lvt_version": __version__,
        "threshold_percent": float(threshold_percent),
        "mean_liver_volume_ml": mean,
        "max_abs_deviation_percent": max(abs(d) for d in deviations),
        "flagged": [phase["name"] for phase in phases if phase["flagged"]],
        "phases": phases,
        "note": NOTE,
        "warnings": [str(w) for w in warnings],
    }


def volumetry_files(inputs: Sequence[Path], out_dir: Path, options: SegmentOptions, *,
                    names: Sequence[str] | None = None, threshold_percent: float = DEFAULT_THRESHOLD_PERCENT,
                    overwrite: bool = False,
                    progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> dict:
    """``lvt volumetry``: segment (or load) every phase and write volumetry.json/.html atomically.

    Args:
        inputs: CTs or ``lvt segment`` output folders of the phases of one day.
        out_dir: output folder; CTs are segmented into ``OUT/studies/NAME``.
        options: :class:`lvt.segment.pipeline.SegmentOptions` for inputs that are CTs.
        names: phase names (default: the input names).
        threshold_percent: flag threshold on the deviation from the mean.
        overwrite: replace an existing output folder.
        progress: receives "segment" and "report" events.
        cancel: checked between phases.

    Returns:
        The volumetry.json document (also written).
    """
    if len(inputs) < 2:
        raise InputError(None, f"volumetry needs at least two phases, got {len(inputs)}")
    labels = study_names(inputs, names)
    with atomic_output_folder(out_dir, overwrite) as staging:
        studies = load_studies(inputs, labels, staging, options, progress, cancel)
        report(progress, "report", 0, 1, "volumetry.json and volumetry.html")
        volumes = [study.measurements.whole_liver_volume_ml for study in studies]
        document = volumetry_document(labels, [str(s.source) for s in studies], volumes, threshold_percent)
        write_volumetry_report(staging, document)
        report(progress, "report", 1, 1, "done")
    return document

