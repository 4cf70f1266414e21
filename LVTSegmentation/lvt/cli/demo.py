"""``lvt demo``: segment a synthetic phantom with the bundled model and score it (a check that needs no data)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lvt.atomic import refuse_existing_output
from lvt.cli.console import cancel_on_signals, make_progress
from lvt.cli.main import add_common_arguments, report_done

HELP = "segment a synthetic CT phantom with the bundled model and score it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("lvt-demo"), help="output folder")
    parser.add_argument("--seed", type=int, default=7, help="phantom seed")
    add_common_arguments(parser)


def check(args: argparse.Namespace) -> None:
    refuse_existing_output(args.output, args.overwrite)


def run(args: argparse.Namespace) -> int:
    from lvt.evaluate.demo import format_demo_summary, run_demo
    from lvt.segment.pipeline import SegmentOptions

    with cancel_on_signals() as cancel:
        summary = run_demo(args.output, args.seed, SegmentOptions.from_args(args),
                           progress=make_progress(args.progress), cancel=cancel)
    if args.progress == "json":
        print(json.dumps({"event": "summary", **summary}))
    else:
        print(format_demo_summary(summary))
    return report_done(args, args.output)
