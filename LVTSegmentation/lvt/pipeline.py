"""The one-way flow of ``lvt segment`` and ``lvt measure``: CT in, a complete output folder out.

read CT -> model grid -> sliding window -> probabilities -> back to the CT grid (inside the liver
region only) -> exclusive labels + clean-up -> segmentation, labels, surfaces, measurements, report.
The output folder is assembled in a temporary sibling and renamed at the end, so an error or a
cancel never leaves half a result behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lvt.errors import InputError
from lvt.geometry import bounding_box_in, crop, resample_channels_like, resample_to_spacing
from lvt.image import Image
from lvt.inference import Predictor, WindowStats
from lvt.labels import LIVER, TUMOR
from lvt.postprocess import PostprocessConfig, largest_component, postprocess
from lvt.progress import ProgressCallback, check_cancel, report

logger = logging.getLogger(__name__)

REGION_MARGIN_MM = 10.0


@dataclass
class SegmentationResult:
    """Labels on the input grid plus what it took to get them."""

    labels: Image
    dropped_tumors: list[dict]
    window_stats: WindowStats
    timings_s: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - start, 3)


def segment_image(
    ct: Image, predictor: Predictor, config: PostprocessConfig | None = None,
    progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
) -> SegmentationResult:
    """Segment a CT already in memory; the labels share the CT's exact grid."""
    timings: dict[str, float] = {}
    manifest = predictor.manifest
    with _timed(timings, "resample"):
        report(progress, "resample", 0, 1, f"resampling to {manifest.spacing_mm} mm")
        model_image = resample_to_spacing(ct, manifest.spacing_mm, interpolation="linear", default_value=-1024.0)
    check_cancel(cancel)
    with _timed(timings, "inference"):
        probabilities, stats = predictor.predict_probabilities(model_image.array, progress, cancel)
    check_cancel(cancel)
    with _timed(timings, "postprocess"):
        report(progress, "postprocess", 0, 1, "labels on the input grid")
        labels, dropped = _labels_on_input_grid(ct, model_image, probabilities, config or PostprocessConfig())
        report(progress, "postprocess", 1, 1, "done")
    return SegmentationResult(ct.with_array(labels), dropped, stats, timings)


def _labels_on_input_grid(ct: Image, model_image: Image, probabilities: np.ndarray,
                          config: PostprocessConfig) -> tuple[np.ndarray, list[dict]]:
    """Resample probabilities back only around the liver, threshold and clean up there."""
    labels = np.zeros(ct.array.shape, dtype=np.uint8)
    region = largest_component((probabilities[LIVER] > 0.5) | (probabilities[TUMOR] > 0.5))
    box = bounding_box_in(ct, model_image, region, REGION_MARGIN_MM) if region.any() else None
    if box is None:
        return labels, []
    ct_region = crop(ct, box)
    local = resample_channels_like(probabilities, model_image, ct_region)
    result = postprocess(local, ct_region, config)
    labels[box] = result.labels
    return labels, result.dropped_tumors


@contextlib.contextmanager
def atomic_output_folder(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling folder that replaces ``out_dir`` only when the block succeeds."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise InputError(out_dir, "output folder already exists (use --overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            retired = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, retired)
            shutil.rmtree(retired, ignore_errors=True)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
