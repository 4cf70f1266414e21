"""Patch sampling with foreground oversampling over the classes each case annotates.

A batch is drawn as one global batch from a seeded numpy generator, so every rank of a distributed
run draws the same batch and keeps its own share, and a resumed run continues the same sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvt.image import AIR_HU, AIR_THRESHOLD_HU
from lvt.train.data.cache import CachedCase

# Uniform draws before a centre ``inside_body`` gives up looking for a voxel above air (the cached box holds
# the body, so a few suffice); the last draw is kept.
BODY_TRIES = 50


@dataclass(frozen=True)
class PatchBatch:
    """Context boxes around the sampled centres (CPU numpy)."""

    hu: np.ndarray  # (B, 1, Zc, Yc, Xc) float32
    bits: np.ndarray  # (B, Zc, Yc, Xc) uint8
    class_weights: np.ndarray  # (B, 3) float32
    case_names: tuple[str, ...]


class PatchSampler:
    """Draw training boxes: case by dataset weight, then centre on annotated foreground with p, else uniform
    (``inside_body``: uniform over the voxels above air, for CTs without labels)."""

    def __init__(self, cases: list[CachedCase], context_zyx: tuple[int, int, int], foreground_probability: float,
                 seed: int, dataset_weights: dict[str, float] | None = None, inside_body: bool = False) -> None:
        if not cases:
            raise ValueError("no training cases to sample from")
        self.cases = cases
        self.context = tuple(context_zyx)
        self.foreground_probability = foreground_probability
        self.inside_body = inside_body
        self.rng = np.random.default_rng(seed)
        self.case_probabilities = _case_probabilities(cases, dataset_weights or {})

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]

    def sample(self, batch_size: int) -> PatchBatch:
        hu = np.empty((batch_size, 1, *self.context), dtype=np.float32)
        bits = np.empty((batch_size, *self.context), dtype=np.uint8)
        weights = np.empty((batch_size, 3), dtype=np.float32)
        names = []
        for b in range(batch_size):
            case = self.cases[int(self.rng.choice(len(self.cases), p=self.case_probabilities))]
            centre = self._centre(case)
            hu[b, 0] = _extract(case.image, centre, self.context, AIR_HU)
            bits[b] = _extract(case.bits, centre, self.context, 0)
            weights[b] = case.class_weights
            names.append(case.name)
        return PatchBatch(hu, bits, weights, tuple(names))

    def _centre(self, case: CachedCase) -> np.ndarray:
        if self.rng.random() < self.foreground_probability:
            present = [k for k in range(3) if case.annotated[k] and len(case.foreground[k])]
            if present:
                coords = case.foreground[present[int(self.rng.integers(len(present)))]]
                return coords[int(self.rng.integers(len(coords)))]
        centre = np.array([int(self.rng.integers(s)) for s in case.image.shape])
        for _ in range(BODY_TRIES if self.inside_body else 0):
            if case.image[tuple(centre)] > AIR_THRESHOLD_HU:
                break
            centre = np.array([int(self.rng.integers(s)) for s in case.image.shape])
        return centre


def _case_probabilities(cases: list[CachedCase], dataset_weights: dict[str, float]) -> np.ndarray:
    """Each dataset gets its weight (default 1) spread evenly over its cases."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.dataset] = counts.get(case.dataset, 0) + 1
    raw = np.array([dataset_weights.get(c.dataset, 1.0) / counts[c.dataset] for c in cases], dtype=float)
    return raw / raw.sum()


def _extract(volume: np.ndarray, centre: np.ndarray, size: tuple[int, ...], fill: float) -> np.ndarray:
    """A box of ``size`` centred on ``centre``, padded with ``fill`` outside the volume."""
    start = np.asarray(centre) - np.asarray(size) // 2
    out = np.full(size, fill, dtype=volume.dtype)
    src = tuple(slice(max(0, s), min(n, s + w)) for s, w, n in zip(start, size, volume.shape, strict=True))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True))
    if all(sl.stop > sl.start for sl in src):
        out[dst] = volume[src]
    return out
