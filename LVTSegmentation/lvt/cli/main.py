"""The ``lvt`` command: the command table, the options every command shares, exit codes and error messages.

Each command lives in its own small module (``lvt.cli.<command>``) with ``HELP``, ``add_arguments(parser)``,
``run(args) -> exit code`` and, where it has any, ``check(args)``: the checks of its arguments and input
paths that need no numpy or torch (:mod:`lvt.cli.checks`), run before the core is imported. This module
imports the commands by name, and they import the core only when they run, so ``lvt --help`` and most
bad-input errors answer at once.

Exit codes: 0 success, 1 runtime failure, 2 bad input (the message names the file; a broken or foreign
model file is bad input too), 130 cancelled.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from lvt import __version__
from lvt.cli.checks import common_options
from lvt.cli.console import close_progress_bars
from lvt.errors import CancelledError, InputError, LVTError, ModelFileError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130

# Command name -> module, in the order `lvt --help` lists them.
COMMANDS = {
    "segment": "lvt.cli.segment",
    "measure": "lvt.cli.measure",
    "demo": "lvt.cli.demo",
    "train": "lvt.cli.train",
    "evaluate": "lvt.cli.evaluate",
    "compare": "lvt.cli.compare",
    "volumetry": "lvt.cli.volumetry",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in its help, except where there is nothing to show (flags, unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    """``--progress`` and ``--threads``: what every long-running command takes."""
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                        help="progress display: a bar on the terminal, JSON lines for programs, or none")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")


def add_common_arguments(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    """The options of the commands that write an output folder, and with ``model`` those that run the network."""
    add_progress_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    if model:
        parser.add_argument("--model", type=Path, default=None,
                            help="model manifest (.json) or weights (.safetensors); default: the bundled model")
        parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N or mps")
        parser.add_argument("--tta", action="store_true", help="flip test-time augmentation (8x slower, smoother)")
        parser.add_argument("--min-tumor-ml", type=float, default=0.05,
                            help="tumors smaller than this (mL) are dropped and listed in the report")


def build_parser(with_options: Collection[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The ``lvt`` parser: every command with its help line, the commands in ``with_options`` with their options.

    Why the choice: a command's options may read their defaults from the core, so ``lvt --help`` and
    ``lvt segment ...`` load only what they show or run.
    """
    parser = argparse.ArgumentParser(prog="lvt", description="Liver, vessel and tumor segmentation of CT.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"lvt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(command, help=module.HELP, description=module.HELP,
                                        formatter_class=HelpFormatter)
        if command in with_options:
            module.add_arguments(command_parser)
        command_parser.set_defaults(handler=module.run, check=getattr(module, "check", None))
    return parser


def _requested_command(argv: Sequence[str]) -> list[str]:
    """The command named on the line (the first word that is no option: ``lvt``'s own options take no value)."""
    return [word for word in argv if not word.startswith("-")][:1]


def report_done(args: argparse.Namespace, output: Path) -> int:
    """Announce the finished output folder (a JSON ``done`` line for programs) and return success."""
    if args.progress == "json":
        print(json.dumps({"event": "done", "output": str(output)}), flush=True)
    elif args.progress == "bar":
        print(f"wrote {output}", file=sys.stderr)
    return EXIT_OK


def add_strict_argument(parser: argparse.ArgumentParser) -> None:
    """``--strict``: the report's doubts (:func:`lvt.measure.reliability.reliability_problems`) become exit 2."""
    from lvt.measure.reliability import MIN_LIVER_ML

    parser.add_argument("--strict", action="store_true",
                        help=f"exit 2 when the report finds no liver, a liver under {MIN_LIVER_ML:.0f} mL or a liver "
                             "cut by the scan (the output folder is still written, for review)")


def report_document(args: argparse.Namespace, document: Mapping, output: Path) -> int:
    """Print the report's warnings (a number must never hide its doubt) and finish: exit 2 under ``--strict``
    when the report itself is in doubt, else as :func:`report_done`."""
    from lvt.measure.reliability import reliability_problems

    for warning in document.get("warnings", []):
        print(f"lvt: warning: {warning}", file=sys.stderr)
    problems = reliability_problems(document) if getattr(args, "strict", False) else []
    if problems:
        return report_failure(args, f"{output}: --strict: {problems[0]}", EXIT_BAD_INPUT)
    return report_done(args, output)


def report_failure(args: argparse.Namespace | None, message: str, code: int) -> int:
    """One ``lvt: error:`` line on stderr (and a JSON ``error`` line for programs); return ``code``."""
    if args is not None and getattr(args, "progress", None) == "json":
        print(json.dumps({"event": "error", "message": message}), flush=True)
    close_progress_bars()
    print(f"lvt: error: {message}", file=sys.stderr)
    return code


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code (used by tests and the Slicer process)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(with_options=_requested_command(argv)).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        common_options(args)
        if args.check is not None:
            args.check(args)
        _set_threads(getattr(args, "threads", None))
        return handler(args)
    except (InputError, ModelFileError) as error:
        return report_failure(args, str(error), EXIT_BAD_INPUT)
    except CancelledError:
        return report_failure(args, "cancelled; nothing was written", EXIT_CANCELLED)
    except LVTError as error:
        return report_failure(args, str(error), EXIT_FAILURE)


def run_training_cli(argv: Sequence[str]) -> int:
    """``lvt train ARGV`` (the entry of LVTTraining/LVTTrainingScripts/train.py and the Slicer LVTTraining module)."""
    return run(["train", *argv])


def main() -> None:
    """The ``lvt`` console command (and ``python -m lvt``): run, then leave without tearing down the modules."""
    exit_without_teardown(run())


def exit_without_teardown(code: int) -> None:
    """End the process with ``code`` once the exit handlers have run and the standard streams are flushed.

    What a normal exit adds after that is freeing every module one by one: torch alone takes 0.6 s,
    `lvt segment` 0.9 s of its wall time on a 512 x 512 x 119 CT (docs/performance.md). Nothing is
    lost by skipping it: every output file was written through a temporary file, closed and renamed
    before ``run`` returned, and the exit handlers (logging's flush, temporary folders' clean-up) run.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(code)
