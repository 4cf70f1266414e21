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


def _tiny_model(folder: Path, kind: str) -> Path:
    """A model file broken in one way: a PyTorch checkpoint, weights without manifest, or the wrong architecture."""
    import torch

    from lvt.segment.model_file import ModelManifest, save_model
    from lvt.segment.network import NetworkConfig, build_network
    from lvt.segment.window import Window

    config = NetworkConfig(features_per_stage=(4, 8), deep_supervision_levels=1)
    if kind == "pytorch_pickle":
        torch.save(build_network(config).state_dict(), folder / "model.pt")
        return folder / "model.pt"
    manifest = ModelManifest(name="tiny", version="0", spacing_mm=(4.0, 4.0, 4.0), patch_size_zyx=(16, 16, 16),
                             window=Window(80, 250), network=config)
    save_model(build_network(config), manifest, folder / "model.json")
    if kind == "bare_safetensors":
        (folder / "model.json").unlink()
        return folder / "model.safetensors"
    data = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    data["network"]["features_per_stage"] = [4, 16]
    (folder / "model.json").write_text(json.dumps(data), encoding="utf-8")
    return folder / "model.json"


@pytest.mark.parametrize(("kind", "expected"), [
    ("pytorch_pickle", "this is a PyTorch pickle; LVT loads only safetensors + manifest"),
    ("bare_safetensors", "looked for"),
    ("shape_mismatch", "... and "),
])
def test_a_broken_model_file_is_bad_input(kind: str, expected: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    models = tmp_path / "models"
    models.mkdir()
    model = _tiny_model(models, kind)
    ct = _write(_ct_like(), tmp_path / "ct.nii.gz")
    _assert_clean_failure(tmp_path, ["segment", str(ct), "-o", str(tmp_path / "out"), "--model", str(model),
                                     "--device", "cpu", "--progress", "none"], capsys, str(model.parent), expected)


def _totalsegmentator_like(path: Path) -> tuple[Path, int]:
    """A label map of many structures: 5 is the liver (as in TotalSegmentator), 63 something else."""
    labels = np.zeros((10, 24, 24), dtype=np.uint8)
    labels[2:8, 4:14, 4:14] = 5
    labels[2:8, 16:22, 16:22] = 63
    return _write(labels, path, spacing=(2.0, 2.0, 2.0)), int((labels == 5).sum())


def test_value_map_can_make_every_other_value_background(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    labels, liver_voxels = _totalsegmentator_like(tmp_path / "total.nii.gz")
    out = tmp_path / "out"
    assert run(["measure", str(labels), "-o", str(out), "--value-map", "5=1,*=0", "--no-surfaces",
                "--progress", "none"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["liver"]["whole_volume_ml"] == pytest.approx(liver_voxels * 8 / 1000)
    assert report["vessels"]["volume_ml"] == 0 and report["tumors"]["count"] == 0
    assert "'5=1,*=0'" in subprocess.run([sys.executable, "-m", "lvt", "measure", "--help"], capture_output=True,
                                         text=True, timeout=60).stdout.replace("\n", " ").replace("  ", " ")


@pytest.mark.parametrize(("value_map", "expected"), [
    ("5=1", "label values 63"), ("5=1,*=2", "'*' may appear once, as '*=0'"), ("5=7,*=0", "0..3"),
    ("5:1", "--value-map must look like"),
])
def test_value_map_mistakes_are_bad_input(value_map: str, expected: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    labels, _ = _totalsegmentator_like(tmp_path / "total.nii.gz")
    _assert_clean_failure(tmp_path, ["measure", str(labels), "-o", str(tmp_path / "out"), "--value-map", value_map,
                                     "--progress", "none"], capsys, expected)


def test_the_command_exits_with_its_code_after_exit_handlers_with_its_output_flushed(tmp_path: Path) -> None:
    """`lvt` skips the interpreter's module teardown (0.6-0.9 s of torch), not the exit handlers or buffered output."""
    marker, absent = tmp_path / "exit_handler_ran", tmp_path / "absent.nrrd"
    program = (
        "import atexit, pathlib, sys\n"
        "atexit.register(pathlib.Path(sys.argv[1]).write_text, 'ran')\n"
        "print('buffered before the command')\n"  # stdout is a pipe here: block buffered
        "sys.argv = ['lvt', 'segment', sys.argv[2], '-o', sys.argv[3]]\n"
        "from lvt.cli.main import main\n"
        "main()\n"
        "print('after main')\n"
    )
    result = subprocess.run([sys.executable, "-c", program, str(marker), str(absent), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stdout == "buffered before the command\n"
    assert "absent.nrrd" in result.stderr
    assert marker.read_text() == "ran"
