"""What ``lvt`` can tell wrong about its arguments before it loads the core: a path that does not exist,
a file of a type no reader takes, an option out of range (an output folder that is already there:
:func:`lvt.atomic.refuse_existing_output`, the rule the pipeline applies too).

These checks import neither numpy nor torch, so such mistakes are answered at once. What they
cannot know (a damaged file, a model that does not load) the core still finds, and it is reported
the same way: one ``lvt: error:`` line, exit 2.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable
from pathlib import Path

from lvt.errors import InputError
from lvt.segment.cases import CT_SUFFIXES, is_dicom_file

DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def existing(path: Path | None) -> None:
    """A path the user gave must exist (None: the option was not given)."""
    if path is not None and not path.expanduser().exists():
        raise InputError(path, "does not exist")


def all_existing(paths: Iterable[Path] | None) -> None:
    for path in paths or ():
        existing(path)


def image_path(path: Path | None) -> None:
    """A CT or label map: an image file of a type LVT reads (a DICOM file goes to the reader too), or a folder.

    A folder is left to the reader, which knows a DICOM series without the ``.dcm`` suffix or preamble.
    """
    existing(path)
    if path is not None and path.expanduser().is_file() and not path.name.lower().endswith(CT_SUFFIXES) \
            and not is_dicom_file(path.expanduser()):
        raise InputError(path, f"is not an image file that can be read; expected a file ending in "
                               f"{', '.join(CT_SUFFIXES)}, or a DICOM folder")


def at_least(option: str, value: float | None, low: float) -> None:
    """A number option given must be finite and at least ``low``."""
    if value is not None and not (math.isfinite(value) and value >= low):
        raise InputError(None, f"{option} {value:g}: must be at least {low:g}")


def common_options(args: argparse.Namespace) -> None:
    """The options many commands share (see :func:`lvt.cli.main.add_common_arguments`), where given."""
    at_least("--threads", getattr(args, "threads", None), 1)
    at_least("--min-tumor-ml", getattr(args, "min_tumor_ml", None), 0)
    device = getattr(args, "device", None)
    if device is not None and not DEVICE_NAME.fullmatch(device):
        raise InputError(None, f"--device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    existing(getattr(args, "model", None))
