"""``lvt measure``: measurements, surfaces and report from a segmentation made (or edited) elsewhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from lvt.cli.console import cancel_on_signals, make_progress
from lvt.cli.main import add_common_arguments, report_done

HELP = "measurements, surfaces and report from an existing segmentation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("segmentation", type=Path, help=".seg.nrrd (e.g. edited in Slicer) or a label map")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--ct", type=Path, default=None, help="the CT (for report views and a grid check)")
    parser.add_argument("--value-map", default=None,
                        help="label map values to LVT labels, e.g. '1=1,2=3' (1 liver, 2 vessel, 3 tumor)")
    parser.add_argument("--no-surfaces", action="store_true", help="skip 3D surfaces and the 3D view")
    parser.add_argument("--resection", type=Path, default=None, metavar="MASK",
                        help="planned resection region (label map, nonzero inside, or .seg.nrrd): report the "
                             "liver remnant outside it")
    parser.add_argument("--resection-segment", default=None, metavar="NAME",
                        help="the region's segment in a .seg.nrrd (any case; default 'Resection'); without "
                             "--resection it is read from SEGMENTATION itself")
    add_common_arguments(parser, model=False)


def run(args: argparse.Namespace) -> int:
    from lvt.segment.pipeline import measure_file, parse_value_map

    with cancel_on_signals() as cancel:
        measure_file(args.segmentation, args.output, ct_path=args.ct, value_map=parse_value_map(args.value_map),
                     overwrite=args.overwrite, write_surfaces=not args.no_surfaces,
                     progress=make_progress(args.progress), cancel=cancel, resection_path=args.resection,
                     resection_segment=args.resection_segment)
    return report_done(args, args.output)
