"""``lvt volumetry``: its options and exit codes; the work is :func:`lvt.followup.volumetry.volumetry_files`.

The core is imported when the command runs (only the default threshold is read for the options).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lvt.atomic import refuse_existing_output
from lvt.cli.checks import all_existing
from lvt.cli.console import cancel_on_signals, make_progress
from lvt.cli.main import add_common_arguments, report_done

HELP = "liver volume across the contrast phases of one day"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lvt volumetry`` (the segmentation options are those of ``lvt segment``)."""
    from lvt.followup.volumetry import DEFAULT_THRESHOLD_PERCENT

    parser.add_argument("inputs", nargs="+", type=Path, metavar="PHASE",
                        help="two or more CTs or `lvt segment` output folders: the phases of one day")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME",
                        help="one name per phase, e.g. arterial portal-venous late")
    parser.add_argument("--threshold-percent", type=float, default=DEFAULT_THRESHOLD_PERCENT,
                        help="flag a phase whose liver volume deviates more than this from the mean")
    add_common_arguments(parser)


def check(args: argparse.Namespace) -> None:
    all_existing(args.inputs)
    refuse_existing_output(args.output, args.overwrite)


def run(args: argparse.Namespace) -> int:
    """Run ``lvt volumetry`` from parsed arguments; flagged phases are reported, the exit code stays 0."""
    from lvt.followup.volumetry import volumetry_files
    from lvt.segment.pipeline import SegmentOptions

    options = SegmentOptions.from_args(args)
    with cancel_on_signals() as cancel:
        document = volumetry_files(args.inputs, args.output, options, names=args.names,
                                   threshold_percent=args.threshold_percent, overwrite=args.overwrite,
                                   progress=make_progress(args.progress), cancel=cancel)
    if document["flagged"] and args.progress != "json":
        print(f"flagged (deviation above {document['threshold_percent']:g} %): {', '.join(document['flagged'])}",
              file=sys.stderr)
    return report_done(args, args.output)
