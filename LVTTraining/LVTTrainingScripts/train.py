"""Train an LVT model from a config file, inside or outside Slicer.

    python LVTTraining/LVTTrainingScripts/train.py CONFIG [--output DIR] [--steps N] [--device cpu|cuda] ...
    Slicer --no-main-window --python-script LVTTraining/LVTTrainingScripts/train.py -- CONFIG [options]
    PythonSlicer LVTTraining/LVTTrainingScripts/train.py CONFIG [options]

The script lives one folder below the module, in the source tree as in an installed extension
(``lib/Slicer-X.Y/qt-scripted-modules/LVTTrainingScripts/train.py``), so that Slicer, which loads every
``.py`` file of a module folder as a module, never tries to load it.

The options are those of ``lvt train`` (``python -m lvt train --help``). The process always exits, with
the run's status: 0 done, 2 bad config or data, 1 any other failure (with its traceback), 130 cancelled.
Inside Slicer that matters: an exception that escaped would leave ``Slicer --no-main-window`` running.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path

EXIT_FAILURE = 1
EXIT_CANCELLED = 130


def find_core_dir(script_dir: Path) -> Path | None:
    """The folder that holds the ``lvt`` package, or None.

    Installed extension: this script is ``qt-scripted-modules/LVTTrainingScripts/train.py`` and the core
    ``qt-scripted-modules/lvt``; source tree: ``LVTTraining/LVTTrainingScripts/train.py`` and
    ``LVTSegmentation/lvt``.
    """
    for folder in (script_dir.parent, script_dir.parent.parent / "LVTSegmentation"):
        if (folder / "lvt" / "__init__.py").is_file():
            return folder
    return None


def script_arguments(argv: list[str]) -> list[str]:
    """The arguments meant for training: Slicer may pass on the ``--`` that separates them from its own."""
    arguments = list(argv[1:])
    return arguments[1:] if arguments[:1] == ["--"] else arguments


def training_entry() -> Callable[[list[str]], int]:
    """``lvt train`` as a function, after putting the core on ``sys.path`` when it is not installed."""
    core_dir = find_core_dir(Path(__file__).resolve().parent)
    if core_dir is not None and str(core_dir) not in sys.path:
        sys.path.insert(0, str(core_dir))
    from lvt.cli.main import run_training_cli

    return run_training_cli


def run(argv: list[str], entry: Callable[[], Callable[[list[str]], int]] = training_entry) -> int:
    """Run training with the script's arguments and turn every way it can end into an exit status.

    ``entry`` gives the function to run (``lvt train``); tests pass one that fails on purpose.
    """
    try:
        status = entry()(script_arguments(argv))
    except ModuleNotFoundError as error:
        print(
            f"train.py: the LVT core needs the Python package '{error.name}', which this Python lacks. "
            "Outside Slicer: pip install -e <repository>. Inside Slicer: press Apply once in the "
            "LVT Segmentation module, which installs the packages.",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("train.py: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except SystemExit as error:  # argparse's --help and usage errors
        return error.code if isinstance(error.code, int) else EXIT_FAILURE
    except BaseException:  # CUDA out of memory, OSError, a bug: report it, never hang Slicer
        traceback.print_exc()
        return EXIT_FAILURE
    return status if isinstance(status, int) else EXIT_FAILURE


def _exit(status: int) -> None:
    """Leave with the run's status; inside the Slicer application only ``slicer.util.exit`` stops it."""
    slicer = sys.modules.get("slicer")
    if slicer is not None and getattr(slicer, "app", None) is not None:
        slicer.util.exit(status)
    else:
        sys.exit(status)


if __name__ == "__main__":
    _exit(run(sys.argv))
