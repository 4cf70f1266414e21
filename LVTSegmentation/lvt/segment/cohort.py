"""Segment a cohort: every case into its own output folder, resumable, in N processes, one shard of many.

A case is complete when its folder holds every file its run wrote and ``lvt-case.json``, the marker
written (atomically) last, which lists those files and names the input; a complete case is skipped,
anything else is redone (``--overwrite`` redoes all). A failed case does not stop the others. The
manifest (:mod:`lvt.segment.cohort_manifest`) is rewritten after every case. Each process loads the
model once, before its first case that needs it, and compiles it when it will segment enough cases
for that to pay (:mod:`lvt.segment.compiled`). No scheduler here: ``--shard K/N`` lets any
scheduler (Slurm arrays, Kubernetes indexed jobs, GNU parallel) spread a cohort over machines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvt.atomic import lock_beside, remove_leftovers, write_text_atomically
from lvt.errors import CancelledError, InputError, LVTError, ModelFileError
from lvt.segment.cases import CohortCase, Shard
from lvt.segment.cohort_manifest import CaseResult, ManifestWriter, manifest_path, now_text, one_line
from lvt.segment.compiled import CompileChoice, compile_pays, toolchain_available
from lvt.segment.pipeline import SegmentOptions, load_predictor, segment_file

if TYPE_CHECKING:
    from lvt.segment.predict import Predictor

logger = logging.getLogger(__name__)

MARKER_NAME = "lvt-case.json"
REPORT_NAME = "report.json"
CaseCallback = Callable[[CaseResult, int, int], None]  # (result, cases finished, cases in this run)
Loaded = tuple["Predictor", list[str]]


@dataclass(frozen=True)
class CohortSettings:
    """How a cohort runs: where to, with which options, in how many processes, which shard."""

    output_root: Path
    options: SegmentOptions
    workers: int = 1
    threads: int | None = None  # torch threads per process; None: the cores shared out among the workers
    shard: Shard | None = None
    strict: bool = False  # a report in doubt (see lvt.measure.reliability) fails its case
    compile: CompileChoice = "auto"  # torch.compile per process: auto when it pays (lvt.segment.compiled)


@dataclass(frozen=True)
class CohortOutcome:
    """Every case's result, the manifest written, and whether the run was cancelled before its end."""

    results: list[CaseResult]
    manifest: Path
    cancelled: bool

    def with_status(self, status: str) -> list[CaseResult]:
        return [result for result in self.results if result.status == status]


def run_cohort(cases: list[CohortCase], settings: CohortSettings, *, on_case: CaseCallback | None = None,
               cancel: threading.Event | None = None) -> CohortOutcome:
    """Segment the cases not complete yet, each into its own folder, recording each in the manifest.

    Raises:
        InputError: another run holds this cohort's (shard's) manifest, or the output root cannot be made.
        ModelFileError: the model cannot be loaded (the run stops; the cases not done stay pending).
    """
    root = Path(settings.output_root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(root, f"cannot create the output folder ({error.strerror or error})") from error
    path = manifest_path(root, settings.shard)
    with _cohort_lock(path, settings.shard):
        writer = ManifestWriter(path, cases, settings.shard, _options_summary(settings))
        todo = []
        skip = _finisher(writer, len(cases), on_case, write=False)
        for case in cases:
            if not settings.options.overwrite and is_complete(case):
                skip(_skipped(case, settings.strict))
            else:
                todo.append(case)
        writer.write()
        finish = _finisher(writer, len(cases), on_case, already=len(cases) - len(todo))
        parallel = settings.workers > 1 and len(todo) > 1
        cancelled = (_run_parallel if parallel else _run_serial)(todo, settings, finish, cancel)
        return CohortOutcome(writer.results(), path, cancelled)


@contextlib.contextmanager
def _cohort_lock(path: Path, shard: Shard | None) -> Iterator[None]:
    """Hold the manifest's lock, so that the same cohort (shard) is not run twice into one folder at once."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lock_beside(path))
        except InputError as error:
            which = f"shard {shard}" if shard is not None else "this cohort"
            raise InputError(path.parent, f"another lvt run is segmenting {which} into this folder now") from error
        yield


def _finisher(writer: ManifestWriter, total: int, on_case: CaseCallback | None, *, already: int = 0,
              write: bool = True) -> Callable[[CaseResult], None]:
    """Record a result in the manifest (rewritten now if ``write``) and tell ``on_case`` of each finished case."""
    finished = already

    def finish(result: CaseResult) -> None:
        nonlocal finished
        writer.record(result, write=write)
        if result.status != "pending":
            finished += 1
            if on_case is not None:
                on_case(result, finished, total)

    return finish


def is_complete(case: CohortCase) -> bool:
    """Whether the case's folder holds the marker of this very input and every file the marker lists."""
    try:
        marker = json.loads((case.output / MARKER_NAME).read_text(encoding="utf-8"))
        files = marker["files"]
        same_input = marker["input"] == str(Path(case.image).resolve())
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return same_input and isinstance(files, list) and REPORT_NAME in files and all(
        isinstance(name, str) and (case.output / name).is_file() for name in files)


def segment_case(case: CohortCase, options: SegmentOptions, loaded: Loaded, *, strict: bool = False,
                 cancel: threading.Event | None = None) -> CaseResult:
    """Segment one case into its folder and write its marker; any failure is the case's, never the run's.

    A model that cannot load is everybody's problem: its :class:`ModelFileError` is raised.
    """
    started = time.perf_counter()
    try:
        case_options = _options_for(case, options)
        _clear_leftovers(case.output)
        document = segment_file(case.image, case.output, case_options, cancel=cancel, loaded=loaded)
        seconds = round(time.perf_counter() - started, 2)
        _write_marker(case, seconds)
    except CancelledError:
        return CaseResult.of(case, "pending", error="cancelled while running; nothing of it was kept")
    except ModelFileError:
        raise
    except Exception as error:  # one bad CT (or a bug it triggers) must not stop a cohort
        logger.debug("case %s failed", case.case_id, exc_info=True)
        text = str(error) if isinstance(error, LVTError) else f"{type(error).__name__}: {error}"
        return CaseResult.of(case, "failed", seconds=round(time.perf_counter() - started, 2), error=one_line(text))
    return _judged(case, document, strict, seconds)


def _judged(case: CohortCase, document: dict, strict: bool, seconds: float | None,
            status: str = "done") -> CaseResult:
    """The case's result; with ``strict``, a report in doubt fails it (its folder stays, for review)."""
    from lvt.measure.reliability import reliability_problems

    warnings = [one_line(str(warning)) for warning in document.get("warnings", [])]
    problems = reliability_problems(document) if strict else []
    if problems:
        return CaseResult.of(case, "failed", seconds=seconds, error=one_line(f"--strict: {problems[0]}"),
                             warnings=warnings)
    return CaseResult.of(case, status, seconds=seconds, warnings=warnings)


def _skipped(case: CohortCase, strict: bool) -> CaseResult:
    """A complete case, not redone; under ``strict`` its report is judged again."""
    if not strict:
        return CaseResult.of(case, "skipped")
    try:
        document = json.loads((case.output / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return CaseResult.of(case, "failed", error=one_line(f"{case.output / REPORT_NAME}: unreadable ({error})"))
    return _judged(case, document, strict, None, status="skipped")


def _options_for(case: CohortCase, options: SegmentOptions) -> SegmentOptions:
    """Redo an incomplete lvt output in place; refuse to replace a folder that holds something else."""
    folder = case.output
    if options.overwrite or not folder.exists():
        return options
    if folder.is_dir() and (not any(folder.iterdir()) or (folder / MARKER_NAME).is_file()
                            or (folder / REPORT_NAME).is_file()):
        return replace(options, overwrite=True)
    raise InputError(folder, "exists and is not an lvt output folder; move it away or use --overwrite")


def _clear_leftovers(folder: Path) -> None:
    """Remove what a killed run of this case left beside its folder (under the folder's lock)."""
    if folder.parent.is_dir():
        with lock_beside(folder):
            for leftover in remove_leftovers(folder):
                logger.info("removed %s, left by a run that was killed", leftover)


def _write_marker(case: CohortCase, seconds: float) -> None:
    """The completion marker, last and atomically: the input and every file the run wrote."""
    files = sorted(path.relative_to(case.output).as_posix() for path in case.output.rglob("*") if path.is_file())
    marker = {"format": "lvt-case", "case_id": case.case_id, "input": str(Path(case.image).resolve()),
              "files": files, "seconds": seconds, "finished_at": now_text()}
    write_text_atomically(case.output / MARKER_NAME, json.dumps(marker, indent=2) + "\n")


def _options_summary(settings: CohortSettings) -> dict:
    options = settings.options
    return {"model": str(options.model_path) if options.model_path else "bundled", "device": options.device,
            "tta": options.use_tta, "overwrite": options.overwrite, "compile": settings.compile}


def load_for_process(settings: CohortSettings, cases: int) -> Loaded:
    """The model for a process that will segment ``cases`` cases, compiled as ``settings.compile`` decides."""
    from lvt.segment.device import resolve_device

    use_compile = settings.compile == "on"
    if settings.compile == "auto":
        use_compile = compile_pays(cases, toolchain_available(resolve_device(settings.options.device)[0]))
    logger.info("%s cases in this process: the network runs %s", cases, "compiled" if use_compile else "uncompiled")
    return load_predictor(replace(settings.options, use_compile=use_compile))


# ------------------------------------------------------------------------------------------- one process


def _run_serial(todo: list[CohortCase], settings: CohortSettings, finish: Callable[[CaseResult], None],
                cancel: threading.Event | None) -> bool:
    """The cases one after the other in this process (the model loaded at the first); True if cancelled."""
    loaded: Loaded | None = None
    for case in todo:
        if cancel is not None and cancel.is_set():
            return True
        loaded = loaded or load_for_process(settings, len(todo))
        result = segment_case(case, settings.options, loaded, strict=settings.strict, cancel=cancel)
        finish(result)
        if result.status == "pending":
            return True
    return False


# ------------------------------------------------------------------------------------------ N processes

_WORKER: dict[str, Any] = {}  # a worker process's settings, stop event and (once loaded) model


def _run_parallel(todo: list[CohortCase], settings: CohortSettings, finish: Callable[[CaseResult], None],
                  cancel: threading.Event | None) -> bool:
    """The cases over ``workers`` spawned processes, results in the order they end; True if cancelled.

    Workers ignore SIGINT and SIGTERM: this process hears them and stops the workers through one
    shared event, so each ends its case cleanly.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
    stop = context.Event()
    workers = min(settings.workers, len(todo))
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(settings, workers, len(todo) // workers, stop)) as pool:
        futures = {pool.submit(_worker_case, case): case for case in todo}
        try:
            return _collect(futures, finish, cancel, stop)
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise


def _collect(futures: dict[Future, CohortCase], finish: Callable[[CaseResult], None],
             cancel: threading.Event | None, stop: Any) -> bool:
    """Finish each case as its future ends; on cancel, stop the workers and drop the cases not started."""
    pending: Iterable[Future] = set(futures)
    cancelled = False
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        for future in done:
            finish(_future_result(future, futures[future]))
        if cancel is not None and cancel.is_set() and not cancelled:
            cancelled = True
            stop.set()
            for future in pending:
                future.cancel()
    return cancelled


def _future_result(future: Future, case: CohortCase) -> CaseResult:
    if future.cancelled():
        return CaseResult.of(case, "pending")
    try:
        return future.result()
    except BrokenProcessPool:
        return CaseResult.of(case, "failed", error="its worker process died (killed, or out of memory?)")


def _start_worker(settings: CohortSettings, workers: int, cases: int, stop: Any) -> None:
    """A worker's settings; ``cases``: the fewest cases it will segment (its share of the cohort)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _WORKER.update(settings=settings, workers=workers, cases=cases, stop=stop)


def _worker_case(case: CohortCase) -> CaseResult:
    """One case in a worker process; the first loads the model, with this worker's share of the cores."""
    settings: CohortSettings = _WORKER["settings"]
    if "loaded" not in _WORKER:
        import torch

        from lvt.segment.device import available_cpu_cores

        torch.set_num_threads(settings.threads or max(1, available_cpu_cores() // _WORKER["workers"]))
        _WORKER["loaded"] = load_for_process(settings, _WORKER["cases"])
    return segment_case(case, settings.options, _WORKER["loaded"], strict=settings.strict, cancel=_WORKER["stop"])
