"""``lvt segment``: a CT in, an output folder with segmentation, measurements, surfaces and report out."""

from __future__ import annotations

import argparse
from pathlib import Path

from lvt.atomic import refuse_existing_output
from lvt.cli.checks import image_path
from lvt.cli.cohort import add_cohort_arguments, check_cohort_arguments, is_cohort_run, run_cohort_command
from lvt.cli.console import cancel_on_signals, make_progress
from lvt.cli.main import add_common_arguments, add_strict_argument, report_document

HELP = "segment liver, vessels and tumors in a CT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="CT: NIfTI, NRRD, MHA or a DICOM folder; or a cohort: a folder of "
                                                 "CTs, a quoted glob or a CSV (see docs/cohorts.md)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output folder (created); for a cohort, the folder that gets one folder per case")
    parser.add_argument("--series", default=None, help="DICOM SeriesInstanceUID when the folder holds several")
    parser.add_argument("--force", action="store_true", help="accept an image that does not look like CT in HU")
    parser.add_argument("--no-surfaces", action="store_true", help="skip 3D surfaces and the 3D view")
    parser.add_argument("--fill-nonfinite", action="store_true",
                        help="replace NaN/infinite voxels by air and say so in the report (default: refuse the CT)")
    parser.add_argument("--refine-tumors", action="store_true",
                        help="refine each tumor's boundary on the CT (morphological Chan-Vese inside the liver; "
                             "off by default, see lvt/segment/refine.py)")
    parser.add_argument("--full-window", action="store_true",
                        help="run the sliding window over the whole body (default: over the liver box that a "
                             "first pass at twice the model spacing finds; see lvt/segment/localize.py)")
    dicom = parser.add_mutually_exclusive_group()
    dicom.add_argument("--no-dicom", action="store_true", help="for a DICOM series, skip segmentation.dcm (DICOM SEG)")
    dicom.add_argument("--dicom-sr", action="store_true",
                       help="for a DICOM series, also write measurements_sr.dcm (DICOM SR, TID 1500)")
    add_strict_argument(parser)
    add_common_arguments(parser)
    add_cohort_arguments(parser)


def check(args: argparse.Namespace) -> None:
    """What is wrong with the arguments, found without the core: for one CT, its path and the output folder."""
    if is_cohort_run(args):
        check_cohort_arguments(args)
    else:
        image_path(args.input)
        refuse_existing_output(args.output, args.overwrite)


def run(args: argparse.Namespace) -> int:
    if is_cohort_run(args):
        return run_cohort_command(args)
    from lvt.segment.pipeline import SegmentOptions, segment_file

    options = SegmentOptions.from_args(args)
    with cancel_on_signals() as cancel:
        document = segment_file(args.input, args.output, options, progress=make_progress(args.progress),
                                cancel=cancel)
    return report_document(args, document, args.output)
