"""Sliding-window inference at the model's resolution.

Windows of the training patch size with 50 % overlap (nnU-Net's step rule), a Gaussian importance
map, several windows per forward pass, logits accumulated in preallocated buffers at model
resolution only, windows that hold nothing but air skipped (counted in the stats), optional flip
test-time augmentation, fp16 autocast on CUDA only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from lvt.checkpoint import ModelManifest, load_model
from lvt.intensity import apply_window
from lvt.network import UNet, probabilities_from_logits
from lvt.progress import ProgressCallback, check_cancel, report

logger = logging.getLogger(__name__)

AIR_HU = -1024.0


@dataclass(frozen=True)
class SlidingWindowConfig:
    """Runtime knobs of the sliding window (the patch size comes from the model manifest)."""

    overlap: float = 0.5
    windows_per_batch: int = 2
    use_tta: bool = False
    skip_air_windows: bool = True
    air_threshold_hu: float = -500.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.windows_per_batch < 1:
            raise ValueError(f"windows_per_batch must be >= 1, got {self.windows_per_batch}")


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


def resolve_device(name: str) -> tuple[torch.device, str | None]:
    """Turn "auto" | "cpu" | "cuda" | "cuda:N" | "mps" into a device, with a message when falling back."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), None
        return torch.device("cpu"), "no CUDA GPU found: running on the CPU"
    if name.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu"), f"--device {name} requested but CUDA is not available: running on the CPU"
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        return torch.device("cpu"), "--device mps requested but MPS is not available: running on the CPU"
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return torch.device(name), None


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
    """Gaussian weights (peak 1) favouring window centres; never exactly zero (no 0/0 at borders)."""
    delta = np.zeros(patch_size, dtype=np.float32)
    delta[tuple(p // 2 for p in patch_size)] = 1.0
    weights = gaussian_filter(delta, [p * sigma_fraction for p in patch_size], mode="constant")
    weights /= weights.max()
    weights[weights == 0] = weights[weights > 0].min()
    weights.setflags(write=False)
    return weights


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    # fp16 on CUDA only: CPU autocast is slow on many CPUs and fp16 accumulation there is slower still.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _pad_to_patch(hu: np.ndarray, patch: tuple[int, int, int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad with air where the image is smaller than the patch; return the crop that undoes it."""
    pads = [max(0, p - s) for s, p in zip(hu.shape, patch, strict=True)]
    if not any(pads):
        return hu, tuple(slice(None) for _ in pads)
    widths = [(p // 2, p - p // 2) for p in pads]
    padded = np.pad(hu, widths, constant_values=AIR_HU)
    return padded, tuple(slice(lo, lo + s) for (lo, _), s in zip(widths, hu.shape, strict=True))


class Predictor:
    """A loaded model on a device, ready to segment many images (the GUI process, CLI and validation)."""

    def __init__(self, network: UNet, manifest: ModelManifest, device: torch.device,
                 config: SlidingWindowConfig | None = None) -> None:
        self.network = network.to(device).eval()
        self.network.deep_supervision = False
        self.manifest = manifest
        self.device = device
        self.config = config or SlidingWindowConfig()

    @classmethod
    def from_file(cls, path: Path | str, device: str = "auto", config: SlidingWindowConfig | None = None) -> Predictor:
        resolved, message = resolve_device(device)
        if message:
            logger.info(message)
        network, manifest = load_model(path, resolved)
        return cls(network, manifest, resolved, config)

    def predict_probabilities(self, hu: np.ndarray, progress: ProgressCallback | None = None,
                              cancel: threading.Event | None = None) -> tuple[np.ndarray, WindowStats]:
        """Class probabilities on the model grid.

        Args:
            hu: (Z, Y, X) HU image already resampled to the model spacing.

        Returns:
            (3, Z, Y, X) float32 probabilities (liver, vessel, tumor) and the window statistics.
        """
        try:
            logits, weights, stats = self._accumulate(hu, self.device, progress, cancel)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            note = "CUDA ran out of memory: continuing on the CPU"
            logger.warning(note)
            report(progress, "inference", 0, 1, note)
            self.network.to("cpu")
            logits, weights, stats = self._accumulate(hu, torch.device("cpu"), progress, cancel)
            stats.notes.append(note)
        covered = weights > 0
        logits[:, covered] /= weights[covered]
        logits[:, ~covered] = -30.0  # only air there: background
        probabilities = probabilities_from_logits(torch.from_numpy(logits)[None], self.manifest.network.head)[0]
        return probabilities.numpy(), stats

    def _accumulate(self, hu: np.ndarray, device: torch.device, progress: ProgressCallback | None,
                    cancel: threading.Event | None) -> tuple[np.ndarray, np.ndarray, WindowStats]:
        start_time = time.perf_counter()
        patch = tuple(self.manifest.patch_size_zyx)
        padded, unpad = _pad_to_patch(np.asarray(hu, dtype=np.float32), patch)
        starts = list(itertools.product(*(compute_window_starts(s, p, self.config.overlap)
                                          for s, p in zip(padded.shape, patch, strict=True))))
        stats = WindowStats(windows_total=len(starts), device=str(device))
        keep = [s for s in starts if not self._is_air(padded, s, patch)]
        stats.windows_skipped_air = len(starts) - len(keep)
        out_channels = self.manifest.network.out_channels
        logits = np.zeros((out_channels, *padded.shape), dtype=np.float32)
        weights = np.zeros(padded.shape, dtype=np.float32)
        gaussian = gaussian_importance_map(patch)
        gaussian_device = torch.tensor(gaussian, device=device)
        batch = self.config.windows_per_batch
        for first in range(0, len(keep), batch):
            check_cancel(cancel)
            chunk = keep[first:first + batch]
            windows = np.stack([padded[_box(s, patch)] for s in chunk])[:, None]
            inputs = apply_window(torch.from_numpy(windows), self.manifest.window).to(device)
            outputs = (self._forward_with_tta(inputs, device) * gaussian_device).float().cpu().numpy()
            for start, output in zip(chunk, outputs, strict=True):
                box = _box(start, patch)
                logits[(slice(None), *box)] += output
                weights[box] += gaussian
            stats.windows_computed += len(chunk)
            report(progress, "inference", stats.windows_computed, len(keep),
                   f"window {stats.windows_computed}/{len(keep)} ({stats.windows_skipped_air} air windows skipped)")
        stats.forward_passes = stats.windows_computed * (self._tta_passes() if self.config.use_tta else 1)
        stats.seconds = time.perf_counter() - start_time
        return logits[(slice(None), *unpad)], weights[unpad], stats

    def _is_air(self, padded: np.ndarray, start: tuple[int, ...], patch: tuple[int, ...]) -> bool:
        return self.config.skip_air_windows and float(padded[_box(start, patch)].max()) < self.config.air_threshold_hu

    def _tta_passes(self) -> int:
        return 2 ** len(self.manifest.tta_flip_axes)

    @torch.inference_mode()
    def _forward_with_tta(self, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
        self.network.to(device)
        with _autocast(device):
            total = self.network(inputs).float()
            if not self.config.use_tta:
                return total
            spatial_axes = [2 + a for a in self.manifest.tta_flip_axes]
            for n_axes in range(1, len(spatial_axes) + 1):
                for axes in itertools.combinations(spatial_axes, n_axes):
                    total += torch.flip(self.network(torch.flip(inputs, axes)), axes).float()
        return total / self._tta_passes()


def _box(start: tuple[int, ...], patch: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
