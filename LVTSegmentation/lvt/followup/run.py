"""``lvt compare`` as one call: load or segment the studies, follow the lesions, write compare.json/.html.

It sits above the steps it joins (:mod:`lvt.followup.studies`, :mod:`lvt.followup.compare`,
:mod:`lvt.followup.document`, :mod:`lvt.followup.report`), so none of them imports another upwards.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from lvt.errors import InputError
from lvt.followup.compare import CompareConfig, follow_up
from lvt.followup.document import followup_document
from lvt.followup.report import write_compare_report
from lvt.followup.studies import Study, load_studies, study_names
from lvt.progress import ProgressCallback, report
from lvt.segment.pipeline import SegmentOptions, atomic_output_folder


def compare_files(inputs: Sequence[Path], out_dir: Path, options: SegmentOptions,
                  config: CompareConfig | None = None, *, names: Sequence[str] | None = None, overwrite: bool = False,
                  progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> dict:
    """``lvt compare``: load or segment every study, follow the lesions, write compare.json/.html atomically.

    Args:
        inputs: two or more CTs or ``lvt segment`` output folders of one patient, oldest first.
        out_dir: output folder (replaced only with ``overwrite``).
        options: :class:`lvt.segment.pipeline.SegmentOptions` for inputs that are CTs.
        config: registration, matching and RECIST settings.
        names: study names for tables and the plot (default: the input names).
        overwrite: replace an existing output folder.
        progress: receives "segment", "register", "match" and "report" events.
        cancel: checked between steps.

    Returns:
        The compare.json document (also written). Refused registrations are in it, not raised.
    """
    if len(inputs) < 2:
        raise InputError(None, f"compare needs at least two studies, got {len(inputs)}")
    labels = study_names(inputs, names)
    with atomic_output_folder(out_dir, overwrite) as staging:
        studies = load_studies(inputs, labels, staging, options, progress, cancel)
        followup = follow_up(studies, config, progress, cancel)
        warnings = _missing_ct_warnings(studies)
        report(progress, "report", 0, 1, "compare.json and compare.html")
        document = followup_document(followup, warnings)
        write_compare_report(staging, document, followup)
        report(progress, "report", 1, 1, "done")
    return document


def _missing_ct_warnings(studies: Sequence[Study]) -> list[str]:
    missing = [s.name for s in studies if s.ct is None]
    if not missing:
        return []
    return [f"no CT for {', '.join(missing)}: the livers were aligned on their masks alone and the views show "
            "the labels without the CT"]

