"""Where the core, its bundled model and its Python packages are, in a source tree or an installed extension.

Layouts this module resolves (both hold the ``lvt`` package beside the module file):

- source tree: ``LVTSegmentation/LVTSegmentation.py``, ``LVTSegmentation/lvt/``, and the model in
  ``Resources/Models/`` at the extension root (one level up);
- installed extension: everything in ``lib/Slicer-X.Y/qt-scripted-modules/``; the module's
  CMakeLists copies the model into ``qt-scripted-modules/Resources/Models/``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BUNDLED_MODEL_FILE = "lvt_default.json"
# Set to 1 to let LVTSegmentationTest install the missing packages (PyTorch is several GB) unattended.
SELF_TEST_INSTALL_VARIABLE = "LVT_SELF_TEST_INSTALL"
_YES = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Requirement:
    """A package the core needs in Slicer's Python: the name it is imported by and its pip specifier."""

    import_name: str
    pip_spec: str


# What `lvt` imports beyond what Slicer ships. Left out on purpose: torch (installed through the
# PyTorch extension, which picks the CUDA build) and numpy, SimpleITK, vtk (Slicer's own builds;
# a pip wheel replacing them breaks Slicer).
CORE_REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("safetensors", "safetensors>=0.4,<1"),
    Requirement("slicerio", "slicerio>=1.4,<2"),
    Requirement("nrrd", "pynrrd>=1.0,<2"),
    Requirement("scipy", "scipy>=1.11,<2"),
    Requirement("matplotlib", "matplotlib>=3.8,<4"),
    Requirement("yaml", "PyYAML>=6,<7"),
    Requirement("psutil", "psutil>=5.9"),
    Requirement("tqdm", "tqdm>=4.66,<5"),
)
SLICER_OWNED_DISTRIBUTIONS: tuple[str, ...] = ("numpy", "SimpleITK", "vtk", "pydicom")
# Core dependencies not installed into Slicer: highdicom needs a newer pydicom than some Slicer versions
# bundle, and in Slicer DICOM SEG is written by Slicer's own DICOM export; without it `lvt segment` says
# in its report that no DICOM SEG was written.
NOT_INSTALLED_IN_SLICER: tuple[str, ...] = ("highdicom",)


def core_dir(module_dir: str | Path) -> Path:
    """The folder holding the ``lvt`` package (to put first on the child process's PYTHONPATH).

    Raises:
        FileNotFoundError: the extension is incomplete (the core was not installed with it).
    """
    folder = Path(module_dir)
    if not (folder / "lvt" / "__init__.py").is_file():
        raise FileNotFoundError(f"{folder / 'lvt'}: the LVT core package is missing; reinstall the extension")
    return folder


def bundled_model_path(module_dir: str | Path) -> Path | None:
    """The bundled model manifest: the installed location first, then the source tree's; None if absent."""
    folder = Path(module_dir)
    for candidate in (
        folder / "Resources" / "Models" / BUNDLED_MODEL_FILE,
        folder.parent / "Resources" / "Models" / BUNDLED_MODEL_FILE,
    ):
        if candidate.is_file():
            return candidate
    return None


def missing_requirements(requirements: Iterable[Requirement] = CORE_REQUIREMENTS) -> list[Requirement]:
    """The requirements whose module cannot be imported in this Python (nothing is imported)."""
    return [r for r in requirements if importlib.util.find_spec(r.import_name) is None]


def protecting_constraints() -> list[str]:
    """pip constraint lines pinning Slicer's own packages to their installed versions.

    Passed to pip as a constraints file, so installing the core's packages can never upgrade or
    replace Slicer's numpy or SimpleITK (TotalSegmentator and SlicerNNUnet guard against the same).
    """
    lines = []
    for name in SLICER_OWNED_DISTRIBUTIONS:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return lines


def self_test_skip_reason(missing: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """Why the end-to-end self-test must not run here; None when it may.

    It may run when every package is present, or when :data:`SELF_TEST_INSTALL_VARIABLE` asks it to
    install them: a test started by ctest or "Reload and Test" must not download several GB unasked
    (TotalSegmentator and MONAIAuto3DSeg switch their inference test off for the same reason).
    """
    if not missing or environ.get(SELF_TEST_INSTALL_VARIABLE, "").strip().lower() in _YES:
        return None
    return (
        f"LVTSegmentationTest skipped: it needs {', '.join(missing)}, which this Slicer lacks. Install them by "
        f"pressing Apply once in the module, or set {SELF_TEST_INSTALL_VARIABLE}=1 to let the test install them."
    )
