"""`lvt segment` over a cohort, for real: tiny phantom CTs and a tiny trained model, each case a few seconds.

Resumable (complete cases skipped, partial ones redone), a bad case fails alone, shards split the
work, N worker processes give the labels of one, and Ctrl-C stops cleanly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lvt.cli.main import run
from lvt.io import read_label_image, write_image
from lvt.phantom import PhantomConfig, make_phantom
from lvt.segment.cases import find_cohort
from lvt.segment.cohort import MARKER_NAME, CohortSettings, run_cohort
from lvt.segment.cohort_manifest import read_cohort_status
from lvt.segment.pipeline import SegmentOptions


@dataclass(frozen=True)
class FirstRun:
    """A cohort of two phantom CTs and one corrupt file, segmented once with one worker."""

    inputs: Path
    output: Path
    model: Path
    code: int
    err: str


def _cohort_args(source: Path, output: Path, model: Path, *extra: str) -> list[str]:
    return ["segment", str(source), "-o", str(output), "--model", str(model), "--device", "cpu", "--no-surfaces",
            "--progress", "none", *extra]


def _manifest(path: Path) -> dict[str, dict]:
    return {case["case_id"]: case for case in json.loads(path.read_text(encoding="utf-8"))["cases"]}


def _labels(folder: Path) -> np.ndarray:
    return read_label_image(folder / "labels.nii.gz").array


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, tiny_trained_model: Path) -> FirstRun:
    inputs = tmp_path_factory.mktemp("cohort") / "cts"
    inputs.mkdir()
    for seed in (1, 2):
        phantom = make_phantom(PhantomConfig(seed=seed, spacing_mm=(6.0, 6.0, 6.0), n_tumors=(1, 1)))
        write_image(phantom.image, inputs / f"case{seed}.nii.gz")
    (inputs / "bad.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    output = inputs.parent / "out"
    capture = subprocess.run([sys.executable, "-m", "lvt", *_cohort_args(inputs, output, tiny_trained_model)],
                             capture_output=True, text=True, timeout=300)
    return FirstRun(inputs, output, tiny_trained_model, capture.returncode, capture.stderr)


def test_a_corrupt_case_fails_alone_and_the_manifest_names_it(first_run: FirstRun) -> None:
    assert first_run.code == 1, first_run.err
    assert first_run.err.startswith("lvt: error: 1 of 3 cases failed (bad: ") and first_run.err.count("\n") == 1
    cases = _manifest(first_run.output / "cohort.json")
    assert [cases[name]["status"] for name in ("bad", "case1", "case2")] == ["failed", "done", "done"]
    assert "bad.nii.gz" in cases["bad"]["error"] and "\n" not in cases["bad"]["error"]
    assert cases["case1"]["seconds"] > 0 and cases["case1"]["output"] == str(first_run.output / "case1")
    assert not (first_run.output / "bad").exists()
    for name in ("case1", "case2"):
        marker = json.loads((first_run.output / name / MARKER_NAME).read_text(encoding="utf-8"))
        assert {"labels.nii.gz", "report.json", "segmentation.seg.nrrd", "report.html"} <= set(marker["files"])
        assert _labels(first_run.output / name).any()


def test_resume_skips_complete_cases_and_redoes_partial_ones(first_run: FirstRun, tmp_path: Path) -> None:
    output = tmp_path / "out"
    shutil.copytree(first_run.output, output)
    args = _cohort_args(first_run.inputs, output, first_run.model)
    before = {path: path.stat().st_mtime_ns for path in output.rglob("*") if path.is_file()}
    assert run(args) == 1  # the corrupt case fails again
    cases = _manifest(output / "cohort.json")
    assert [cases[name]["status"] for name in ("bad", "case1", "case2")] == ["failed", "skipped", "skipped"]
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in before.items() if path.name != "cohort.json")

    (output / "case1" / "report.html").unlink()  # a file gone: not complete
    (output / "case2" / MARKER_NAME).unlink()  # killed after the folder was published, before its marker
    leftover = output / ".case1.partial-k1ll3d"  # the staging folder of a run killed outright
    (leftover / "views").mkdir(parents=True)
    assert run(args) == 1
    cases = _manifest(output / "cohort.json")
    assert [cases[name]["status"] for name in ("case1", "case2")] == ["done", "done"]
    assert (output / "case1" / "report.html").is_file() and (output / "case2" / MARKER_NAME).is_file()
    assert not leftover.exists()
    assert np.array_equal(_labels(output / "case1"), _labels(first_run.output / "case1"))


def test_shards_split_the_cohort_and_their_manifests_merge(first_run: FirstRun, tmp_path: Path) -> None:
    table = tmp_path / "cohort.csv"
    table.write_text(f"image,case_id\n{first_run.inputs / 'case1.nii.gz'},one\n"
                     f"{first_run.inputs / 'case2.nii.gz'},two\n", encoding="utf-8")
    output = tmp_path / "out"
    for index in (0, 1):
        assert run(_cohort_args(table, output, first_run.model, "--shard", f"{index}/2")) == 0
    shards = [_manifest(output / f"cohort-shard-{index}-of-2.json") for index in (0, 1)]
    assert [list(shard) for shard in shards] == [["one"], ["two"]]
    assert {case: entry["status"] for case, entry in read_cohort_status(output).items()} == {"one": "done",
                                                                                          "two": "done"}
    assert np.array_equal(_labels(output / "two"), _labels(first_run.output / "case2"))


@pytest.mark.slow  # spawns worker processes that import torch
def test_two_workers_give_the_labels_of_one(first_run: FirstRun, tmp_path: Path) -> None:
    output = tmp_path / "out"
    glob = first_run.inputs / "case*.nii.gz"
    assert run(_cohort_args(glob, output, first_run.model, "--workers", "2")) == 0
    assert {case: entry["status"] for case, entry in _manifest(output / "cohort.json").items()} == {
        "case1": "done", "case2": "done"}
    for name in ("case1", "case2"):
        assert np.array_equal(_labels(output / name), _labels(first_run.output / name))


def test_cancel_keeps_finished_cases_and_marks_the_rest_pending(first_run: FirstRun, tmp_path: Path) -> None:
    output = tmp_path / "out"
    shutil.copytree(first_run.output / "case1", output / "case1")
    cases = [case for case in find_cohort(first_run.inputs, output) if case.case_id != "bad"]
    cancel = threading.Event()
    seen = []

    def on_case(result: object, done: int, total: int) -> None:
        seen.append((result.case_id, result.status, done, total))  # type: ignore[attr-defined]
        cancel.set()  # Ctrl-C right after the first case

    settings = CohortSettings(output, SegmentOptions(model_path=first_run.model, device="cpu", write_surfaces=False))
    outcome = run_cohort(cases, settings, on_case=on_case, cancel=cancel)
    assert outcome.cancelled and seen == [("case1", "skipped", 1, 2)]
    assert {case: entry["status"] for case, entry in _manifest(output / "cohort.json").items()} == {
        "case1": "skipped", "case2": "pending"}
    assert sorted(path.name for path in output.iterdir()) == ["case1", "cohort.json"]


@pytest.mark.slow  # spawns worker processes that import torch
def test_ctrl_c_stops_the_workers_cleanly(first_run: FirstRun, tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal sends it: exit 130, no partial output anywhere."""
    output = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "lvt", *_cohort_args(first_run.inputs / "case*.nii.gz", output,
                                                                        first_run.model, "--workers", "2")],
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not any(path.name.startswith(".case") for path in output.glob(".*")):  # a worker is writing a case
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "lvt: error: cancelled: " in err and "pending" in err
    entries = _manifest(output / "cohort.json").values()
    assert {entry["status"] for entry in entries} <= {"done", "pending"}
    assert any(entry["error"] == "cancelled while running; nothing of it was kept" for entry in entries)
    assert [path.name for path in output.iterdir() if path.name.startswith(".")] == []


def test_a_model_that_cannot_load_stops_the_cohort_with_exit_2(first_run: FirstRun, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken.json"  # there, but no model (a missing one is refused before any case is listed)
    broken.write_text("{")
    code = run(_cohort_args(first_run.inputs, tmp_path / "out", broken))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lvt: error: ") and "broken.json" in err
    assert {entry["status"] for entry in _manifest(tmp_path / "out" / "cohort.json").values()} == {"pending"}


def test_cohort_options_are_refused_for_one_ct(first_run: FirstRun, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    ct = first_run.inputs / "case1.nii.gz"
    assert run(_cohort_args(ct, tmp_path / "out", first_run.model, "--shard", "0/2")) == 2
    assert "--shard and --workers are for a cohort" in capsys.readouterr().err
    assert run(_cohort_args(first_run.inputs, tmp_path / "out", first_run.model, "--shard", "2/2")) == 2
    assert "K counts from 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
