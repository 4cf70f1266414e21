"""``lvt train``: train a model from a config file (or one fold of a cross-validation), or build an ensemble.

Also the entry of LVTTraining/LVTTrainingScripts/train.py and of the LVTTraining Slicer module.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lvt.cli.checks import all_existing, existing
from lvt.cli.console import cancel_on_signals, make_progress
from lvt.cli.main import EXIT_OK, add_progress_arguments
from lvt.errors import InputError

HELP = "train a model from a YAML/JSON config (see docs/training.md), or join trained models into an ensemble"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, nargs="?", help="training config (YAML or JSON)")
    parser.add_argument("--output", type=Path, default=None, help="run folder (overrides the config)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (overrides the config)")
    parser.add_argument("--fold", type=int, default=None,
                        help="train fold K (0-based) of a cross-validation: fold K validates, the others train; "
                             "writes OUTPUT/fold_K")
    parser.add_argument("--folds", type=int, default=None, help="number of folds (overrides the config's folds)")
    parser.add_argument("--ensemble", nargs="+", type=Path, default=None, metavar="MODEL",
                        help="instead of training: join models (manifests, run folders or a folder of fold_K runs) "
                             "into one ensemble model in --output")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--skip-bad-cases", action="store_true", help="leave unreadable/inconsistent cases out")
    add_progress_arguments(parser)


def check(args: argparse.Namespace) -> None:
    """The config (or the ensemble's models) must exist; the config's contents are checked by the core."""
    existing(args.config)
    all_existing(args.ensemble)


def run(args: argparse.Namespace) -> int:
    if args.ensemble is not None:
        return _ensemble(args)
    if args.config is None:
        raise InputError(None, "lvt train needs a CONFIG (or --ensemble MODEL ... --output DIR)")
    from lvt.train.config import load_training_config

    config = load_training_config(args.config, output_dir=args.output, steps=args.steps, fold=args.fold,
                                  folds=args.folds)
    from lvt.train.loop import run_training  # torch: only once the config is known to be good

    with cancel_on_signals() as cancel:
        result = run_training(config, device=args.device, resume=args.resume, skip_bad_cases=args.skip_bad_cases,
                              progress=make_progress(args.progress), cancel=cancel)
    for line in result.skipped_cases:
        print(f"skipped {line}", file=sys.stderr)
    message = f"trained {result.steps} steps in {result.seconds:.0f} s: {result.final_model}"
    print(json.dumps({"event": "done", "output": str(result.final_model)}) if args.progress == "json" else message)
    return EXIT_OK


def _ensemble(args: argparse.Namespace) -> int:
    if args.config is not None or args.output is None:
        raise InputError(None, "lvt train --ensemble MODEL ... needs --output DIR and no CONFIG")
    from lvt.segment.ensemble import write_ensemble

    manifest = write_ensemble(args.ensemble, args.output)
    print(json.dumps({"event": "done", "output": str(manifest)}) if args.progress == "json" else f"wrote {manifest}")
    return EXIT_OK
