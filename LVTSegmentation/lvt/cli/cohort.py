"""``lvt segment`` over a cohort: its options, a bar over the cases with one line per case, the exit code.

Exit codes: 0 every case done or skipped, 1 some case failed (the message names them; the manifest
has all), 2 bad arguments or inputs (nothing run), 130 cancelled (finished cases stay).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING

from lvt.cli.console import cancel_on_signals
from lvt.cli.main import EXIT_CANCELLED, EXIT_FAILURE, report_done, report_failure
from lvt.errors import InputError

if TYPE_CHECKING:
    from lvt.segment.cohort import CaseCallback, CohortOutcome
    from lvt.segment.cohort_manifest import CaseResult

SHOWN_FAILURES = 3


def add_cohort_arguments(parser: argparse.ArgumentParser) -> None:
    from lvt.segment.compiled import BREAK_EVEN_CASES, COMPILE_CHOICES

    parser.add_argument("--workers", type=int, default=1,
                        help="cohort: cases segmented at once, each worker a process that loads the model once "
                             "(torch threads per worker: the cores shared out, or --threads)")
    parser.add_argument("--compile", choices=COMPILE_CHOICES, default="auto",
                        help="torch.compile the network once per process: auto compiles only in a cohort whose "
                             f"processes segment at least {BREAK_EVEN_CASES} cases each and where a compiler works "
                             "(one CT runs uncompiled unless 'on'); a failed compile runs uncompiled, with a warning "
                             "(see docs/cohorts.md)")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="cohort: segment only shard K of N (K from 0; every N-th case of the sorted list), "
                             "for Slurm arrays and the like (see docs/cohorts.md)")


def is_cohort_run(args: argparse.Namespace) -> bool:
    """Whether the input is a cohort; the cohort options are refused for one CT."""
    from lvt.segment.cases import is_cohort

    if args.workers < 1:
        raise InputError(None, f"--workers {args.workers}: must be at least 1")
    cohort = is_cohort(args.input, args.series, args.output)
    if not cohort and (args.shard is not None or args.workers != 1):
        raise InputError(args.input, "--shard and --workers are for a cohort (a folder of CTs, a glob or a CSV), "
                                     "not for one CT")
    return cohort


def check_cohort_arguments(args: argparse.Namespace) -> None:
    """The options that a cohort refuses, found without the core."""
    from lvt.segment.cases import parse_shard

    if args.series is not None:
        raise InputError(args.input, "--series chooses among the series of one DICOM folder, not of a cohort")
    if args.shard is not None:
        parse_shard(args.shard)


def run_cohort_command(args: argparse.Namespace) -> int:
    """Find the cases (of this shard; a cohort without any is refused before the core loads), segment those not
    complete yet, and sum up."""
    from lvt.segment.cases import find_cohort, parse_shard, select_shard

    shard = parse_shard(args.shard) if args.shard is not None else None
    cases = select_shard(find_cohort(args.input, args.output), shard)
    from lvt.segment.cohort import CohortSettings, run_cohort
    from lvt.segment.pipeline import SegmentOptions

    settings = CohortSettings(args.output, SegmentOptions.from_args(args), workers=args.workers,
                              threads=args.threads, shard=shard, strict=bool(args.strict), compile=args.compile)
    with cancel_on_signals() as cancel, _case_display(args.progress, len(cases)) as on_case:
        outcome = run_cohort(cases, settings, on_case=on_case, cancel=cancel)
    return _finish(args, outcome)


@contextlib.contextmanager
def _case_display(style: str, total: int) -> Iterator[CaseCallback | None]:
    """A tqdm bar over the cases with one line per case (stderr), JSON lines (stdout), or nothing."""
    if style == "json":
        yield lambda result, done, count: print(json.dumps({"event": "case", **asdict(result), "done": done,
                                                            "total": count}), flush=True)
    elif style == "bar":
        from tqdm import tqdm

        terminal = sys.stderr.isatty()
        with tqdm(total=total, unit="case", desc="cases", file=sys.stderr, dynamic_ncols=terminal,
                  mininterval=0.1 if terminal else 30.0) as bar:
            def on_case(result: CaseResult, done: int, count: int) -> None:
                bar.write(case_line(result), file=sys.stderr)
                bar.update(1)

            yield on_case
    else:
        yield None


def case_line(result: CaseResult) -> str:
    """``id: done in 12.3 s (2 warnings)`` or ``id: failed: why``."""
    line = f"{result.case_id}: {result.status}"
    if result.seconds is not None:
        line += f" in {result.seconds:.1f} s"
    if result.warnings:
        line += f" ({len(result.warnings)} warning{'s' if len(result.warnings) > 1 else ''})"
    return line + (f": {result.error}" if result.error else "")


def _finish(args: argparse.Namespace, outcome: CohortOutcome) -> int:
    """Exit 130 when cancelled, 1 naming the failed cases, else a summary and 0."""
    total, failed = len(outcome.results), outcome.with_status("failed")
    ended = len(outcome.with_status("done")) + len(outcome.with_status("skipped"))
    if outcome.cancelled:
        return report_failure(args, f"cancelled: {ended} of {total} cases complete; the others are pending in "
                                    f"{outcome.manifest}", EXIT_CANCELLED)
    if failed:
        shown = "; ".join(f"{result.case_id}: {result.error}" for result in failed[:SHOWN_FAILURES])
        more = f"; and {len(failed) - SHOWN_FAILURES} more" if len(failed) > SHOWN_FAILURES else ""
        return report_failure(args, f"{len(failed)} of {total} cases failed ({shown}{more}); see {outcome.manifest}",
                              EXIT_FAILURE)
    summary = {status: len(outcome.with_status(status)) for status in ("done", "skipped")}
    if args.progress == "json":
        print(json.dumps({"event": "cohort", "manifest": str(outcome.manifest), **summary}), flush=True)
    elif args.progress == "bar":
        print(f"{total} cases: {summary['done']} done, {summary['skipped']} skipped (already complete); "
              f"manifest {outcome.manifest}{_all_shards(args)}", file=sys.stderr)
    return report_done(args, args.output)


def _all_shards(args: argparse.Namespace) -> str:
    """For a shard, how far all the shards' manifests in the output folder have got."""
    from lvt.segment.cohort_manifest import read_cohort_status

    if args.shard is None:
        return ""
    entries = read_cohort_status(args.output).values()
    complete = sum(entry["status"] in ("done", "skipped") for entry in entries)
    return f"; over all shards so far, {complete} of {len(entries)} cases complete"
