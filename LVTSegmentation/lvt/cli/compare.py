"""``lvt compare``: its options and exit codes; the work is :func:`lvt.followup.run.compare_files`.

The core is imported when the command runs (only the registration defaults are read for the options).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lvt.atomic import refuse_existing_output
from lvt.cli.checks import all_existing
from lvt.cli.console import cancel_on_signals, make_progress
from lvt.cli.main import EXIT_FAILURE, add_common_arguments, report_done, report_failure
from lvt.errors import InputError

HELP = "follow-up: align studies, match lesions, size change, RECIST 1.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lvt compare`` (the segmentation options are those of ``lvt segment``)."""
    from lvt.followup.register import RegistrationConfig

    parser.add_argument("inputs", nargs="+", type=Path, metavar="STUDY",
                        help="two or more CTs or `lvt segment` output folders of one patient, oldest first")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME",
                        help="one name per study for tables and the plot (e.g. dates)")
    defaults = RegistrationConfig()
    parser.add_argument("--max-residual-mm", type=float, default=defaults.max_residual_mm,
                        help="largest mean liver surface distance after alignment before matching is refused")
    parser.add_argument("--min-liver-dice", type=float, default=defaults.min_liver_dice,
                        help="least liver Dice after alignment before matching is refused")
    parser.add_argument("--min-ct-correlation", type=float, default=defaults.min_ct_correlation,
                        help="least correlation of the CT inside the aligned livers (when both studies have CT)")
    add_common_arguments(parser)


def check(args: argparse.Namespace) -> None:
    all_existing(args.inputs)
    refuse_existing_output(args.output, args.overwrite)


def run(args: argparse.Namespace) -> int:
    """Run ``lvt compare`` from parsed arguments.

    Returns:
        0 when every study was matched; 1 when a registration was refused (compare.json and
        compare.html are written all the same and say why).
    """
    from lvt.followup.compare import CompareConfig
    from lvt.followup.register import RegistrationConfig
    from lvt.followup.run import compare_files
    from lvt.segment.pipeline import SegmentOptions

    try:
        registration = RegistrationConfig(max_residual_mm=args.max_residual_mm, min_liver_dice=args.min_liver_dice,
                                          min_ct_correlation=args.min_ct_correlation)
    except ValueError as error:
        raise InputError(None, f"registration thresholds: {error}") from error
    options = SegmentOptions.from_args(args)
    with cancel_on_signals() as cancel:
        document = compare_files(args.inputs, args.output, options, CompareConfig(registration=registration),
                                 names=args.names, overwrite=args.overwrite, progress=make_progress(args.progress),
                                 cancel=cancel)
    refused = [c for c in document["comparisons"] if c["status"] == "refused"]
    if refused:
        names = [document["studies"][c["to_study"]]["name"] for c in refused]
        reasons = "; ".join(r for c in refused for r in c["refusal_reasons"])
        message = (f"{args.output}: registration refused for {', '.join(names)}, lesions not matched ({reasons}). "
                   "compare.json and compare.html were written with the per-study measurements.")
        return report_failure(args, message, EXIT_FAILURE)
    return report_done(args, args.output)
