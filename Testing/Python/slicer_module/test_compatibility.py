"""Slicer 5.8 and older run Python 3.9: the module files must load there and say which Slicer they need.

The core needs Python >= 3.10 and is never imported on 3.9; what Slicer loads before that decision
(the two module files, ``LVTSegmentationLib/__init__.py`` and its ``compatibility.py``) is checked here
with ``vermin``, with the Python 3.9 grammar, and, where one is installed, with a real Python 3.9.
"""

from __future__ import annotations

import ast
import glob
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, load_module_file

LIB = REPO / "LVTSegmentation" / "LVTSegmentationLib"
LOADED_ON_PYTHON_3_9 = [
    REPO / "LVTSegmentation" / "LVTSegmentation.py",
    REPO / "LVTTraining" / "LVTTraining.py",
    LIB / "__init__.py",
    LIB / "compatibility.py",
]

compatibility = load_module_file(LIB / "compatibility.py", "lvt_slicer_compatibility")


@pytest.mark.parametrize("version", [(3, 9, 10, "final", 0), (3, 9), (2, 7, 18)])
def test_an_old_python_gets_a_message_naming_the_slicer_it_needs(version):
    message = compatibility.unsupported_python_message(version)
    assert message is not None
    assert "3D Slicer 5.10 or later" in message
    assert f"Python {version[0]}.{version[1]}" in message


@pytest.mark.parametrize("version", [(3, 10, 0), (3, 12, 10, "final", 0), (4, 0)])
def test_python_3_10_and_newer_is_accepted(version):
    assert compatibility.unsupported_python_message(version) is None


def test_the_running_interpreter_is_judged_by_default():
    expected = None if sys.version_info >= (3, 10) else "message"
    assert (compatibility.unsupported_python_message() is None) == (expected is None)


@pytest.mark.parametrize("path", LOADED_ON_PYTHON_3_9, ids=lambda p: p.name)
def test_files_slicer_loads_first_use_only_python_3_9_grammar(path):
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_files_slicer_loads_first_need_nothing_newer_than_python_3_9():
    """vermin also finds library features (zip(strict=...), new modules) that the grammar allows."""
    pytest.importorskip("vermin", reason="needs vermin (test extra)")
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    command = [vermin, "-t=3.9-", "--no-tips", "--violations", *(str(path) for path in LOADED_ON_PYTHON_3_9)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


_IMPORT_ON_OLD_PYTHON = textwrap.dedent("""
    import sys
    {patch}
    sys.path.insert(0, {lib_parent!r})
    import LVTSegmentationLib as lib
    message = lib.unsupported_python_message()
    assert message and "5.10" in message, message
    assert lib.MINIMUM_SLICER_VERSION == "5.10"
    loaded = sorted(name for name in sys.modules if name == "lvt" or name.startswith(("lvt.", "LVTSegmentationLib.")))
    assert loaded == ["LVTSegmentationLib.compatibility"], loaded
    assert not hasattr(lib, "BackgroundProcess")
    print("refused")
""")


def test_with_python_3_9_the_logic_package_offers_only_the_message():
    """The version as Slicer 5.8 reports it: nothing of the core (which would fail there) is imported."""
    code = _IMPORT_ON_OLD_PYTHON.format(
        patch="sys.version_info = (3, 9, 10, 'final', 0)", lib_parent=str(LIB.parent)
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "refused", result.stderr


def _python_3_9() -> str | None:
    """A working Python 3.9 (pyenv's shims exist without one, so each candidate is run)."""
    candidates = [*sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / "3.9*" / "bin" / "python"))),
                  shutil.which("python3.9")]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 9)":
            return candidate
    return None


PYTHON_3_9 = _python_3_9()


@pytest.mark.skipif(PYTHON_3_9 is None, reason="no Python 3.9 interpreter installed")
def test_a_real_python_3_9_compiles_the_module_files_and_gets_the_message(tmp_path):
    python = PYTHON_3_9
    for path in LOADED_ON_PYTHON_3_9:
        compiled = subprocess.run(
            [python, "-m", "py_compile", str(path)], capture_output=True, text=True, timeout=120,
            env={"PYTHONPYCACHEPREFIX": str(tmp_path)},
        )
        assert compiled.returncode == 0, f"{path.name}: {compiled.stderr}"
    code = _IMPORT_ON_OLD_PYTHON.format(patch="", lib_parent=str(LIB.parent))
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "refused", result.stderr


def test_every_place_a_user_or_the_index_reads_names_the_same_minimum_slicer():
    """The CMake check, the Extensions Manager's description, the .s4ext, README and docs/slicer.md."""
    minimum = compatibility.MINIMUM_SLICER_VERSION
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    python = ".".join(str(part) for part in compatibility.MINIMUM_PYTHON)
    assert f'set(LVT_MINIMUM_SLICER_VERSION "{minimum}")' in cmake
    assert f'set(LVT_MINIMUM_PYTHON_VERSION "{python}")' in cmake
    sentence = f"Requires 3D Slicer {minimum} or later."
    description = next(line for line in cmake.splitlines() if line.startswith("set(EXTENSION_DESCRIPTION"))
    assert sentence in description
    s4ext = (REPO / "LVTSegmentation.s4ext").read_text(encoding="utf-8")
    assert sentence in next(line for line in s4ext.splitlines() if line.startswith("description "))
    for document in ("README.md", "docs/slicer.md"):
        assert f"3D Slicer {minimum} or later" in (REPO / document).read_text(encoding="utf-8"), document
