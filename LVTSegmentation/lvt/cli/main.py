"""The ``lvt`` command: parse options into the core's config objects and call the core. No logic here.

Exit codes: 0 success, 1 runtime failure, 2 bad input (the message names the file), 130 cancelled.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lvt import __version__
from lvt.cli.console import cancel_on_signals, make_progress
from lvt.errors import CancelledError, InputError, LVTError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


def _add_common(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                        help="progress display: a bar on the terminal, JSON lines for programs, or none")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")
    if model:
        parser.add_argument("--model", type=Path, default=None,
                            help="model manifest (.json) or weights (.safetensors); default: the bundled model")
        parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N or mps")
        parser.add_argument("--tta", action="store_true", help="flip test-time augmentation (8x slower, smoother)")
        parser.add_argument("--min-tumor-ml", type=float, default=0.05,
                            help="tumors smaller than this (mL) are dropped and listed in the report")


def _segment_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("segment", help="segment liver, vessels and tumors in a CT")
    parser.add_argument("input", type=Path, help="CT: NIfTI, NRRD, MHA or a DICOM folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--series", default=None, help="DICOM SeriesInstanceUID when the folder holds several")
    parser.add_argument("--force", action="store_true", help="accept an image that does not look like CT in HU")
    parser.add_argument("--no-surfaces", action="store_true", help="skip 3D surfaces and the 3D view")
    _add_common(parser)
    parser.set_defaults(handler=_run_segment)


def _measure_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("measure", help="measurements, surfaces and report from an existing segmentation")
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
    _add_common(parser, model=False)
    parser.set_defaults(handler=_run_measure)


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="segment a synthetic CT phantom with the bundled model and score it")
    parser.add_argument("-o", "--output", type=Path, default=Path("lvt-demo"), help="output folder")
    parser.add_argument("--seed", type=int, default=7, help="phantom seed")
    _add_common(parser)
    parser.set_defaults(handler=_run_demo)


def _train_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a model from a YAML/JSON config (see docs/training.md)")
    add_train_arguments(parser)
    parser.set_defaults(handler=_run_train)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lvt train`` (shared with LVTTraining/train.py)."""
    parser.add_argument("config", type=Path, help="training config (YAML or JSON)")
    parser.add_argument("--output", type=Path, default=None, help="run folder (overrides the config)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (overrides the config)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--skip-bad-cases", action="store_true", help="leave unreadable/inconsistent cases out")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


# Commands whose options and handler live in their own module: (module, help). The module provides
# add_<command>_arguments(parser) and run_<command>(args) -> exit code.
_MODULE_COMMANDS = {
    "evaluate": ("lvt.evaluate.scoring", "Dice, NSD, HD95, lesion detection against ground truth"),
    "compare": ("lvt.followup.compare", "follow-up: align studies, match lesions, size change, RECIST 1.1"),
    "volumetry": ("lvt.followup.volumetry", "liver volume across the contrast phases of one day"),
}


def _module_parser(sub: argparse._SubParsersAction, command: str) -> None:
    module_name, help_text = _MODULE_COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = sub.add_parser(command, help=help_text)
    getattr(module, f"add_{command}_arguments")(parser)
    parser.set_defaults(handler=getattr(module, f"run_{command}"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvt", description="Liver, vessel and tumor segmentation of CT.")
    parser.add_argument("--version", action="version", version=f"lvt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_segment_parser, _measure_parser, _demo_parser, _train_parser):
        add(sub)
    for command in _MODULE_COMMANDS:
        _module_parser(sub, command)
    return parser


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _run_segment(args: argparse.Namespace) -> int:
    from lvt.segment.pipeline import SegmentOptions, segment_file

    options = SegmentOptions.from_args(args)
    with cancel_on_signals() as cancel:
        segment_file(args.input, args.output, options, progress=make_progress(args.progress), cancel=cancel)
    return _done(args, args.output)


def _run_measure(args: argparse.Namespace) -> int:
    from lvt.segment.pipeline import measure_file, parse_value_map

    with cancel_on_signals() as cancel:
        measure_file(args.segmentation, args.output, ct_path=args.ct, value_map=parse_value_map(args.value_map),
                     overwrite=args.overwrite, write_surfaces=not args.no_surfaces,
                     progress=make_progress(args.progress), cancel=cancel, resection_path=args.resection,
                     resection_segment=args.resection_segment)
    return _done(args, args.output)


def _run_demo(args: argparse.Namespace) -> int:
    from lvt.evaluate.demo import format_demo_summary, run_demo
    from lvt.segment.pipeline import SegmentOptions

    with cancel_on_signals() as cancel:
        summary = run_demo(args.output, args.seed, SegmentOptions.from_args(args),
                           progress=make_progress(args.progress), cancel=cancel)
    if args.progress == "json":
        print(json.dumps({"event": "summary", **summary}))
    else:
        print(format_demo_summary(summary))
    return _done(args, args.output)


def _run_train(args: argparse.Namespace) -> int:
    from lvt.train.config import load_training_config
    from lvt.train.loop import run_training

    config = load_training_config(args.config, output_dir=args.output, steps=args.steps)
    with cancel_on_signals() as cancel:
        result = run_training(config, device=args.device, resume=args.resume, skip_bad_cases=args.skip_bad_cases,
                              progress=make_progress(args.progress), cancel=cancel)
    for line in result.skipped_cases:
        print(f"skipped {line}", file=sys.stderr)
    message = f"trained {result.steps} steps in {result.seconds:.0f} s: {result.final_model}"
    print(json.dumps({"event": "done", "output": str(result.final_model)}) if args.progress == "json" else message)
    return EXIT_OK


def _done(args: argparse.Namespace, output: Path) -> int:
    if args.progress == "json":
        print(json.dumps({"event": "done", "output": str(output)}), flush=True)
    elif args.progress == "bar":
        print(f"wrote {output}", file=sys.stderr)
    return EXIT_OK


def _fail(args: argparse.Namespace | None, message: str, code: int) -> int:
    if args is not None and getattr(args, "progress", None) == "json":
        print(json.dumps({"event": "error", "message": message}), flush=True)
    print(f"lvt: error: {message}", file=sys.stderr)
    return code


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code (used by tests and the Slicer process)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    _set_threads(getattr(args, "threads", None))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except InputError as error:
        return _fail(args, str(error), EXIT_BAD_INPUT)
    except CancelledError:
        return _fail(args, "cancelled; nothing was written", EXIT_CANCELLED)
    except LVTError as error:
        return _fail(args, str(error), EXIT_FAILURE)


def run_training_cli(argv: Sequence[str]) -> int:
    """``lvt train ARGV`` (the entry of LVTTraining/train.py and the Slicer LVTTraining module)."""
    return run(["train", *argv])


def main() -> None:
    sys.exit(run())
