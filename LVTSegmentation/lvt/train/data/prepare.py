"""Turn the config's dataset entries into cached training cases: the one way training loads a dataset.

Each case is read once (in parallel if asked) into the preprocessing cache. A bad case stops the run
naming it, or, with ``skip_bad_cases``, is left out and listed with its reason.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import multiprocessing
import threading
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lvt.image import Image
from lvt.progress import ProgressCallback, check_cancel, report
from lvt.train.data.cache import (
    CachedCase,
    cache_key,
    case_folder_name,
    is_cached,
    read_cached_case,
    to_training_grid,
    write_cached_case,
)
from lvt.train.data.discovery import CaseRef, discover_cases
from lvt.train.data.folds import split_folds
from lvt.train.data.loading import CaseError, load_case
from lvt.train.data.specs import spec_fingerprint
from lvt.train.data.synthetic_tumors import insert_synthetic_tumors

if TYPE_CHECKING:
    from lvt.train.config import DatasetEntry, TrainingConfig
    from lvt.train.distributed import DistributedRun

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _CaseJob:
    """Everything a worker process needs to cache one case and its synthetic-tumor variants."""

    ref: CaseRef
    folders: tuple[Path, ...]  # base case first, then one per variant
    spacing_mm: tuple[float, float, float]


def _variant_name(case_name: str, variant: int) -> str:
    return f"{case_name}+tumors{variant}"


def _seed(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def build_case(job: _CaseJob) -> str | None:
    """Cache one case and its variants. Returns None, or the problem when the case is bad.

    Variants are painted into the cached base case, so they never need the original files again.
    """
    base_folder, variant_folders = job.folders[0], job.folders[1:]
    if not is_cached(base_folder):
        try:
            loaded = load_case(job.ref)
        except CaseError as error:
            return error.case_problem
        hu, masks = to_training_grid(loaded.image, loaded.masks, job.spacing_mm)
        write_cached_case(base_folder, loaded.name, job.ref.dataset, hu, masks, loaded.annotated, _seed(loaded.name))
    base = read_cached_case(base_folder)
    for variant, folder in enumerate(variant_folders):
        if not is_cached(folder):
            _write_tumor_variant(base, _variant_name(base.name, variant), folder, job.spacing_mm)
    return None


def _write_tumor_variant(base: CachedCase, name: str, folder: Path, spacing_mm: tuple[float, float, float]) -> None:
    """A copy of a liver-labelled case with synthetic tumors painted into its liver (weights liver + tumor)."""
    masks = base.masks()
    painted, tumors = insert_synthetic_tumors(Image(np.asarray(base.image, dtype=np.float32), spacing_mm), masks[0],
                                              np.random.default_rng(_seed(name)))
    masks[2] = tumors
    annotated = (base.annotated[0], False, True)
    write_cached_case(folder, name, f"{base.dataset}+tumors", painted.array, masks, annotated, _seed(name))


def _jobs(entry: DatasetEntry, config: TrainingConfig) -> list[_CaseJob]:
    key = cache_key(spec_fingerprint(entry.spec), config.spacing_mm)
    root = config.resolved_cache_dir / f"{entry.spec.name}-{key}"
    jobs = []
    for ref in discover_cases(entry.spec):
        names = [ref.name] + [_variant_name(ref.name, v) for v in range(entry.synthetic_tumor_variants)]
        jobs.append(_CaseJob(ref, tuple(root / case_folder_name(n) for n in names), config.spacing_mm))
    return jobs


def _run_jobs(jobs: list[_CaseJob], workers: int, progress: ProgressCallback | None,
              cancel: threading.Event | None) -> dict[str, str]:
    """Build the missing cache entries; return {case name: problem} for bad cases."""
    todo = [job for job in jobs if not all(is_cached(f) for f in job.folders)]
    problems: dict[str, str] = {}
    if not todo:
        return problems
    report(progress, "preprocess", 0, len(todo), f"caching {len(todo)} case(s)")
    if workers <= 1:
        for index, job in enumerate(todo):
            check_cancel(cancel)
            if (problem := build_case(job)) is not None:
                problems[job.ref.name] = problem
            report(progress, "preprocess", index + 1, len(todo), job.ref.name)
        return problems
    context = multiprocessing.get_context("spawn")  # safe with CUDA and threads in the parent
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(build_case, job): job for job in todo}
        for index, future in enumerate(concurrent.futures.as_completed(futures)):
            if cancel is not None and cancel.is_set():
                pool.shutdown(cancel_futures=True)
                check_cancel(cancel)
            if (problem := future.result()) is not None:
                problems[futures[future].ref.name] = problem
            report(progress, "preprocess", index + 1, len(todo), futures[future].ref.name)
    return problems


def dataset_weights(entries: tuple[DatasetEntry, ...]) -> dict[str, float]:
    """Sampling weight per dataset name (synthetic-tumor copies share their dataset's weight)."""
    weights = {}
    for entry in entries:
        weights[entry.spec.name] = weights[f"{entry.spec.name}+tumors"] = entry.spec.weight
    return weights


def prepare_cases(entries: tuple[DatasetEntry, ...], config: TrainingConfig, *, skip_bad_cases: bool,
                  progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                  write: bool = True, ddp: DistributedRun | None = None,
                  only: Collection[str] | None = None) -> tuple[list[CachedCase], list[str]]:
    """Cached cases of all entries; bad cases raise :class:`CaseError`, or are skipped and listed.

    ``only`` keeps just these base cases ("<dataset>/<case>"), each with its synthetic-tumor variants.
    Under torchrun only the writing rank builds the cache; the others wait at a barrier.
    """
    jobs = [job for entry in entries for job in _jobs(entry, config) if only is None or job.ref.name in only]
    problems = _run_jobs(jobs, config.cache_workers, progress, cancel) if write else {}
    if ddp is not None:
        ddp.barrier()
    if problems and not skip_bad_cases:
        name, problem = next(iter(problems.items()))
        raise CaseError(name, f"{problem} (use --skip-bad-cases to leave bad cases out)")
    skipped = [f"{name}: {problem}" for name, problem in problems.items()]
    for line in skipped:
        logger.warning("skipped %s", line)
    cases = [read_cached_case(f) for job in jobs if job.ref.name not in problems for f in job.folders if is_cached(f)]
    return cases, skipped


@dataclass(frozen=True)
class RunCases:
    """A run's training and validation cases, the bad cases left out, its fold when cross-validating, and
    the unlabelled CTs (kind "images"), which only the consistency term draws from."""

    training: list[CachedCase]
    validation: list[CachedCase]
    skipped: list[str]
    cross_validation: dict | None = None
    unlabelled: list[CachedCase] = field(default_factory=list)


def prepare_run_cases(config: TrainingConfig, *, skip_bad_cases: bool, progress: ProgressCallback | None = None,
                      cancel: threading.Event | None = None, write: bool = True,
                      ddp: DistributedRun | None = None) -> RunCases:
    """The config's training and validation lists or, for one fold, the other folds and the held-out one.

    Held-out cases are validated as they are, without synthetic-tumor variants (those are training data).
    Unlabelled datasets are never split into folds: every run draws from all of them.

    Raises:
        InputError: a dataset with fewer cases than folds (:func:`lvt.train.data.folds.split_folds`).
    """
    def prepared(entries: tuple[DatasetEntry, ...], only: Collection[str] | None) -> tuple[list[CachedCase], list[str]]:
        return prepare_cases(entries, config, skip_bad_cases=skip_bad_cases, progress=progress, cancel=cancel,
                             write=write, ddp=ddp, only=only)

    unlabelled, skipped_unlabelled = prepared(config.unlabelled_datasets, None)
    labelled = config.labelled_datasets
    if config.fold is None or config.folds is None:
        training, skipped = prepared(labelled, None)
        return RunCases(training, prepared(config.validation, None)[0], skipped + skipped_unlabelled, None, unlabelled)
    split = split_folds(labelled, config.folds, config.seed, config.source)
    training, skipped = prepared(labelled, split.training(config.fold))
    held_out = tuple(replace(entry, synthetic_tumor_variants=0) for entry in labelled)
    validation, _ = prepared(held_out, split.validation(config.fold))
    return RunCases(training, validation, skipped + skipped_unlabelled, split.record(config.fold), unlabelled)
