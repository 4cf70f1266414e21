"""The `lvt` command on bad input: exit code 2, one message naming the file and the problem, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lvt.cli.main import run


def _write(array: np.ndarray, path: Path, spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> Path:
    image = sitk.GetImageFromArray(array, isVector=False)
    image.SetSpacing((*spacing, 1.0)[: image.GetDimension()])
    sitk.WriteImage(image, str(path))
    return path


def _ct_like(shape: tuple[int, int, int] = (8, 24, 24)) -> np.ndarray:
    rng = np.random.default_rng(0)
    array = np.full(shape, -1000, dtype=np.int16)
    array[:, 4:20, 4:20] = rng.normal(60, 20, (shape[0], 16, 16)).astype(np.int16)
    return array


def _assert_clean_failure(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture, *expected: str) -> None:
    before = set(tmp_path.iterdir())
    code = run(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    for text in expected:
        assert text in err, err
    assert err.count("lvt: error:") == 1
    assert set(tmp_path.iterdir()) == before  # no output folder, no partial sibling


@pytest.mark.parametrize("case", ["missing", "not_an_image", "two_d", "four_d", "not_hu", "constant", "nan"])
def test_segment_rejects_bad_input(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / f"{case}.mha"  # MetaImage keeps NaN (the NIfTI round trip here does not)
    expected = {"missing": "does not exist", "not_an_image": "not", "two_d": "2D", "four_d": "4D",
                "not_hu": "--force", "constant": "same value", "nan": "NaN"}[case]
    if case == "not_an_image":
        path.write_text("hello, this is not an image")
    elif case == "two_d":
        _write(_ct_like()[0], path)
    elif case == "four_d":
        _write(np.stack([_ct_like()] * 2).astype(np.float32), path)
    elif case == "not_hu":
        _write(np.random.default_rng(1).integers(0, 256, (8, 24, 24)).astype(np.uint8), path)
    elif case == "constant":
        _write(np.full((8, 24, 24), 40, dtype=np.int16), path)
    elif case == "nan":
        array = _ct_like().astype(np.float32)
        array[3, 5, 5] = np.nan
        _write(array, path)
    _assert_clean_failure(tmp_path, ["segment", str(path), "-o", str(tmp_path / "out"), "--progress", "none"],
                          capsys, str(path), expected)


def test_dicom_folder_without_ct_series(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "dicom"
    folder.mkdir()
    (folder / "readme.txt").write_text("no DICOM here")
    _assert_clean_failure(tmp_path, ["segment", str(folder), "-o", str(tmp_path / "out"), "--progress", "none"],
                          capsys, str(folder))


def test_existing_output_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    ct = _write(_ct_like(), tmp_path / "ct.nii.gz")
    code = run(["segment", str(ct), "-o", str(out), "--progress", "none"])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text(encoding="utf-8") == "user data"


def test_measure_rejects_a_segmentation_on_another_grid(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ct = _write(_ct_like(), tmp_path / "ct.nii.gz")
    labels = np.zeros((8, 24, 24), dtype=np.uint8)
    labels[2:6, 8:16, 8:16] = 1
    seg = _write(labels, tmp_path / "labels.nii.gz", spacing=(2.0, 2.0, 2.0))
    _assert_clean_failure(tmp_path, ["measure", str(seg), "--ct", str(ct), "-o", str(tmp_path / "out"),
                                     "--progress", "none"], capsys, str(seg), "grid")


def test_json_progress_reports_errors_as_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = run(["segment", str(tmp_path / "absent.nrrd"), "-o", str(tmp_path / "out"), "--progress", "json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 2 and lines[-1]["event"] == "error" and "absent.nrrd" in lines[-1]["message"]


def test_sigterm_stops_quickly_and_leaves_nothing(tmp_path: Path, tiny_trained_model: Path) -> None:
    ct = _write(np.tile(_ct_like((40, 96, 96)), (1, 1, 1)), tmp_path / "ct.nii.gz", spacing=(1.0, 1.0, 1.0))
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "lvt", "segment", str(ct), "-o", str(out), "--model", str(tiny_trained_model),
         "--progress", "json", "--tta", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    for line in process.stdout:  # wait until it is really working
        if json.loads(line).get("stage") in ("resample", "inference"):
            break
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    assert code == 130 and time.monotonic() - sent < 10
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
