"""Bad arguments and inputs are reported before the core's heavy modules load (``lvt.cli.checks``).

Each command line runs ``lvt.cli.main.run`` in a fresh interpreter, which then prints the exit code
and which of numpy, scipy, torch, vtk, SimpleITK and nibabel it imported: not a timing, the modules.
Only ``--value-map`` and ``--tolerance-mm`` (read with the label vocabulary) and the commands whose
option defaults come from the core (compare, volumetry) may load numpy; none may load torch or vtk.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_PROGRAM = (
    "import sys\n"
    "from lvt.cli.main import run\n"
    "code = run(sys.argv[1:])\n"
    "heavy = ('numpy', 'scipy', 'torch', 'vtkmodules', 'SimpleITK', 'nibabel')\n"
    "print(code, *[name for name in heavy if name in sys.modules])\n"
)
NONE: tuple[str, ...] = ()
NUMPY = ("numpy", "scipy")  # what lvt.labels needs, nothing more

# (command line, text the error names, heavy modules it may load)
BAD_INPUTS = [
    (["segment", "{tmp}/missing.nii.gz", "-o", "{tmp}/out"], "does not exist", NONE),
    (["segment", "{tmp}/notes.txt", "-o", "{tmp}/out"], "is not an image file", NONE),
    (["segment", "{tmp}/ct.nii.gz", "-o", "{tmp}/taken"], "already exists", NONE),
    (["segment", "{tmp}/ct.nii.gz", "-o", "{tmp}/out", "--threads", "0"], "--threads 0", NONE),
    (["segment", "{tmp}/ct.nii.gz", "-o", "{tmp}/out", "--min-tumor-ml", "-1"], "--min-tumor-ml", NONE),
    (["segment", "{tmp}/ct.nii.gz", "-o", "{tmp}/out", "--device", "gpu"], "--device 'gpu'", NONE),
    (["segment", "{tmp}/ct.nii.gz", "-o", "{tmp}/out", "--model", "{tmp}/missing.json"], "missing.json", NONE),
    (["segment", "{tmp}/ct.nii.gz", "-o", "{tmp}/out", "--workers", "2"], "are for a cohort", NONE),
    (["segment", "{tmp}/cts", "-o", "{tmp}/out", "--workers", "0"], "--workers 0", NONE),
    (["segment", "{tmp}/cts", "-o", "{tmp}/out", "--shard", "2/2"], "K counts from 0", NONE),
    (["segment", "{tmp}/cohort.csv", "-o", "{tmp}/out", "--series", "1.2.3"], "--series", NONE),
    (["segment", "{tmp}/cohort.csv", "-o", "{tmp}/out"], "no 'image' column", NONE),
    (["segment", "{tmp}/nothing/*.nii.gz", "-o", "{tmp}/out"], "no CTs found", NONE),
    (["measure", "{tmp}/missing.seg.nrrd", "-o", "{tmp}/out"], "does not exist", NONE),
    (["measure", "{tmp}/ct.nii.gz", "-o", "{tmp}/out", "--ct", "{tmp}/notes.txt"], "is not an image file", NONE),
    (["measure", "{tmp}/ct.nii.gz", "-o", "{tmp}/out", "--resection", "{tmp}/missing.nrrd"], "missing.nrrd", NONE),
    (["measure", "{tmp}/ct.nii.gz", "-o", "{tmp}/taken"], "already exists", NONE),
    (["measure", "{tmp}/ct.nii.gz", "-o", "{tmp}/out", "--value-map", "1=9"], "--value-map", NUMPY),
    (["demo", "-o", "{tmp}/taken"], "already exists", NONE),
    (["train", "{tmp}/missing.yaml"], "missing.yaml", NONE),
    (["train", "--ensemble", "{tmp}/missing.json", "--output", "{tmp}/out"], "missing.json", NONE),
    (["evaluate", "--pred", "{tmp}/missing", "--truth", "{tmp}/cts", "-o", "{tmp}/out"], "does not exist", NONE),
    (["evaluate", "--pred", "{tmp}/cts"], "needs --pred, --truth and -o", NONE),
    (["evaluate", "--pred", "{tmp}/cts", "--truth", "{tmp}/cts", "-o", "{tmp}/out", "--tolerance-mm", "spleen=3"],
     "--tolerance-mm", NUMPY),
    (["compare", "{tmp}/ct.nii.gz", "{tmp}/missing.nii.gz", "-o", "{tmp}/out"], "does not exist", NUMPY),
    (["volumetry", "{tmp}/ct.nii.gz", "{tmp}/ct.nii.gz", "-o", "{tmp}/taken"], "already exists", NUMPY),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files that exist (their contents are never read by the checks), an output folder already there, a cohort."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    (folder / "ct.nii.gz").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    (folder / "taken").mkdir()
    (folder / "cts").mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (folder / "cts" / name).write_bytes(b"")
    (folder / "cohort.csv").write_text("path,case_id\ncts/a.nii.gz,a\n")
    return folder


@pytest.mark.parametrize(("command", "names", "allowed"), BAD_INPUTS,
                         ids=[f"{command[0]}: {names}" for command, names, _ in BAD_INPUTS])
def test_bad_input_is_reported_before_the_heavy_modules_load(command: list[str], names: str,
                                                             allowed: tuple[str, ...], inputs: Path) -> None:
    argv = [part.format(tmp=inputs) for part in command]
    result = subprocess.run([sys.executable, "-c", _PROGRAM, *argv], capture_output=True, text=True, timeout=120)
    code, *loaded = result.stdout.split()
    assert code == "2", result.stdout + result.stderr
    assert result.stderr.count("lvt: error:") == 1 and names in result.stderr, result.stderr
    assert set(loaded) <= set(allowed), f"{' '.join(command)} loaded {loaded}"


def test_the_check_leaves_a_dicom_file_and_a_folder_to_the_reader(inputs: Path, tmp_path: Path) -> None:
    """A DICOM file without the suffix and a folder pass the check: the reader decides (and loads numpy)."""
    dicom = tmp_path / "IM0001"
    dicom.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    for path in (dicom, inputs / "taken"):
        result = subprocess.run([sys.executable, "-c", _PROGRAM, "segment", str(path), "-o", str(tmp_path / "out"),
                                 "--progress", "none"], capture_output=True, text=True, timeout=300)
        code, *loaded = result.stdout.split()
        assert code == "2" and "numpy" in loaded and "torch" not in loaded, result.stdout + result.stderr
        assert result.stderr.count("lvt: error:") == 1 and str(path) in result.stderr, result.stderr
