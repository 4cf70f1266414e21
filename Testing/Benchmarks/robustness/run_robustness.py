"""What ``lvt segment`` does with each kind of bad input of issue 12, as one table (robustness.md).

Every kind is built here, in a temporary folder, from a coarse phantom (lvt.phantom, 3 mm voxels),
so the script reruns anywhere: damaged files (truncated or corrupted .nii.gz), DICOM series with a
missing slice or a gantry tilt, a sheared NRRD, a zero voxel size, NaN voxels, a tiny image, a CT
without liver, a liver cut by the scan range, an output folder that cannot be created, two runs on
one output folder, and model files LVT does not load (a PyTorch pickle, weights without manifest).
Each is run as the user runs it, ``python -m lvt segment CT -o OUT --progress none``, in a child
process with a time limit; the table records the exit code and the first line of the error, or, when
the run succeeds, the report's warnings.

Run from the repository root (the CT-like kinds run the model: about a minute each on a CPU):
    python Testing/Benchmarks/robustness/run_robustness.py [--kinds truncated_nii_gz,pytorch_model]
        [--model M.json] [--device cpu] [--timeout 900] [--output robustness.md]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lvt import __version__
from lvt.image import Image
from lvt.io import write_image
from lvt.phantom import PhantomConfig, make_phantom

HERE = Path(__file__).resolve().parent
SPACING_MM = (3.0, 3.0, 3.0)
IOP_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class Case:
    """One run of ``lvt segment``: its input and the extra options; ``runs`` > 1 starts that many at once."""

    input: Path
    options: list[str] = field(default_factory=list)
    output: Path | None = None
    runs: int = 1


@dataclass
class Outcome:
    kind: str
    what: str
    exit_codes: list[int | None]
    seconds: float


def phantom_ct(**config: object) -> Image:
    """A phantom CT (seed 1) at 3 mm; by default the whole abdomen with the liver inside the image."""
    return make_phantom(PhantomConfig(seed=1, spacing_mm=SPACING_MM, **config)).image


def _valid_ct(work: Path) -> Path:
    path = work / "ct.nii.gz"
    if not path.exists():
        write_image(phantom_ct(), path)
    return path


def truncated_nii_gz(work: Path) -> Case:
    path = work / "truncated.nii.gz"
    data = _valid_ct(work).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return Case(path)


def corrupted_nii_gz(work: Path) -> Case:
    path = work / "corrupted.nii.gz"
    data = bytearray(_valid_ct(work).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = np.random.default_rng(12).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return Case(path)


def _write_dicom(folder: Path, ct: Image, positions: np.ndarray) -> Path:
    """One axial DICOM file per slice at the given ImagePositionPatient (LPS mm), int16 HU."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.12.1"
    for index, (plane, position) in enumerate(zip(ct.array, positions, strict=True)):
        image = sitk.GetImageFromArray(np.round(plane)[None].astype(np.int16))
        image.SetSpacing((*ct.spacing_mm[:2], 1.0))
        tags = {"0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{uid}.{index + 1}", "0008|0060": "CT",
                "0008|103e": "robustness phantom", "0020|000d": "1.2.826.0.1.3680043.12", "0020|000e": uid,
                "0020|0013": str(index + 1), "0020|0037": "\\".join(map(str, IOP_AXIAL)),
                "0020|0032": "\\".join(f"{v:.4f}" for v in position)}
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{index:03d}.dcm"))
        writer.Execute(image)
    return folder


def _slice_positions(ct: Image, shift_per_slice: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    step = np.array([0.0, 0.0, ct.spacing_mm[2]]) + np.array(shift_per_slice)
    return np.asarray(ct.origin_lps_mm) + np.arange(ct.array.shape[0])[:, None] * step


def dicom_missing_slice(work: Path) -> Case:
    ct = phantom_ct()
    folder = _write_dicom(work / "dicom_missing_slice", ct, _slice_positions(ct))
    sorted(folder.iterdir())[ct.array.shape[0] // 2].unlink()
    return Case(folder)


def dicom_gantry_tilt(work: Path) -> Case:
    """A 15 degree gantry tilt: each slice shifts along y by its spacing times tan(15)."""
    ct = phantom_ct()
    shift = (0.0, ct.spacing_mm[2] * float(np.tan(np.radians(15.0))), 0.0)
    return Case(_write_dicom(work / "dicom_gantry_tilt", ct, _slice_positions(ct, shift)))


def sheared_nrrd(work: Path) -> Case:
    """Non-perpendicular space directions (the k axis leans along y), written as a plain NRRD."""
    ct = phantom_ct()
    directions = np.diag(ct.spacing_mm)
    directions[2, 1] = 0.4 * ct.spacing_mm[2]  # row = index axis, as NRRD lists them
    vectors = " ".join("(" + ",".join(f"{v:g}" for v in row) + ")" for row in directions)
    k, j, i = ct.array.shape
    header = (f"NRRD0004\ntype: int16\ndimension: 3\nspace: left-posterior-superior\nsizes: {i} {j} {k}\n"
              f"space directions: {vectors}\nkinds: domain domain domain\nendian: little\nencoding: gzip\n"
              "space origin: (" + ",".join(f"{v:g}" for v in ct.origin_lps_mm) + ")\n\n")
    path = work / "sheared.nrrd"
    path.write_bytes(header.encode("ascii") + gzip.compress(np.round(ct.array).astype("<i2").tobytes()))
    return Case(path)


def zero_spacing_nifti(work: Path) -> Case:
    path = work / "zero_spacing.nii"
    write_image(phantom_ct(), path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<f", data, 76 + 4 * 3, 0.0)  # pixdim[3]: the slice spacing
    path.write_bytes(bytes(data))
    return Case(path)


def _float_ct(work: Path, name: str, change: Callable[[np.ndarray], None]) -> Case:
    ct = phantom_ct()
    array = ct.array.astype(np.float32)
    change(array)
    path = work / name
    write_image(ct.with_array(array), path)
    return Case(path)


def nan_voxels(work: Path) -> Case:
    def some_nan(array: np.ndarray) -> None:
        array[10, 20:30, 20:30] = np.nan

    return _float_ct(work, "nan_voxels.nii.gz", some_nan)


def all_nan(work: Path) -> Case:
    return _float_ct(work, "all_nan.nii.gz", lambda array: array.fill(np.nan))


def output_not_creatable(work: Path) -> Case:
    blocker = work / "a_file"
    blocker.write_text("a file where the output's parent folder should be")
    return Case(_valid_ct(work), output=blocker / "out")


def two_concurrent_runs(work: Path) -> Case:
    return Case(_valid_ct(work), output=work / "shared_out", runs=2)


def tiny_image(work: Path) -> Case:
    """16 x 16 x 16 voxels at the top of the phantom's liver: a fifth liver, a fifth lung air (so it reads as CT)."""
    ct = phantom_ct(field_of_view_mm=tuple(16 * s for s in SPACING_MM), center_lps_mm=(-84.0, 0.0, 91.5))
    path = work / "tiny_16.nii.gz"
    write_image(ct, path)
    return Case(path)


def ct_without_liver(work: Path) -> Case:
    """The lower abdomen and pelvis: the phantom's liver ends at z = -84 mm, this scan at z = -160 mm."""
    path = work / "no_liver.nii.gz"
    write_image(phantom_ct(field_of_view_mm=(360.0, 300.0, 120.0), center_lps_mm=(0.0, 0.0, -220.0)), path)
    return Case(path)


def liver_cut_by_scan_range(work: Path) -> Case:
    """A scan from z = -10 to 90 mm: the liver (z = -84..87 mm) goes on below the first slice."""
    path = work / "liver_cut.nii.gz"
    write_image(phantom_ct(field_of_view_mm=(360.0, 300.0, 100.0), center_lps_mm=(0.0, 0.0, 40.0)), path)
    return Case(path)


def pytorch_model(work: Path) -> Case:
    import torch

    model = work / "model.pt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(4, 1, 3, 3, 3)}}, model)
    return Case(_valid_ct(work), options=["--model", str(model)])


def bare_safetensors(work: Path) -> Case:
    import torch
    from safetensors.torch import save_file

    weights = work / "weights_only.safetensors"
    save_file({"conv.weight": torch.zeros(4, 1, 3, 3, 3)}, str(weights))
    return Case(_valid_ct(work), options=["--model", str(weights)])


KINDS: dict[str, Callable[[Path], Case]] = {function.__name__: function for function in (
    truncated_nii_gz, corrupted_nii_gz, dicom_missing_slice, dicom_gantry_tilt, sheared_nrrd, zero_spacing_nifti,
    nan_voxels, all_nan, output_not_creatable, two_concurrent_runs, tiny_image, ct_without_liver,
    liver_cut_by_scan_range, pytorch_model, bare_safetensors,
)}


def run_case(kind: str, case: Case, work: Path, common: list[str], timeout_s: float) -> Outcome:
    """Start the case's run(s) of ``lvt segment`` together and wait for each within the time limit."""
    output = case.output or work / f"{kind}_out"
    command = [sys.executable, "-m", "lvt", "segment", str(case.input), "-o", str(output), "--progress", "none",
               *common, *case.options]
    started = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(case.runs)]
    codes: list[int | None] = []
    errors: list[str] = []
    for process in processes:
        try:
            _, stderr = process.communicate(timeout=max(1.0, timeout_s - (time.perf_counter() - started)))
            codes.append(process.returncode)
            errors.append(first_error_line(stderr))
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            codes.append(None)
            errors.append(f"still running after {timeout_s:.0f} s (killed)")
    seconds = time.perf_counter() - started
    return Outcome(kind, describe(codes, errors, output), codes, seconds)


def first_error_line(stderr: str) -> str:
    """The ``lvt: error:`` line, else the last line of a traceback, else nothing."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    chosen = [line for line in lines if line.startswith("lvt: error:")] or lines[-1:]
    return chosen[0] if chosen else ""


def describe(codes: list[int | None], errors: list[str], output: Path) -> str:
    """What the user sees: the error of a refused run, and for a finished one the report's warnings."""
    parts = [error for code, error in zip(codes, errors, strict=True) if code != 0]
    if 0 in codes:
        report = output / "report.json"
        if not report.exists():
            parts.insert(0, "finished without report.json")
        else:
            warnings = json.loads(report.read_text(encoding="utf-8"))["warnings"]
            parts.insert(0, "finished; " + ("warnings: " + " / ".join(warnings) if warnings else "no warning"))
    return " | ".join(parts)


def markdown(outcomes: list[Outcome], common: list[str], work: Path) -> str:
    rows = [
        "# Robustness: `lvt segment` on bad input (issue 12)",
        "",
        f"Made by `Testing/Benchmarks/robustness/run_robustness.py` on {time.strftime('%Y-%m-%d')}, LVT "
        f"{__version__}, Python {platform.python_version()}, options `{' '.join(common) or '(none)'}`. Inputs are "
        f"built from a {SPACING_MM[0]:g} mm phantom in a temporary folder (shown as `<tmp>`). Exit codes: 0 done, "
        "1 failure, 2 bad input, 130 cancelled; a good answer to bad input is exit 2 with one line naming the "
        "file and the problem, or exit 0 with a warning in the report.",
        "",
        "| kind | what lvt does (first line of the message, or the report's warnings) | exit | s |",
        "|---|---|---|---|",
    ]
    for outcome in outcomes:
        what = outcome.what.replace(str(work), "<tmp>").replace("|", "\\|").replace("lvt: error: ", "")
        codes = " and ".join("timeout" if code is None else str(code) for code in outcome.exit_codes)
        rows.append(f"| {outcome.kind} | {what} | {codes} | {outcome.seconds:.1f} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of: {', '.join(KINDS)}")
    parser.add_argument("--model", default=None, help="model manifest (default: the bundled model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per kind")
    parser.add_argument("--output", type=Path, default=HERE / "robustness.md")
    args = parser.parse_args()
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown kinds {unknown}; choose from {list(KINDS)}")
    common = ["--device", args.device] + (["--model", args.model] if args.model else [])
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="lvt-robustness-") as folder:
        work = Path(folder)
        for kind in kinds:
            (work / kind).mkdir()
            outcome = run_case(kind, KINDS[kind](work / kind), work / kind, common, args.timeout)
            print(f"{kind}: exit {outcome.exit_codes} in {outcome.seconds:.1f} s: {outcome.what}", flush=True)
            outcomes.append(outcome)
        args.output.write_text(markdown(outcomes, common, work), encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
