"""Preprocessing cache for training: each case once at the target spacing, memory-mapped afterwards.

Per case a folder with ``image.npy`` (int16 HU), ``bits.npy`` (uint8, bit k = class k, multi-hot
hierarchy applied), ``foreground.npz`` (sampled voxel coordinates per class, for foreground
oversampling) and ``meta.json`` (written last: its presence marks a complete entry). Folders are
keyed by the dataset spec's fingerprint and the spacing, so a changed spec rebuilds its cases.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvt.atomic import atomic_folder
from lvt.image import AIR_THRESHOLD_HU, Image
from lvt.labels import NUM_CLASSES, apply_hierarchy

CACHE_VERSION = 1
FOREGROUND_SAMPLES_PER_CLASS = 20000


@dataclass(frozen=True)
class CachedCase:
    """A preprocessed training case: memory-mapped arrays at the training spacing."""

    name: str
    dataset: str
    image: np.ndarray
    bits: np.ndarray
    annotated: tuple[bool, bool, bool]
    foreground: tuple[np.ndarray, ...]

    @property
    def class_weights(self) -> np.ndarray:
        return np.asarray(self.annotated, dtype=np.float32)

    def masks(self) -> np.ndarray:
        """(3, Z, Y, X) bool multi-hot masks."""
        return np.stack([(self.bits >> k) & 1 for k in range(NUM_CLASSES)]).astype(bool)


def cache_key(fingerprint: str, spacing_mm: tuple[float, float, float]) -> str:
    """Folder key of one dataset's cached cases: its spec fingerprint, the spacing, the cache version."""
    text = json.dumps({"spec": fingerprint, "spacing": [round(s, 4) for s in spacing_mm], "v": CACHE_VERSION})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pack_bits(masks: np.ndarray) -> np.ndarray:
    """(3, Z, Y, X) bool -> (Z, Y, X) uint8 with bit k set where class k is present."""
    bits = np.zeros(masks.shape[1:], dtype=np.uint8)
    for k in range(masks.shape[0]):
        bits |= masks[k].astype(np.uint8) << k
    return bits


def _body_box(hu: np.ndarray, margin: int = 4) -> tuple[slice, ...]:
    body = np.argwhere(hu > AIR_THRESHOLD_HU)
    if len(body) == 0:
        return tuple(slice(None) for _ in hu.shape)
    low = np.maximum(body.min(0) - margin, 0)
    high = np.minimum(body.max(0) + margin + 1, hu.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def _foreground_samples(bits: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    samples = {}
    for k in range(NUM_CLASSES):
        coords = np.argwhere((bits >> k) & 1).astype(np.int32)
        if len(coords) > FOREGROUND_SAMPLES_PER_CLASS:
            coords = coords[rng.choice(len(coords), FOREGROUND_SAMPLES_PER_CLASS, replace=False)]
        samples[f"class{k}"] = coords
    return samples


def to_training_grid(
    image: Image, masks: np.ndarray, spacing_mm: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a case to the training grid (image linear, masks nearest), or pass it through.

    Images already on an axis-aligned grid at the target spacing (phantoms rendered for training)
    skip resampling, so a GPU node without SimpleITK can build them.

    Returns:
        (Z, Y, X) float32 HU and (3, Z, Y, X) bool masks on the training grid.
    """
    if np.allclose(image.direction, np.eye(3)) and np.allclose(image.spacing_mm, spacing_mm):
        return image.array.astype(np.float32), masks.astype(bool)
    from lvt.grid import resample_like, resample_to_spacing  # SimpleITK is only needed here

    resampled = resample_to_spacing(image, spacing_mm, interpolation="linear")
    resampled_masks = np.stack([
        resample_like(image.with_array(m.astype(np.uint8)), resampled, interpolation="nearest").array > 0
        for m in masks
    ])
    return resampled.array.astype(np.float32), resampled_masks


def write_cached_case(folder: Path, name: str, dataset: str, hu: np.ndarray, masks: np.ndarray,
                      annotated: tuple[bool, bool, bool], seed: int) -> None:
    """Write one case atomically (a temporary folder renamed into place); ``meta.json`` marks it complete."""
    box = _body_box(hu)
    hu = np.clip(np.rint(hu[box]), -32768, 32767).astype(np.int16)
    bits = pack_bits(apply_hierarchy(masks[(slice(None), *box)]))
    with atomic_folder(folder) as staging:
        np.save(staging / "image.npy", hu)
        np.save(staging / "bits.npy", bits)
        np.savez(staging / "foreground.npz", **_foreground_samples(bits, np.random.default_rng(seed)))
        meta = {"name": name, "dataset": dataset, "annotated": list(annotated), "shape_zyx": list(hu.shape)}
        (staging / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def read_cached_case(folder: Path) -> CachedCase:
    """Open a cached case with memory-mapped arrays."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    with np.load(folder / "foreground.npz") as foreground:
        samples = tuple(foreground[f"class{k}"] for k in range(NUM_CLASSES))
    return CachedCase(
        name=meta["name"],
        dataset=meta["dataset"],
        image=np.load(folder / "image.npy", mmap_mode="r"),
        bits=np.load(folder / "bits.npy", mmap_mode="r"),
        annotated=tuple(bool(a) for a in meta["annotated"]),  # type: ignore[arg-type]
        foreground=samples,
    )


def is_cached(folder: Path) -> bool:
    return (folder / "meta.json").is_file()


def case_folder_name(case_name: str) -> str:
    """A file-system-safe, unique folder name for a case name like 'lits/volume-3'."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in case_name)
    return f"{safe}-{hashlib.sha1(case_name.encode()).hexdigest()[:8]}"
