"""Train an LVT model from a config file, inside or outside Slicer.

    python LVTTraining/train.py CONFIG [--output DIR] [--steps N] [--device cpu|cuda] [--resume] ...
    Slicer --no-main-window --python-script LVTTraining/train.py -- CONFIG [options]
    PythonSlicer LVTTraining/train.py CONFIG [options]

In an installed extension the script is ``lib/Slicer-X.Y/qt-scripted-modules/LVTTrainingScripts/train.py``
(one folder down, so that Slicer does not try to load it as a module).

The options are those of ``lvt train`` (``python -m lvt train --help``). The process exits with the
run's status: 0 done, 2 bad config or data, 1 other failure, 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_MISSING_PACKAGE = 1


def find_core_dir(script_dir: Path) -> Path | None:
    """The folder that holds the ``lvt`` package, or None.

    Installed extension: this script is ``qt-scripted-modules/LVTTrainingScripts/train.py`` and the core
    ``qt-scripted-modules/lvt``; source tree: ``LVTTraining/train.py`` and ``LVTSegmentation/lvt``.
    """
    for folder in (script_dir, script_dir.parent, script_dir.parent / "LVTSegmentation"):
        if (folder / "lvt" / "__init__.py").is_file():
            return folder
    return None


def script_arguments(argv: list[str]) -> list[str]:
    """The arguments meant for training: Slicer may pass on the ``--`` that separates them from its own."""
    arguments = list(argv[1:])
    return arguments[1:] if arguments[:1] == ["--"] else arguments


def run(argv: list[str]) -> int:
    """Put the core on ``sys.path`` when needed and run ``lvt train`` with the script's arguments."""
    core_dir = find_core_dir(Path(__file__).resolve().parent)
    if core_dir is not None and str(core_dir) not in sys.path:
        sys.path.insert(0, str(core_dir))
    try:
        from lvt.cli.main import run_training_cli
    except ModuleNotFoundError as error:
        print(
            f"train.py: the LVT core needs the Python package '{error.name}', which this Python lacks. "
            "Outside Slicer: pip install -e <repository>. Inside Slicer: press Apply once in the "
            "LVT Segmentation module, which installs the packages.",
            file=sys.stderr,
        )
        return EXIT_MISSING_PACKAGE
    return run_training_cli(script_arguments(argv))


def _exit(status: int) -> None:
    """Leave with the run's status; inside the Slicer application only ``slicer.util.exit`` stops it."""
    slicer = sys.modules.get("slicer")
    if slicer is not None and getattr(slicer, "app", None) is not None:
        slicer.util.exit(status)
    else:
        sys.exit(status)


if __name__ == "__main__":
    _exit(run(sys.argv))
