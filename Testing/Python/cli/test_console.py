"""The terminal side of `lvt`: the tqdm bar, the JSON lines the Slicer module reads, signals as cancel, fast help."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO, load_module_file

from lvt.cli.console import cancel_on_signals, make_progress
from lvt.cli.main import COMMANDS, EXIT_BAD_INPUT, report_done, report_failure, run
from lvt.progress import Progress

PROCESS_FILE = REPO / "LVTSegmentation" / "LVTSegmentationLib" / "process.py"


@pytest.fixture(scope="module")
def slicer_process() -> ModuleType:
    """The Slicer module's reader of `--progress json` (Qt-free), loaded alone: the other side of the contract."""
    return load_module_file(PROCESS_FILE, "lvt_slicer_process")


def test_bar_goes_to_stderr_with_stage_and_overall_fraction(capsys: pytest.CaptureFixture) -> None:
    progress = make_progress("bar")
    assert progress is not None
    progress(Progress("read", 1, 1, "ct.nii.gz"))
    progress(Progress("inference", 5, 10, "window 5 of 10"))  # 0.05 read + 0.05 resample + 0.7 * 0.5
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "inference" in captured.err and "45.0%" in captured.err and "window 5 of 10" in captured.err
    progress(Progress("report", 1, 1, "done"))  # the job is complete: the bar ends its line
    assert capsys.readouterr().err.endswith("\n")


def test_an_error_starts_on_its_own_line_after_an_unfinished_bar(capsys: pytest.CaptureFixture) -> None:
    progress = make_progress("bar")
    assert progress is not None
    progress(Progress("inference", 1, 10, "window 1 of 10"))
    report_failure(argparse.Namespace(progress="bar"), "cancelled; nothing was written", 130)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "lvt: error: cancelled; nothing was written"
    assert "inference" in lines[-2]


def test_json_lines_carry_exactly_what_the_slicer_module_reads(
    slicer_process: ModuleType, capsys: pytest.CaptureFixture
) -> None:
    progress = make_progress("json")
    assert progress is not None
    progress(Progress("inference", 5, 10, "window 5 of 10"))
    progress(Progress("train", 3, 4, "step 3"))
    report_done(argparse.Namespace(progress="json"), Path("out"))
    report_failure(argparse.Namespace(progress="json"), "in.nrrd: does not exist", EXIT_BAD_INPUT)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 4 and "lvt: error: in.nrrd: does not exist" in captured.err
    fields = {field.name for field in dataclasses.fields(slicer_process.ProgressEvent)}
    for line in lines[:2]:
        assert set(json.loads(line)) == {"event", *fields}
    assert [slicer_process.parse_line(line) for line in lines] == [
        slicer_process.ProgressEvent("inference", 5, 10, 0.45, "window 5 of 10"),
        slicer_process.ProgressEvent("train", 3, 4, 0.75, "step 3"),
        slicer_process.DoneEvent("out"),
        slicer_process.ErrorEvent("in.nrrd: does not exist"),
    ]


def test_progress_none_is_silent() -> None:
    assert make_progress("none") is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_cancel_the_job_while_it_runs(signum: int) -> None:
    before = signal.getsignal(signum)
    with cancel_on_signals() as cancel:
        os.kill(os.getpid(), signum)
        assert cancel.wait(timeout=5)
    assert signal.getsignal(signum) is before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_module_keeps_the_contract(command: str) -> None:
    module = importlib.import_module(COMMANDS[command])
    assert isinstance(module.HELP, str) and module.HELP
    assert callable(module.add_arguments) and callable(module.run)


def test_help_shows_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        run(["segment", "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert "(default: 0.05)" in out and "(default: bar)" in out and "(default: auto)" in out
    assert "(default: None)" not in out and "(default: False)" not in out


@pytest.mark.parametrize("argv", [["--help"], ["segment", "--output"], ["train"]])
def test_help_and_option_errors_do_not_load_torch(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "lvt", *argv],
                            capture_output=True, text=True, timeout=120, cwd=REPO / "LVTSegmentation")
    assert result.returncode == (0 if argv == ["--help"] else EXIT_BAD_INPUT), result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert [name for name in imported if name.split(".")[0] == "torch"] == []
