"""LVTTraining's Qt-free logic (LVTTrainingLib): ``lvt train`` as a real child process, as the panel runs it.

The child is the real command line on the module's tiny phantom config (LVTTraining/Resources/Testing):
it reports progress as JSON lines, writes its model, and, when cancelled, stops at its next step with
a resume point that ``--resume`` continues from. Nothing of ``slicer`` or of the training is faked.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import xml.etree.ElementTree as ElementTree

import pytest
from conftest import REPO

pytest.importorskip("slicer", reason="LVTSegmentationLib needs the slicer-core wheel (pip install slicer-core)")
pytest.importorskip("psutil", reason="cancelling ends the process tree with psutil")
sys.path[:0] = [str(REPO / "LVTSegmentation"), str(REPO / "LVTTraining")]

from LVTSegmentationLib.process import EXIT_CANCELLED, ProgressEvent, child_environment  # noqa: E402
from LVTTrainingLib import TrainingProgress, start_training, train_command, training_arguments  # noqa: E402

from lvt.cli.main import build_parser  # noqa: E402
from lvt.errors import InputError  # noqa: E402

TINY_CONFIG = REPO / "LVTTraining" / "Resources" / "Testing" / "tiny_phantom.yaml"
UI_FILE = REPO / "LVTTraining" / "Resources" / "UI" / "LVTTraining.ui"
TIMEOUT_S = 600


def _env() -> dict[str, str]:
    return {**child_environment(os.environ, REPO / "LVTSegmentation"), "OMP_NUM_THREADS": "1"}


def test_train_command_is_what_the_real_lvt_parser_expects(tmp_path):
    command = train_command("/usr/bin/python3", TINY_CONFIG, output_dir=tmp_path / "run", steps=7, device="cpu",
                            resume=True)
    assert command[:4] == ["/usr/bin/python3", "-m", "lvt", "train"]
    args = build_parser(["train"]).parse_args(command[3:])
    assert (args.config, args.output, args.steps, args.device) == (TINY_CONFIG, tmp_path / "run", 7, "cpu")
    assert args.resume and args.progress == "json"
    defaults = build_parser(["train"]).parse_args(["train", *training_arguments(TINY_CONFIG)])
    assert (defaults.output, defaults.steps, defaults.resume, defaults.progress) == (None, None, False, "none")


def test_progress_of_each_training_stage_becomes_a_bar_value_and_a_line():
    step = TrainingProgress.from_event(ProgressEvent("train", 30, 120, 0.25, "loss 0.4312 | 2.50 it/s | ETA 0m36s"))
    assert (step.loss, step.eta, step.percent) == (0.4312, "0m36s", 25)
    assert step.text() == "step 30 of 120, loss 0.4312, 0m36s left"
    caching = TrainingProgress.from_event(ProgressEvent("preprocess", 1, 4, 0.25, "case_001"))
    assert (caching.percent, caching.loss, caching.text()) == (25, None, "preparing data: 1 of 4 case(s)")
    validating = TrainingProgress.from_event(ProgressEvent("validate", 0, 3, 0.0, "validating at step 120"))
    assert validating.percent is None  # the bar keeps the training's share instead of dropping to 0
    assert validating.text() == "validating at step 120"


def test_a_bad_config_is_refused_before_any_process_starts(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(TINY_CONFIG.read_text(encoding="utf-8") + "feature_per_stage: [4]\n", encoding="utf-8")
    with pytest.raises(InputError, match="feature_per_stage"):
        start_training(sys.executable, config, env=_env(), output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_training_child_reports_progress_and_writes_its_model(tmp_path):
    run = start_training(sys.executable, TINY_CONFIG, env=_env(), output_dir=tmp_path / "run", steps=2, device="cpu")
    exit_event = run.wait(TIMEOUT_S)

    assert exit_event.succeeded, run.summary()
    assert run.progress is not None and (run.progress.stage, run.progress.done, run.progress.total) == ("train", 2, 2)
    assert run.progress.loss is not None and run.progress.loss > 0  # the loop's step message was understood
    assert run.model == tmp_path / "run" / "final.json"
    assert json.loads(run.model.read_text(encoding="utf-8"))["name"] == "lvt_tiny_test"
    assert str(run.model) in run.summary() and run.errors == []


def test_cancel_stops_the_child_with_a_resume_point_that_resume_continues(tmp_path):
    output = tmp_path / "run"
    run = start_training(sys.executable, TINY_CONFIG, env=_env(), output_dir=output, steps=100_000, device="cpu")
    lines: list[str] = []
    deadline = time.monotonic() + TIMEOUT_S
    while not (run.progress and run.progress.stage == "train") and run.exit is None and time.monotonic() < deadline:
        lines += run.poll()
        time.sleep(0.1)
    assert run.progress is not None and run.progress.stage == "train", lines
    assert "preparing data: 0 of 1 case(s)" in lines  # one line per stage, not one per step

    run.cancel()  # returns at once: the panel's GUI thread must not wait for the child
    exit_event = run.wait(TIMEOUT_S)

    assert exit_event.cancelled and exit_event.returncode == EXIT_CANCELLED
    assert not run.process.is_running and not (output / "final.json").exists()
    resume = run.resume_point()
    assert resume is not None and "Resume" in run.summary()
    stopped_at = json.loads((resume / "state.json").read_text(encoding="utf-8"))["step"]
    assert stopped_at >= 1

    again = start_training(sys.executable, TINY_CONFIG, env=_env(), output_dir=output, steps=stopped_at + 1,
                           device="cpu", resume=True)
    assert again.wait(TIMEOUT_S).succeeded, again.summary()
    assert again.progress is not None and again.progress.done == stopped_at + 1
    assert again.model == output / "final.json"


def test_the_panel_uses_only_widgets_its_ui_file_has():
    """A misspelt widget name would fail only when a user opens the panel in Slicer."""
    root = ElementTree.parse(UI_FILE).getroot()
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    assert root.findtext("class") == "LVTTraining" and root.find("widget").get("class") == "qMRMLWidget"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    assert {cls for cls in widgets.values() if not cls.startswith("Q")} <= declared
    used = set(re.findall(r"self\.ui\.(\w+)", (REPO / "LVTTraining" / "LVTTraining.py").read_text(encoding="utf-8")))
    assert used and sorted(used - set(widgets)) == []
