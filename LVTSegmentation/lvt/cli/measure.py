"""``lvt measure``: measurements, surfaces and report from a segmentation made (or edited) elsewhere."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lvt.atomic import refuse_existing_output
from lvt.cli.checks import image_path
from lvt.cli.console import cancel_on_signals, make_progress
from lvt.cli.main import add_common_arguments, add_strict_argument, report_document
from lvt.errors import InputError

if TYPE_CHECKING:
    from lvt.segment.pipeline import ValueMap

HELP = "measurements, surfaces and report from an existing segmentation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("segmentation", type=Path, help=".seg.nrrd (e.g. edited in Slicer) or a label map")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--ct", type=Path, default=None, help="the CT (for report views and a grid check)")
    parser.add_argument("--value-map", default=None, metavar="MAP",
                        help="label map values to LVT labels (1 liver, 2 vessel, 3 tumor), e.g. '1=1,2=3' (0 stays "
                             "background); every other value in the file must be listed unless '*=0' makes the "
                             "others background, e.g. '5=1,*=0' for the liver of a TotalSegmentator map "
                             "(default: values 0..3 as they are)")
    parser.add_argument("--no-surfaces", action="store_true", help="skip 3D surfaces and the 3D view")
    parser.add_argument("--resection", type=Path, default=None, metavar="MASK",
                        help="planned resection region (label map, nonzero inside, or .seg.nrrd): report the "
                             "liver remnant outside it")
    parser.add_argument("--resection-segment", default=None, metavar="NAME",
                        help="the region's segment in a .seg.nrrd (any case; default 'Resection'); without "
                             "--resection it is read from SEGMENTATION itself")
    add_strict_argument(parser)
    add_common_arguments(parser, model=False)


def parse_value_map(text: str | None) -> ValueMap | None:
    """'1=1,2=3' -> {0: 0, 1: 1, 2: 3}; '5=1,*=0' -> {0: 0, 5: 1} and every other value background.

    0 stays background unless the map says otherwise; None stays None (identity on 0..3).

    ``*=0`` lets a map of many structures (TotalSegmentator's) be measured with one entry for the liver.
    """
    from lvt.labels import NUM_CLASSES
    from lvt.segment.pipeline import ValueMap

    if not text:
        return None
    usage = f"--value-map must look like '1=1,2=3' or '5=1,*=0' (every other value background), got {text!r}"
    try:
        pairs = [tuple(part.strip() for part in item.split("=")) for item in text.split(",")]
        others = [target for source, target in pairs if source == "*"]
        values = {int(source): int(target) for source, target in pairs if source != "*"}
    except ValueError as error:
        raise InputError(None, usage) from error
    if len(others) > 1 or any(target != "0" for target in others):
        raise InputError(None, f"{usage}; '*' may appear once, as '*=0'")
    if any(not 0 <= target <= NUM_CLASSES for target in values.values()):
        raise InputError(None, f"{usage}; the LVT labels are 0..{NUM_CLASSES}")
    return ValueMap({0: 0, **values}, others_background=bool(others))


def check(args: argparse.Namespace) -> None:
    """The input files and the output folder without the core; the value map last (it needs numpy)."""
    for path in (args.segmentation, args.ct, args.resection):
        image_path(path)
    refuse_existing_output(args.output, args.overwrite)
    parse_value_map(args.value_map)


def run(args: argparse.Namespace) -> int:
    from lvt.segment.pipeline import measure_file

    with cancel_on_signals() as cancel:
        document = measure_file(
            args.segmentation, args.output, ct_path=args.ct, value_map=parse_value_map(args.value_map),
            overwrite=args.overwrite, write_surfaces=not args.no_surfaces, progress=make_progress(args.progress),
            cancel=cancel, resection_path=args.resection, resection_segment=args.resection_segment)
    return report_document(args, document, args.output)
