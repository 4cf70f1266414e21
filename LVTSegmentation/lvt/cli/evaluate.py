"""``lvt evaluate``: its options and exit codes; the scoring is :mod:`lvt.evaluate`.

The core is imported when the command runs, so building the ``lvt`` parser stays fast.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from lvt.cli.checks import all_existing, existing
from lvt.cli.main import EXIT_BAD_INPUT, report_failure
from lvt.errors import InputError

logger = logging.getLogger(__name__)

HELP = "Dice, IoU, NSD, HD95, lesion detection and F1 against ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``lvt evaluate`` options to a (sub)parser."""
    parser.add_argument("--pred", nargs="+", type=Path, metavar="PATH",
                        help="prediction label maps (0..3), `lvt segment` output folders, or folders of either")
    parser.add_argument("--truth", type=Path, metavar="PATH",
                        help="folder of reference label maps (0..3) with the same case names, or a JSON/YAML "
                             "spec {case: {liver: path|[paths], vessel: ..., tumor: ...}} of binary masks")
    parser.add_argument("-o", "--output", type=Path, metavar="OUTDIR",
                        help="folder for per_case.csv, summary.csv, summary.md (or comparison.csv/.md)")
    parser.add_argument("--tolerance-mm", nargs="+", default=[], metavar="CLASS=MM",
                        help="NSD tolerances, default liver=7 vessel=3 tumor=3")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A_CSV", "B_CSV"),
                        help="instead of evaluating: paired Wilcoxon test between two per_case.csv files")
    parser.add_argument("--runs", nargs="+", type=Path, metavar="EVAL",
                        help="instead of evaluating: mean ± sd over runs or folds of several evaluations "
                             "(output folders of lvt evaluate, or their per_case.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def parse_tolerances(items: Sequence[str]) -> tuple[float, float, float]:
    """``["liver=7", "tumor=2.5"]`` -> (7.0, 3.0, 2.5): defaults for classes not named.

    Raises:
        InputError: for an unknown class or a tolerance that is not a non-negative number.
    """
    from lvt.evaluate.scoring import DEFAULT_TOLERANCES_MM
    from lvt.labels import CLASS_KEYS

    tolerances = dict(zip(CLASS_KEYS, DEFAULT_TOLERANCES_MM, strict=True))
    for item in items:
        key, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if key not in tolerances or not math.isfinite(number) or number < 0:
            raise InputError(None, f"--tolerance-mm {item!r}: expected CLASS=MM with CLASS in {', '.join(CLASS_KEYS)}")
        tolerances[key] = number
    return tuple(tolerances[k] for k in CLASS_KEYS)  # type: ignore[return-value]


def _log_progress(event: object) -> None:
    logger.info("%s", getattr(event, "message", event))


def check(args: argparse.Namespace) -> None:
    """One way of running, with what it needs, and every path given existing; the tolerances last (numpy)."""
    if sum(bool(x) for x in (args.compare, args.runs, args.pred or args.truth)) > 1:
        raise InputError(None, "give one of --pred/--truth, --compare A.csv B.csv or --runs EVAL ...")
    if not (args.runs or args.compare) and (not args.pred or args.truth is None or args.output is None):
        raise InputError(None, "lvt evaluate needs --pred, --truth and -o (or --compare A.csv B.csv, or --runs)")
    for paths in (args.pred, args.compare, args.runs):
        all_existing(paths)
    existing(args.truth)
    parse_tolerances(args.tolerance_mm)


def run(args: argparse.Namespace) -> int:
    """Run ``lvt evaluate`` from parsed arguments; print the summary table.

    Returns:
        0 on success, 2 for bad input (one ``lvt: error:`` line naming file and problem on stderr), also
        when called without :func:`lvt.cli.main.run` (which ran :func:`check` already: a few ``stat`` calls).
    """
    try:
        check(args)
        return _evaluate(args)
    except InputError as error:
        return report_failure(args, str(error), EXIT_BAD_INPUT)


def _evaluate(args: argparse.Namespace) -> int:
    from lvt.evaluate.paired import compare_per_case_files
    from lvt.evaluate.run import evaluate_folder
    from lvt.evaluate.runs import summarize_run_folders

    if args.runs:
        sys.stdout.write(summarize_run_folders(args.runs, args.output, args.overwrite))
    elif args.compare is not None:
        a_csv, b_csv = args.compare
        sys.stdout.write(compare_per_case_files(a_csv, b_csv, args.output, args.overwrite))
    else:
        result = evaluate_folder(args.pred, args.truth, args.output, parse_tolerances(args.tolerance_mm),
                                 args.overwrite, _log_progress)
        sys.stdout.write(result.markdown)
    return 0
