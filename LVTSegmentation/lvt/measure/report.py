"""report.json: the measurements of one study for machines (the schema of contracts.md).

The page for the clinician who reads the result is :mod:`lvt.measure.html`; its images come from
:mod:`lvt.measure.views` and :mod:`lvt.measure.surface_view`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lvt import __version__
from lvt.atomic import atomic_path
from lvt.image import Image
from lvt.measure.reliability import model_reliability, reliability_problems
from lvt.measure.volumes_and_lesions import Measurements


def build_report(
    *,
    input_path: str | Path,
    ct_or_labels_grid: Image,
    measurements: Measurements,
    model: Mapping | None,
    inference: Mapping | None,
    dropped: Sequence[Mapping] = (),
    min_volume_ml: float = 0.0,
    warnings: Sequence[str] = (),
    source: Mapping | None = None,
) -> dict:
    """The full report.json content (contracts.md schema); pure, no I/O.

    Args:
        input_path: the CT (``lvt segment``) or segmentation (``lvt measure``) the user gave.
        ct_or_labels_grid: the grid of that input; only its geometry is read.
        measurements: from :func:`lvt.measure.volumes_and_lesions.measure_labels`.
        model: a mapping with at least "name" and "version", or None when no model ran; its
            "metrics" (the manifest's) give "model_reliability" (:func:`model_reliability`).
        inference: device, TTA, window counts, per-stage timings (seconds), or None.
        dropped: tumor components removed by post-processing ("volume_ml", "centroid_lps_mm").
        min_volume_ml: post-processing's smallest kept lesion volume.
        warnings: messages for the user; the report's own :func:`reliability_problems` come first.
        source: what reading the input found (``lvt.io.ReadInfo.to_dict()``: the DICOM series used and the
            other series in the folder), merged into "input" so a reader knows which series was measured.

    Returns:
        A JSON-ready dict of plain Python types.

    Raises:
        ValueError: when ``model`` lacks a name or a version.
    """
    if model is not None and not {"name", "version"} <= set(model):
        raise ValueError(f"model needs 'name' and 'version', got keys {sorted(model)}")
    grid = ct_or_labels_grid
    document = {
        "lvt_version": __version__,
        "model": None if model is None else {"name": str(model["name"]), "version": str(model["version"])},
        "input": {
            "path": str(input_path),
            "size_ijk": [int(n) for n in grid.size_ijk],
            "spacing_mm": list(grid.spacing_mm),
            "origin_lps_mm": list(grid.origin_lps_mm),
            "direction": grid.direction.tolist(),
            **({} if source is None else {k: _plain(v) for k, v in source.items() if k != "notes"}),
        },
        **measurements.to_dict(dropped=dropped, min_volume_ml=min_volume_ml),
        "inference": None if inference is None else _plain(inference),
        "model_reliability": model_reliability(model),
    }
    document["warnings"] = [*reliability_problems(document), *(str(w) for w in warnings)]
    return document


def _plain(value: object) -> object:
    """Numpy scalars and arrays, tuples and Paths -> JSON types (inference dicts come from many places)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_report_json(report: Mapping, path: Path | str) -> Path:
    """Write report.json atomically (UTF-8, indented; NaN is refused, it is not JSON)."""
    path = Path(path)
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path
