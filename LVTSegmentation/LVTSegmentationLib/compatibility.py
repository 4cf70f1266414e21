"""Which Slicer the extension runs in: the core needs Python 3.10, which Slicer ships from 5.10 on.

Slicer 5.8 and older bundle Python 3.9 (Slicer's CMakeLists.txt: ``Slicer_REQUIRED_PYTHON_VERSION``
3.9.10); Slicer moved to Python 3.12.10 in June 2025 (Slicer/Slicer pull request 8456, commit
5e952f7c), first released in Slicer 5.10.0. The core uses ``X | Y`` unions at run time and
``zip(strict=True)``, so on an older Slicer the module must say so instead of failing with a
traceback. This file is therefore written for Python 3.9 too (``vermin`` and a Python 3.9
interpreter check it in Testing/Python/slicer_module/test_compatibility.py).
"""

from __future__ import annotations

import sys

MINIMUM_PYTHON = (3, 10)
MINIMUM_SLICER_VERSION = "5.10"


def unsupported_python_message(version_info: tuple = tuple(sys.version_info)) -> str | None:
    """Why LVT Segmentation cannot run in this Python, in the user's words; None when it can.

    Args:
        version_info: ``sys.version_info`` or any tuple that starts with (major, minor).
    """
    major, minor = int(version_info[0]), int(version_info[1])
    if (major, minor) >= MINIMUM_PYTHON:
        return None
    return (
        f"LVT Segmentation needs 3D Slicer {MINIMUM_SLICER_VERSION} or later (Python "
        f"{MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or newer); this Slicer runs Python {major}.{minor}. "
        "Install the current Slicer release from download.slicer.org and install the extension there."
    )
