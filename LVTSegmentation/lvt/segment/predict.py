"""Sliding-window inference at the model's resolution.

Windows of the training patch size with 50 % overlap (nnU-Net's step rule) placed over the body's
bounding box, a separable Gaussian importance map (MONAI's), several windows per forward pass,
logits accumulated in preallocated float32 buffers at model resolution only and on the device that
runs the network, windows that hold nothing but air skipped (counted in the stats), freed memory kept
in the process while the CPU runs the network, optional flip test-time augmentation, fp16 autocast on
CUDA only (the last two from :mod:`lvt.segment.device`). An ensemble's members each run the whole
sliding window (with their TTA) and their probabilities are averaged before decoding. Optionally the
windows cover only the liver box that a cheap first pass finds (:mod:`lvt.segment.localize`). What
each of these choices bought is measured in docs/performance.md.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lvt.heap import retained_heap
from lvt.image import AIR_THRESHOLD_HU
from lvt.progress import ProgressCallback, check_cancel, report
from lvt.segment.compiled import CompiledNetwork
from lvt.segment.device import autocast, resolve_device
from lvt.segment.localize import LOCALIZE_ZOOM, Box, body_box, cuts_liver, downsample, liver_box, pad_to_patch, shift
from lvt.segment.model_file import ModelManifest, load_models
from lvt.segment.network import UNet, probabilities_from_logits
from lvt.segment.postprocess import liver_region
from lvt.segment.window import apply_window

logger = logging.getLogger(__name__)

GAUSSIAN_FLOOR = 1e-3  # as MONAI: a window's far corners still count a little, and never 0/0
WINDOWS_PER_BATCH_CPU = 1  # 2 or 4 are no faster on 2 idle cores and need ~0.4 GB more (docs/performance.md)
WINDOWS_PER_BATCH_CUDA = 4
MIN_WINDOWS_TO_LOCALIZE = 3  # with fewer, the first pass (a window) and the liver box cannot save one


@dataclass(frozen=True)
class SlidingWindowConfig:
    """Runtime knobs of the sliding window (the patch size comes from the model manifest).

    Attributes:
        overlap: fraction of the patch shared by neighbouring windows (0.5 as nnU-Net and MONAI).
        windows_per_batch: windows per forward pass; None picks per device (1 on CPU, 4 on CUDA).
        use_tta: average the predictions of all flips along the manifest's TTA axes.
        skip_air_windows: do not run the network on windows whose voxels are all below
            ``air_threshold_hu`` (their voxels become background unless another window covers them).
        air_threshold_hu: the HU under which a voxel counts as air.
        crop_to_body: place the windows over the box of the body (voxels above ``air_threshold_hu``)
            instead of the whole image, so the cost follows the body, not the field of view; the
            report counts the windows this saves as skipped air.
        use_channels_last: run the network in channels-last 3D memory format (helps tensor cores on
            GPUs; measured slower on AVX2 CPUs).
        use_compile: ``torch.compile`` the network (pays only when many windows amortise the
            compilation; a failed compile runs eager: :mod:`lvt.segment.compiled`).
        liver_box: place the windows over the liver box that a first pass at twice the spacing
            finds (:mod:`lvt.segment.localize`); the full sliding window when that pass finds no
            liver, the box saves no window or cut the liver (``WindowStats.mode`` says which).
            Voxels outside the box are background.
    """

    overlap: float = 0.5
    windows_per_batch: int | None = None
    use_tta: bool = False
    skip_air_windows: bool = True
    air_threshold_hu: float = AIR_THRESHOLD_HU
    use_channels_last: bool = False
    use_compile: bool = False
    crop_to_body: bool = True
    liver_box: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.windows_per_batch is not None and self.windows_per_batch < 1:
            raise ValueError(f"windows_per_batch must be >= 1 or None, got {self.windows_per_batch}")

    def batch_size_for(self, device: torch.device) -> int:
        """Windows per forward pass on ``device`` (the configured number, else the device default)."""
        if self.windows_per_batch is not None:
            return self.windows_per_batch
        return WINDOWS_PER_BATCH_CUDA if device.type == "cuda" else WINDOWS_PER_BATCH_CPU


@dataclass
class WindowStats:
    """What the sliding window did, for the report and the benchmarks."""

    windows_total: int = 0
    windows_computed: int = 0
    windows_skipped_air: int = 0
    forward_passes: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)
    mode: str = "full"  # "liver box", or "full" with why the liver box was not used
    windows_localize: int = 0  # windows of the first pass that found the liver box
    windows_outside_liver_box: int = 0  # windows of the full sliding window the liver box did not need

    def counts(self) -> dict:
        """The report's record of the sliding window: which one ran, and its window counts."""
        return {"sliding_window": self.mode, "windows_total": self.windows_total,
                "windows_computed": self.windows_computed, "windows_skipped_air": self.windows_skipped_air,
                "windows_outside_liver_box": self.windows_outside_liver_box,
                "windows_localize": self.windows_localize}


def compute_window_starts(image_size: int, patch_size: int, overlap: float) -> list[int]:
    """Window starts along one axis: evenly spread, first at 0, last flush with the end.

    Example: image 110, patch 64, overlap 0.5 -> step target 32, n = ceil((110-64)/32)+1 = 3 windows,
    spread evenly: starts 0, 23, 46.
    """
    if image_size <= patch_size:
        return [0]
    target_step = patch_size * (1.0 - overlap)
    n_windows = math.ceil((image_size - patch_size) / target_step) + 1
    actual_step = (image_size - patch_size) / (n_windows - 1)
    return [round(actual_step * i) for i in range(n_windows)]


@lru_cache(maxsize=4)
def gaussian_importance_map(patch_size: tuple[int, int, int], sigma_fraction: float = 0.125) -> np.ndarray:
    """Gaussian weights favouring window centres: never below 1e-3, peak 1, mirror-symmetric.

    Separable and centred between the two middle voxels of an even patch, so a flipped window gets
    flipped weights (flip TTA and flipped images stay consistent). Sigma is ``sigma_fraction`` of
    the patch along each axis. This is MONAI's ``compute_importance_map(mode="gaussian")`` (same
    floor) rescaled to peak 1, which leaves weighted averages unchanged: the two engines agree.

    Returns:
        (Z, Y, X) read-only float32 array.
    """
    profiles = []
    for size in patch_size:
        offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        profiles.append(np.exp(-0.5 * (offsets / (size * sigma_fraction)) ** 2))
    weights = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
    weights = np.maximum(weights, GAUSSIAN_FLOOR)
    weights = (weights / weights.max()).astype(np.float32)
    weights.setflags(write=False)
    return weights


def _box(start: tuple[int, ...], patch: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))


def _batches(items: list, size: int) -> Iterator[list]:
    for first in range(0, len(items), size):
        yield items[first:first + size]


@dataclass
class _Accumulator:
    """Gaussian-weighted sums of logits and of weights, preallocated at model resolution on one device."""

    logits: torch.Tensor  # (C, Z, Y, X) float32
    weights: torch.Tensor  # (Z, Y, X) float32
    gaussian: torch.Tensor  # (Z, Y, X) float32 patch weights

    @classmethod
    def allocate(cls, channels: int, shape: tuple[int, ...], patch: tuple[int, ...],
                 device: torch.device) -> _Accumulator:
        return cls(torch.zeros((channels, *shape), dtype=torch.float32, device=device),
                   torch.zeros(shape, dtype=torch.float32, device=device),
                   torch.tensor(gaussian_importance_map(patch), device=device))

    def add(self, boxes: list[tuple[slice, ...]], outputs: torch.Tensor) -> None:
        """Add (B, C, *patch) float32 logits, one per box, weighted in place."""
        outputs.mul_(self.gaussian)
        for box, output in zip(boxes, outputs, strict=True):
            self.logits[(slice(None), *box)] += output
            self.weights[box] += self.gaussian

    def mean_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weighted mean logits (in place) and the (Z, Y, X) mask of voxels some window reached."""
        covered = self.weights > 0
        return self.logits.div_(self.weights.clamp_(min=torch.finfo(torch.float32).tiny)), covered


def count_windows(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float) -> int:
    """Windows a sliding window over the whole (padded) image would run."""
    return math.prod(len(compute_window_starts(max(s, p), p, overlap)) for s, p in zip(shape, patch, strict=True))


class Predictor:
    """A loaded model or ensemble on a device, ready to segment many images (the GUI process, CLI and validation)."""

    def __init__(self, networks: UNet | Sequence[UNet], manifest: ModelManifest, device: torch.device,
                 config: SlidingWindowConfig | None = None) -> None:
        self.networks = [networks] if isinstance(networks, torch.nn.Module) else list(networks)
        if not self.networks:
            raise ValueError("a predictor needs at least one network")
        self.manifest = manifest
        self.device = device
        self.config = config or SlidingWindowConfig()
        self._memory_format = torch.channels_last_3d if self.config.use_channels_last else torch.contiguous_format
        for network in self.networks:
            network.to(device).eval()
            network.deep_supervision = False
            if self.config.use_channels_last:
                network.to(memory_format=torch.channels_last_3d)
        batch = self.config.batch_size_for(device)
        self._compiled = [CompiledNetwork(n, batch) for n in self.networks] if self.config.use_compile else None

    @property
    def network(self) -> UNet:
        """The first (or only) member."""
        return self.networks[0]

    @classmethod
    def from_file(cls, path: Path | str, device: str = "auto", config: SlidingWindowConfig | None = None) -> Predictor:
        resolved, message = resolve_device(device)
        if message:
            logger.info(message)
        networks, manifest = load_models(path, resolved)
        return cls(networks, manifest, resolved, config)

    @torch.inference_mode()
    def predict_probabilities(self, hu: np.ndarray, progress: ProgressCallback | None = None,
                              cancel: threading.Event | None = None) -> tuple[np.ndarray, WindowStats]:
        """Class probabilities on the model grid.

        Args:
            hu: (Z, Y, X) HU image already resampled to the model spacing.

        Returns:
            (3, Z, Y, X) float32 probabilities (liver, vessel, tumor), an ensemble's averaged, and the
            window statistics. Voxels that no computed window reached (air) have probability 0. They
            decode by the manifest's target kind (:func:`lvt.segment.postprocess.decode_masks`): a
            softmax head's background is 1 minus their sum.
        """
        hu = np.asarray(hu, dtype=np.float32)
        try:
            return self._predict(hu, self.device, progress, cancel)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            note = "CUDA ran out of memory: continuing on the CPU"
            logger.warning(note)
            report(progress, "inference", 0, 1, note)
            for network in self.networks:
                network.to("cpu")
            self._compiled = None
            probabilities, stats = self._predict(hu, torch.device("cpu"), progress, cancel)
            stats.notes.append(note)
            return probabilities, stats

    @torch.inference_mode()
    def liver_box(self, hu: np.ndarray) -> Box | None:
        """The liver box of a (Z, Y, X) HU image on the model grid (:mod:`lvt.segment.localize`); None: no liver."""
        patch = tuple(self.manifest.patch_size_zyx)
        padded, unpad = pad_to_patch(np.asarray(hu, dtype=np.float32), patch)
        body = self._region(padded, patch)
        box = None if body is None else self._locate_liver(padded, body, self.device, WindowStats())
        return None if box is None else tuple(slice(max(0, b.start - u.start), min(b.stop, u.stop) - u.start)
                                              for b, u in zip(box, unpad, strict=True))

    def _predict(self, hu: np.ndarray, device: torch.device, progress: ProgressCallback | None,
                 cancel: threading.Event | None) -> tuple[np.ndarray, WindowStats]:
        """Pad -> body box -> (liver box) -> windows -> stitch -> probabilities -> crop back."""
        start_time = time.perf_counter()
        patch = tuple(self.manifest.patch_size_zyx)
        padded, unpad = pad_to_patch(hu, patch)
        stats = WindowStats(windows_total=count_windows(padded.shape, patch, self.config.overlap), device=str(device))
        body = self._region(padded, patch)
        probabilities = np.zeros((len(self.manifest.classes), *padded.shape), dtype=np.float32)
        if body is not None:
            with retained_heap(device.type == "cpu"):
                self._windows_over_liver_or_body(padded, body, probabilities, device, stats, progress, cancel)
        tta = self._tta_passes() if self.config.use_tta else 1
        stats.forward_passes = stats.windows_computed * tta * len(self.networks) + stats.windows_localize
        stats.seconds = time.perf_counter() - start_time
        if padded is hu:
            return probabilities, stats
        return np.ascontiguousarray(probabilities[(slice(None), *unpad)]), stats

    def _windows_over_liver_or_body(self, padded: np.ndarray, body: Box, probabilities: np.ndarray,
                                    device: torch.device, stats: WindowStats, progress: ProgressCallback | None,
                                    cancel: threading.Event | None) -> None:
        """The sliding window over the liver box when asked for and it pays, else over the body box (stats say why)."""
        full = len(self._windows(padded[body], self.config.overlap))
        stats.windows_skipped_air = stats.windows_total - full
        if self.config.liver_box and full >= MIN_WINDOWS_TO_LOCALIZE:
            box = self._locate_liver(padded, body, device, stats, progress, cancel)
            box = None if box is None else self._aligned(box, body)
            if box is None:
                stats.mode = "full: the first pass found no liver"
            elif len(self._windows(padded[box], self.config.overlap)) >= full:
                stats.mode = "full: the liver box saves no window"
            else:
                self._members_over(padded, box, probabilities, device, stats, progress, cancel)
                inside = probabilities[(slice(None), *box)]
                if not cuts_liver(liver_region(inside, self.manifest.target), box, body, self.manifest.patch_size_zyx):
                    stats.mode, stats.windows_outside_liver_box = "liver box", full - stats.windows_computed
                    return
                stats.mode = "full: the liver box cut the liver"
                probabilities.fill(0.0)
        self._members_over(padded, body, probabilities, device, stats, progress, cancel)

    def _aligned(self, box: Box, body: Box) -> Box:
        """The liver box spanning the body on each axis where it saves no window: there windows fall as in the full."""
        def count(extent: slice, patch: int) -> int:
            return len(compute_window_starts(extent.stop - extent.start, patch, self.config.overlap))
        return tuple(b if count(b, p) < count(w, p) else w for b, w, p in zip(box, body, self.manifest.patch_size_zyx,
                                                                             strict=True))

    def _locate_liver(self, padded: np.ndarray, body: Box, device: torch.device, stats: WindowStats,
                      progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> Box | None:
        """The liver box from the first member at LOCALIZE_ZOOM times the spacing: no overlap, no TTA."""
        patch = tuple(self.manifest.patch_size_zyx)
        coarse, unpad = pad_to_patch(downsample(padded[body], LOCALIZE_ZOOM), patch)
        report(progress, "inference", 0, 1, f"locating the liver at {LOCALIZE_ZOOM}x the model spacing")
        accumulator, stats.windows_localize = self._sliding_window(0, coarse, device, None, cancel, 0.0, False)
        probabilities = np.zeros((len(self.manifest.classes), *coarse.shape), dtype=np.float32)
        self._add_probabilities(accumulator, probabilities, 1.0)
        box = liver_box(probabilities[(slice(None), *unpad)], self.manifest.target, patch,
                        padded[body].shape, LOCALIZE_ZOOM)
        return None if box is None else shift(box, body)

    def _members_over(self, padded: np.ndarray, region: Box, probabilities: np.ndarray, device: torch.device,
                      stats: WindowStats, progress: ProgressCallback | None, cancel: threading.Event | None) -> None:
        """Every member's sliding window over ``region``, their probabilities averaged into place."""
        for member in range(len(self.networks)):
            accumulator, computed = self._sliding_window(member, padded[region], device, progress, cancel,
                                                         self.config.overlap, self.config.use_tta)
            self._add_probabilities(accumulator, probabilities[(slice(None), *region)], 1.0 / len(self.networks))
            del accumulator  # one member's buffers at a time
        stats.windows_computed += computed

    def _region(self, padded: np.ndarray, patch: tuple[int, ...]) -> tuple[slice, ...] | None:
        """Where windows go: the body's box, or the whole image when cropping is off."""
        if self.config.crop_to_body:
            return body_box(padded, self.config.air_threshold_hu, patch)
        return tuple(slice(0, s) for s in padded.shape)

    def _windows(self, region: np.ndarray, overlap: float) -> list[tuple[int, ...]]:
        """Starts of the windows over ``region`` (at least one patch in size) that hold more than air."""
        patch = tuple(self.manifest.patch_size_zyx)
        starts = itertools.product(*(compute_window_starts(s, p, overlap) for s, p in zip(region.shape, patch,
                                                                                            strict=True)))
        return [s for s in starts if not self._is_air(region, s, patch)]

    def _sliding_window(self, member: int, region: np.ndarray, device: torch.device,
                        progress: ProgressCallback | None, cancel: threading.Event | None, overlap: float,
                        use_tta: bool) -> tuple[_Accumulator, int]:
        """Run one member's windows over ``region`` and accumulate their logits; also return how many ran."""
        patch = tuple(self.manifest.patch_size_zyx)
        keep = self._windows(region, overlap)
        skipped = count_windows(region.shape, patch, overlap) - len(keep)
        accumulator = _Accumulator.allocate(self.manifest.network.out_channels, region.shape, patch, device)
        source = torch.from_numpy(region).to(device)  # on a GPU: one upload, windows cut out there
        members, done = len(self.networks), 0
        of_model = f" of model {member + 1}/{members}" if members > 1 else ""
        total, first = len(keep) * members, len(keep) * member
        report(progress, "inference", first, total, f"{len(keep)} windows{of_model} ({skipped} air windows skipped)")
        for chunk in _batches(keep, self.config.batch_size_for(device)):
            check_cancel(cancel)
            boxes = [_box(s, patch) for s in chunk]
            inputs = torch.stack([source[box] for box in boxes]).unsqueeze(1)
            windowed = apply_window(inputs, self.manifest.window)
            accumulator.add(boxes, self._forward_with_tta(member, windowed, device, use_tta))
            done += len(chunk)
            report(progress, "inference", first + done, total,
                   f"window {done}/{len(keep)}{of_model} ({skipped} air windows skipped)")
        return accumulator, done

    def _add_probabilities(self, accumulator: _Accumulator, destination: np.ndarray, weight: float) -> None:
        """Turn the accumulated logits into probabilities (in place); add ``weight`` times them to ``destination``."""
        logits, covered = accumulator.mean_logits()
        if self.manifest.network.head == "sigmoid":
            probabilities = torch.sigmoid_(logits)  # in place: a second (C, Z, Y, X) buffer would double the peak
        else:
            probabilities = probabilities_from_logits(logits[None], self.manifest.network.head)[0]
        probabilities.mul_(covered)
        if weight == 1.0:  # one model: straight into place, no second buffer on the host
            torch.from_numpy(destination).copy_(probabilities)
        else:
            torch.from_numpy(destination).add_(probabilities.mul_(weight).cpu())

    def _is_air(self, region: np.ndarray, start: tuple[int, ...], patch: tuple[int, ...]) -> bool:
        return self.config.skip_air_windows and float(region[_box(start, patch)].max()) < self.config.air_threshold_hu

    def _tta_passes(self) -> int:
        return 2 ** len(self.manifest.tta_flip_axes)

    def _run_network(self, member: int, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
        inputs = inputs.contiguous(memory_format=self._memory_format)
        if self._compiled is None or device != self.device:
            return self.networks[member](inputs)
        return self._compiled[member](inputs)

    def _forward_with_tta(self, member: int, inputs: torch.Tensor, device: torch.device,
                          use_tta: bool) -> torch.Tensor:
        """(B, C, *patch) float32 logits of one member for a (B, 1, *patch) windowed batch, averaged over flips."""
        self.networks[member].to(device)
        with autocast(device):
            total = self._run_network(member, inputs, device).float()
            if not use_tta:
                return total
            spatial_axes = [2 + a for a in self.manifest.tta_flip_axes]
            for n_axes in range(1, len(spatial_axes) + 1):
                for axes in itertools.combinations(spatial_axes, n_axes):
                    total += torch.flip(self._run_network(member, torch.flip(inputs, axes), device), axes).float()
        return total.div_(self._tta_passes())
