"""The one-way flow of ``lvt segment`` and ``lvt measure``: CT in, a complete output folder out.

read CT -> model grid -> sliding window -> probabilities -> back to the CT grid (inside the liver
region only) -> exclusive labels + clean-up -> segmentation, labels, surfaces, measurements, report.
The output folder is assembled in a temporary sibling and renamed at the end, so an error or a
cancel never leaves half a result behind.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lvt.atomic import atomic_folder, refuse_existing_output
from lvt.errors import InputError
from lvt.grid import bounding_box_in, crop, resample_channels_like, resample_to_spacing
from lvt.heap import retained_heap
from lvt.image import AIR_HU, Image
from lvt.labels import whole_liver
from lvt.progress import ProgressCallback, check_cancel, checkpoint, report
from lvt.segment.outputs import ResectionRegion, write_outputs
from lvt.segment.postprocess import PostprocessConfig, liver_region, postprocess
from lvt.segment.refine import TumorRefinement

if TYPE_CHECKING:
    from lvt.segment.network_config import TargetKind
    from lvt.segment.predict import Predictor, WindowStats

REGION_MARGIN_MM = 10.0
DEFAULT_RESECTION_SEGMENT = "Resection"


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
    with _timed(timings, "resample"), retained_heap():
        report(progress, "resample", 0, 1, f"resampling to {manifest.spacing_mm} mm")
        model_image = resample_to_spacing(ct, manifest.spacing_mm, interpolation="linear", default_value=AIR_HU)
    check_cancel(cancel)
    with _timed(timings, "inference"):
        probabilities, stats = predictor.predict_probabilities(model_image.array, progress, cancel)
    check_cancel(cancel)
    with _timed(timings, "postprocess"), retained_heap():
        report(progress, "postprocess", 0, 1, "labels on the input grid")
        labels, dropped = _labels_on_input_grid(ct, model_image, probabilities, config or PostprocessConfig(),
                                                manifest.target, cancel)
        report(progress, "postprocess", 1, 1, "done")
    return SegmentationResult(ct.with_array(labels), dropped, stats, timings)


def _labels_on_input_grid(ct: Image, model_image: Image, probabilities: np.ndarray, config: PostprocessConfig,
                          target: TargetKind = "ml", cancel: threading.Event | None = None
                          ) -> tuple[np.ndarray, list[dict]]:
    """Resample probabilities back only around the liver, decode (the manifest's target kind) and clean up there."""
    labels = np.zeros(ct.array.shape, dtype=np.uint8)
    region = liver_region(probabilities, target)
    box = bounding_box_in(ct, model_image, region, REGION_MARGIN_MM) if region.any() else None
    if box is None:
        return labels, []
    ct_region = crop(ct, box)
    local = resample_channels_like(probabilities, model_image, ct_region)
    check_cancel(cancel)
    result = postprocess(local, ct_region, config, target)
    labels[box] = result.labels
    return labels, result.dropped_tumors


@contextlib.contextmanager
def atomic_output_folder(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling folder that replaces ``out_dir`` only when the block succeeds.

    The output path is locked meanwhile, so a second run given the same folder is refused at once
    rather than replacing the first one's result; an output folder that appears during the run is
    replaced only with ``overwrite``.

    Raises:
        InputError: the folder exists (without ``overwrite``), cannot be created, or another run is
            writing it.
    """
    out_dir = Path(out_dir)
    refuse_existing_output(out_dir, overwrite)
    with atomic_folder(out_dir, replace=overwrite, lock=True) as staging:
        yield staging


@dataclass(frozen=True)
class SegmentOptions:
    """How ``lvt segment`` runs: model, device, TTA, clean-up and which outputs to write."""

    model_path: Path | None = None
    device: str = "auto"
    use_tta: bool = False
    full_window: bool = False  # False: the sliding window covers the liver box only (lvt.segment.localize)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    series_uid: str | None = None
    allow_non_ct: bool = False
    fill_nonfinite: bool = False
    overwrite: bool = False
    write_surfaces: bool = True
    write_dicom: bool = True  # a DICOM input also gets segmentation.dcm (lvt.io.dicom_outputs)
    write_dicom_sr: bool = False
    use_compile: bool = False  # torch.compile the network (lvt.segment.compiled; pays only over many cases)

    @classmethod
    def from_args(cls, args: object) -> SegmentOptions:
        """Options from parsed ``lvt`` arguments (missing ones keep their defaults)."""
        get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
        return cls(
            model_path=get("model"), device=get("device", "auto"), use_tta=bool(get("tta", False)),
            postprocess=PostprocessConfig(min_tumor_volume_ml=get("min_tumor_ml", 0.05),
                                          tumor_refinement=TumorRefinement() if get("refine_tumors") else None),
            series_uid=get("series"), allow_non_ct=bool(get("force", False)), overwrite=bool(get("overwrite", False)),
            fill_nonfinite=bool(get("fill_nonfinite", False)), full_window=bool(get("full_window", False)),
            write_surfaces=not get("no_surfaces", False),
            write_dicom=not get("no_dicom", False), write_dicom_sr=bool(get("dicom_sr", False)),
            use_compile=get("compile") == "on",
        )


def load_predictor(options: SegmentOptions, progress: ProgressCallback | None = None) -> tuple[Predictor, list[str]]:
    """The model named in the options (the bundled one by default) on the requested device.

    Torch is imported here, not at the top, so that ``lvt segment`` and ``lvt measure`` report a bad
    input without loading it.

    Returns:
        The predictor and any note for the user (e.g. that it fell back to the CPU).
    """
    from lvt.segment.device import resolve_device
    from lvt.segment.model_file import bundled_model_path
    from lvt.segment.predict import Predictor, SlidingWindowConfig

    device, message = resolve_device(options.device)
    if message:
        report(progress, "read", 0, 1, message)
    path = options.model_path or bundled_model_path()
    sliding = SlidingWindowConfig(use_tta=options.use_tta, liver_box=not options.full_window,
                                  use_compile=options.use_compile)
    return Predictor.from_file(path, str(device), sliding), [message] if message else []


def segment_file(input_path: Path, out_dir: Path, options: SegmentOptions, *,
                 progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                 loaded: tuple[Predictor, list[str]] | None = None) -> dict:
    """``lvt segment``: read a CT, segment it, write the complete output folder atomically.

    ``loaded`` is a predictor already loaded (with its notes), so that a cohort loads the model once.

    Returns:
        The report (as written to report.json).
    """
    from lvt.io import read_image_with_info
    from lvt.io.dicom_outputs import DicomRequest

    if options.write_surfaces:  # the 3D view's rendering check runs in a child meanwhile
        from lvt.measure.surface_view import start_offscreen_check

        start_offscreen_check()
    with atomic_output_folder(out_dir, options.overwrite) as staging, ThreadPoolExecutor(1) as loader:
        # The model loads (1-2 s, torch's import) while the voxels are read (zlib, ITK, numpy: no GIL held)
        loading: list[Future] = []
        checkpoint(progress, cancel, "read", 0, 1, f"reading {input_path}")
        started = time.perf_counter()
        ct, read_info = read_image_with_info(
            input_path, series_uid=options.series_uid, allow_non_ct=options.allow_non_ct,
            fill_nonfinite=options.fill_nonfinite,
            on_header=None if loaded else lambda: loading.append(loader.submit(load_predictor, options, progress)))
        read_seconds = time.perf_counter() - started
        check_cancel(cancel)
        predictor, notes = loaded or loading[0].result()
        checkpoint(progress, cancel, "read", 1, 1,
                   f"{ct.size_ijk} voxels at {tuple(round(s, 3) for s in ct.spacing_mm)} mm")
        result = segment_image(ct, predictor, options.postprocess, progress, cancel)
        result.timings_s["read"] = round(read_seconds, 3)
        inference = inference_summary(options, result, notes)
        warnings = collect_warnings(options, notes, result, read_info.notes)
        return write_outputs(staging, result.labels, ct, input_path=input_path, model=model_summary(predictor),
                             inference=inference, dropped=result.dropped_tumors,
                             min_volume_ml=options.postprocess.min_tumor_volume_ml,
                             write_surfaces=options.write_surfaces, warnings=warnings,
                             progress=progress, cancel=cancel, source=read_info.to_dict(),
                             dicom=DicomRequest(read_info.series, options.write_dicom, options.write_dicom_sr))


def collect_warnings(options: SegmentOptions, notes: list[str], result: SegmentationResult,
                     read_notes: Sequence[str] = ()) -> list[str]:
    """The report's warnings: what reading had to do to give the right image, the device, the sliding window.

    Device notes are warnings only when the user asked for a device and did not get it.
    """
    return [*read_notes, *(notes if options.device != "auto" else []), *result.window_stats.notes]


def model_summary(predictor: Predictor) -> dict:
    manifest = predictor.manifest
    return {"name": manifest.name, "version": manifest.version, "spacing_mm": list(manifest.spacing_mm),
            "weights_sha256": manifest.weights_identity, "metrics": manifest.metrics}


def inference_summary(options: SegmentOptions, result: SegmentationResult, notes: list[str]) -> dict:
    stats = result.window_stats
    return {"device": stats.device, "tta": options.use_tta,
            "refine_tumors": options.postprocess.tumor_refinement is not None, **stats.counts(),
            "timings_s": result.timings_s, "notes": notes + stats.notes}


@dataclass(frozen=True)
class ValueMap:
    """How a label map's values become LVT labels: ``values`` (None: identity on 0..3), others background or refused."""

    values: dict[int, int] | None
    others_background: bool = False


def measure_file(seg_path: Path, out_dir: Path, *, ct_path: Path | None = None,
                 value_map: ValueMap | None = None, overwrite: bool = False, write_surfaces: bool = True,
                 progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                 resection_path: Path | None = None, resection_segment: str | None = None) -> dict:
    """``lvt measure``: measurements, surfaces and report from an existing (edited) segmentation.

    A Slicer-edited segmentation may be stored cropped: with ``--ct`` it is placed back on the CT
    grid (nearest neighbour, exact for a crop); without, it is measured on its own grid.

    Args:
        value_map: how a label map's values become LVT labels (default: identity on 0..3).
        resection_path: a resection region (label map, nonzero inside, or ``.seg.nrrd``) for the
            liver remnant; with only ``resection_segment``, that segment of ``seg_path`` itself.
        resection_segment: the segment's name in a ``.seg.nrrd`` (any case).

    Raises:
        InputError: the segmentation does not lie on the CT's grid (other spacing or orientation),
            or the resection region is unusable (see :func:`read_resection_region`).
    """
    from lvt.grid import resample_like
    from lvt.io import read_image_with_info, read_segmentation

    with atomic_output_folder(out_dir, overwrite) as staging:
        checkpoint(progress, cancel, "read", 0, 1, f"reading {seg_path}")
        value_map = value_map or ValueMap(None)
        labels = read_segmentation(seg_path, value_map.values, others_background=value_map.others_background)
        ct, notes = None, ()
        if ct_path is not None:
            ct, read_info = read_image_with_info(ct_path)
            notes = read_info.notes
            _check_on_ct_grid(labels, ct, seg_path, ct_path)
            labels = resample_like(labels, ct, interpolation="nearest")
        resection = None
        if resection_path is not None or resection_segment is not None:
            if not whole_liver(labels.array).any():
                raise InputError(seg_path, "has no liver, so there is no liver remnant to compute")
            resection = read_resection_region(resection_path or seg_path, resection_segment, labels)
        checkpoint(progress, cancel, "read", 1, 1, "done")
        return write_outputs(staging, labels, ct, input_path=seg_path, model=None, inference=None, dropped=[],
                             min_volume_ml=0.0, write_surfaces=write_surfaces, warnings=list(notes),
                             progress=progress, cancel=cancel, resection=resection)


def _check_on_ct_grid(labels: Image, ct: Image, seg_path: Path, ct_path: Path) -> None:
    """A segmentation matches a CT when it has its spacing and direction and its voxels fall on the CT's."""
    offset = ct.lps_to_ijk(np.asarray(labels.origin_lps_mm))[0]
    aligned = (np.allclose(labels.spacing_mm, ct.spacing_mm, rtol=1e-4)
               and np.allclose(labels.direction, ct.direction, atol=1e-4)
               and np.allclose(offset, np.round(offset), atol=1e-3))
    if not aligned:
        raise InputError(seg_path, f"segmentation grid does not match the CT {ct_path} (spacing "
                         f"{labels.spacing_mm} vs {ct.spacing_mm}, or different orientation or voxel positions)")


def read_resection_region(path: Path, segment_name: str | None, labels: Image) -> ResectionRegion:
    """Read a resection region and place it on the labels' grid (nearest neighbour; any grid is accepted).

    A ``.seg.nrrd`` gives one segment: ``segment_name`` (exact, else in any case), by default the
    one named "Resection", else its only segment. Any other file is a label map, nonzero inside.

    Raises:
        InputError: unreadable file, no such segment, an empty region, or a region none of whose
            voxels falls on the labels' grid (drawn on another study).
    """
    from lvt.grid import describe_grid, resample_like
    from lvt.io import is_slicer_segmentation, read_label_image, read_segment_mask

    path = Path(path)
    if is_slicer_segmentation(path):
        mask, name = read_segment_mask(path, segment_name, DEFAULT_RESECTION_SEGMENT)
        source = f"{path} (segment {name!r})"
    elif segment_name is not None:
        raise InputError(path, f"is a label map, not a .seg.nrrd: it has no segment {segment_name!r}")
    else:
        mask, source = read_label_image(path), str(path)
    if not mask.array.any():
        raise InputError(path, f"the resection region {source} is empty")
    on_grid = resample_like(mask.with_array((mask.array != 0).astype(np.uint8)), labels, interpolation="nearest")
    if not on_grid.array.any():
        raise InputError(path, f"no voxel of the resection region lies on the segmentation's grid (region: "
                         f"{describe_grid(mask)}; segmentation: {describe_grid(labels)}); was it drawn on "
                         "another study?")
    return ResectionRegion(on_grid, source)
