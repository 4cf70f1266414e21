"""K-fold cross-validation: the config's training cases dealt into folds, the same on every machine and rank.

The split is made over base cases, as discovery lists them, so a case's synthetic-tumor variants always
fall in its fold (they are painted into it; a variant in validation would leak its case into training).
Each dataset's cases are shuffled by the config seed and dealt round-robin, so every fold holds every
dataset in proportion, and the deal continues across datasets so that fold sizes differ by at most one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lvt.errors import InputError
from lvt.train.data.discovery import discover_cases

if TYPE_CHECKING:
    from lvt.train.config import DatasetEntry


@dataclass(frozen=True)
class FoldSplit:
    """Base case names ("<dataset>/<case>") per fold, and how they were drawn."""

    folds: tuple[tuple[str, ...], ...]
    seed: int

    def validation(self, fold: int) -> frozenset[str]:
        """The held-out cases of ``fold``."""
        return frozenset(self.folds[fold])

    def training(self, fold: int) -> frozenset[str]:
        """Every case of the other folds."""
        return frozenset(name for index, names in enumerate(self.folds) if index != fold for name in names)

    def record(self, fold: int) -> dict:
        """What a run stores (``folds.json`` and the manifest's training section) to be reproducible."""
        return {"fold": fold, "folds": len(self.folds), "seed": self.seed,
                "validation_cases": sorted(self.folds[fold]), "cases_per_fold": [list(f) for f in self.folds]}


def _dataset_seed(seed: int, dataset: str) -> list[int]:
    """A generator seed from the config seed and the dataset name: adding a dataset leaves the others' deal."""
    return [seed, int(hashlib.sha256(dataset.encode("utf-8")).hexdigest()[:8], 16)]


def split_folds(entries: Sequence[DatasetEntry], folds: int, seed: int, source: str = "") -> FoldSplit:
    """Deal the base cases of ``entries`` into ``folds`` folds, stratified by dataset.

    Raises:
        InputError: fewer than two folds, or a dataset with fewer cases than folds (then some fold
            could not hold it), naming the config ``source`` and the dataset.
    """
    if folds < 2:
        raise InputError(source or None, f"cross-validation needs at least 2 folds, got {folds}")
    dealt: list[list[str]] = [[] for _ in range(folds)]
    turn = 0
    for entry in entries:
        names = [ref.name for ref in discover_cases(entry.spec)]
        if len(names) < folds:
            raise InputError(source or None, f"dataset {entry.spec.name!r} has {len(names)} case(s), fewer than the "
                                             f"{folds} folds; every fold must hold every dataset (use fewer folds)")
        order = np.random.default_rng(_dataset_seed(seed, entry.spec.name)).permutation(len(names))
        for index in order:
            dealt[turn % folds].append(names[int(index)])
            turn += 1
    return FoldSplit(tuple(tuple(names) for names in dealt), seed)
