"""A command that fails on a missing input reports it without loading torch (seconds, not the torch import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_PROGRAM = (
    "import sys\n"
    "from lvt.cli.main import run\n"
    "code = run(sys.argv[1:])\n"
    "print(code, 'torch' in sys.modules)\n"
)


@pytest.mark.parametrize("command", [
    ["segment", "{missing}.nii.gz", "-o", "{out}"],
    ["measure", "{missing}.nii.gz", "-o", "{out}"],
    ["train", "{missing}.yaml"],
])
def test_missing_input_is_reported_without_importing_torch(command: list[str], tmp_path: Path) -> None:
    argv = [part.format(missing=tmp_path / "missing", out=tmp_path / "out") for part in command]
    result = subprocess.run([sys.executable, "-c", _PROGRAM, *argv], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr
    assert "missing" in result.stderr
