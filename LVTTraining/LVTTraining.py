"""LVTTraining: a hidden module that trains LVT models with the core's training loop, never in Slicer's GUI process.

The panel (open it with ``slicer.util.selectModule("LVTTraining")``) runs ``PythonSlicer -m lvt train
CONFIG --progress json`` as a child process through LVT Segmentation's process machinery: a run of
hours leaves Slicer usable, a crash of torch ends only the child, and Cancel stops the run at its next
step with a resume point. The Qt-free part (arguments, progress, how a run ended) is
``LVTTrainingLib``, tested with pytest. Scripts can still train in their own process with
:meth:`LVTTrainingLogic.train`, or from a terminal with ``LVTTrainingScripts/train.py`` (in the source
tree ``LVTTraining/LVTTrainingScripts/train.py``). The core (``lvt``) sits in the LVTSegmentation
module's folder, which Slicer puts on ``sys.path`` before loading this module.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import LVTSegmentationLib
import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

# Set in a Slicer whose Python is too old for the core (LVTSegmentationLib.compatibility): the panel then
# only shows this message, and LVTTrainingLib (which needs the core's process machinery) is not imported.
PYTHON_PROBLEM = LVTSegmentationLib.unsupported_python_message()
if not PYTHON_PROBLEM:
    import LVTTrainingLib as trainingLib

TINY_CONFIG = Path(__file__).resolve().parent / "Resources" / "Testing" / "tiny_phantom.yaml"
POLL_INTERVAL_MS = 500
SHUTDOWN_GRACE_S = 10.0  # Slicer is closing: how long a run gets to save its resume point


class LVTTraining(ScriptedLoadableModule):
    """Module metadata; hidden from the module list (a tool for developers and scripts)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LVT Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["LVTSegmentation"]
        self.parent.contributors = ["LVT Segmentation developers"]
        self.parent.helpText = _(
            "Trains LVT liver, vessel and tumor models from a YAML training config, in a separate process "
            "(Slicer stays usable; Cancel keeps a resume point). Scripts: "
            "<code>LVTTrainingLogic().startTraining(config)</code> or <code>LVTTrainingLogic().train(config)</code>; "
            "terminal: <code>Slicer --no-main-window --python-script train.py -- CONFIG</code>. The written model "
            "(.json + .safetensors) can be chosen as the model file in LVT Segmentation."
        )
        self.parent.acknowledgementText = _(
            "Method: Østmo et al., NLDL 2026 (masked multi-label loss for partially labelled data)."
        )
        self.parent.hidden = True


class LVTTrainingWidget(ScriptedLoadableModuleWidget):
    """The panel: config, output folder, steps, device, Start/Cancel, progress and the run's log."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self._run: trainingLib.TrainingRun | None = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if PYTHON_PROBLEM:
            label = qt.QLabel(PYTHON_PROBLEM)
            label.wordWrap = True
            self.layout.addWidget(label)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LVTTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LVTTrainingLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)
        self.ui.startButton.connect("clicked(bool)", self.onStartButton)
        self.ui.configPathLineEdit.connect("currentPathChanged(QString)", self._updateGui)
        self.ui.progressBar.hide()
        self._updateGui()

    def cleanup(self) -> None:
        """Slicer is closing: stop a running training; it saves a resume point unless it does not stop in time."""
        if self._timer is not None:
            self._timer.stop()
        run, self._run = self._run, None
        if run is not None and run.exit is None:
            run.cancel(SHUTDOWN_GRACE_S)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.wait(2 * SHUTDOWN_GRACE_S)  # the process machinery kills the run after the grace period

    def onReload(self) -> None:
        """Reload the Lib too (importlib, not the removed ``imp``), then the module."""
        importlib.reload(importlib.import_module("LVTTrainingLib.training_process"))
        importlib.reload(trainingLib)
        ScriptedLoadableModuleWidget.onReload(self)

    def _updateGui(self, *_args) -> None:
        running = self._run is not None
        self.ui.startButton.text = _("Cancel") if running else _("Start training")
        self.ui.startButton.enabled = running or bool(self.ui.configPathLineEdit.currentPath)
        for widget in (self.ui.configPathLineEdit, self.ui.outputPathLineEdit, self.ui.stepsSpinBox,
                       self.ui.deviceComboBox, self.ui.resumeCheckBox):
            widget.enabled = not running

    def onStartButton(self) -> None:
        if self._run is not None:
            self.ui.statusLabel.text = _("Cancelling: the run saves a resume point and stops at its next step...")
            self.ui.startButton.enabled = False
            self._run.cancel()
            return
        if not self.logic.installDependencies():
            return
        outputPath = self.ui.outputPathLineEdit.currentPath
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            self._run = self.logic.startTraining(
                self.ui.configPathLineEdit.currentPath,
                outputDir=outputPath or None,
                steps=self.ui.stepsSpinBox.value or None,
                device=self.ui.deviceComboBox.currentText,
                resume=self.ui.resumeCheckBox.checked,
            )
        self.ui.configPathLineEdit.addCurrentPathToHistory()
        if outputPath:
            self.ui.outputPathLineEdit.addCurrentPathToHistory()
        self.ui.logTextEdit.clear()
        self.ui.logTextEdit.appendPlainText(" ".join(self._run.command))
        self.ui.statusLabel.text = _("Training into {folder}").format(folder=self._run.output_dir)
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.value = 0
        self.ui.progressBar.setFormat(_("starting"))
        self.ui.progressBar.show()
        self._timer.start()
        self._updateGui()

    def onPoll(self) -> None:
        """Take in what the run said (called by the timer on the GUI thread; never blocks)."""
        run = self._run
        if run is None:
            self._timer.stop()
            return
        for line in run.poll():
            self.ui.logTextEdit.appendPlainText(line)
        if run.progress is not None:
            if run.progress.percent is not None:
                self.ui.progressBar.value = run.progress.percent
            self.ui.progressBar.setFormat(run.progress.text())
        if run.exit is not None:
            self._finish(run)

    def _finish(self, run: trainingLib.TrainingRun) -> None:
        self._timer.stop()
        self._run = None
        self.ui.progressBar.hide()
        self.ui.statusLabel.text = run.summary()
        self._updateGui()
        if not run.exit.succeeded and not run.exit.cancelled:
            slicer.util.errorDisplay(run.summary(), windowTitle=_("LVT Training"))


class LVTTrainingLogic(ScriptedLoadableModuleLogic):
    """Trains in a child process (:meth:`startTraining`) or, for scripts, in this process (:meth:`train`)."""

    @staticmethod
    def trainingArguments(
        configPath: Path | str,
        outputDir: Path | str | None = None,
        steps: int | None = None,
        device: str = "auto",
        resume: bool = False,
        progress: str = "none",
        extraArguments: Sequence[str] = (),
    ) -> list[str]:
        """The ``lvt train`` argument list for these settings (None keeps the config's value)."""
        return trainingLib.training_arguments(configPath, outputDir, steps, device, resume, progress, extraArguments)

    @staticmethod
    def installDependencies(askConfirmation: bool = True) -> bool:
        """The core's packages, installed as LVT Segmentation installs them; False when the user declined."""
        from LVTSegmentation import LVTSegmentationLogic

        return LVTSegmentationLogic().installDependencies(askConfirmation=askConfirmation)

    @staticmethod
    def startTraining(
        configPath: Path | str,
        outputDir: Path | str | None = None,
        steps: int | None = None,
        device: str = "auto",
        resume: bool = False,
    ) -> trainingLib.TrainingRun:
        """Start ``PythonSlicer -m lvt train`` as a child process and return the run (poll or wait it).

        Raises:
            lvt.errors.InputError: the config is missing or invalid (checked here, before the child starts).
        """
        from LVTSegmentation import LVTSegmentationLogic

        segmentation = LVTSegmentationLogic()
        return trainingLib.start_training(
            segmentation.pythonExecutable(), configPath, env=segmentation.childEnvironment(), output_dir=outputDir,
            steps=steps, device=device, resume=resume,
        )

    def train(self, configPath: Path | str, **options) -> int:
        """Train with the core in this process (blocking: for scripts, not the GUI).

        ``options`` are those of :meth:`trainingArguments`.

        Returns:
            0 when the model was written, 2 for a bad config or data, 1 for another failure,
            130 when cancelled.
        """
        from lvt.cli.main import run_training_cli

        return run_training_cli(self.trainingArguments(configPath, **options))


class LVTTrainingTest(ScriptedLoadableModuleTest):
    """Two-step trainings on one coarse phantom, in a child process (the panel's way) and in this process."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_tiny_training_in_a_child_process()
        self.test_tiny_training_writes_a_model()

    def _assertTinyModel(self, outputDir: Path) -> None:
        manifest = json.loads((outputDir / "final.json").read_text(encoding="utf-8"))
        self.assertEqual(manifest["name"], "lvt_tiny_test")
        self.assertTrue((outputDir / "final.safetensors").is_file())

    def test_tiny_training_in_a_child_process(self) -> None:
        self.assertTrue(LVTTrainingLogic.installDependencies(askConfirmation=False))
        outputDir = Path(tempfile.mkdtemp(prefix="LVTTrainingTest-", dir=slicer.app.temporaryPath)) / "run"
        try:
            self.delayDisplay("Training two steps on a phantom in PythonSlicer")
            run = LVTTrainingLogic.startTraining(TINY_CONFIG, outputDir=outputDir, device="cpu")
            self.assertTrue(run.wait(600).succeeded, run.summary())
            self.assertEqual((run.progress.stage, run.progress.done), ("train", 2))
            self.assertEqual(run.model, outputDir / "final.json")
            self._assertTinyModel(outputDir)
        finally:
            shutil.rmtree(outputDir.parent, ignore_errors=True)
        self.delayDisplay("Test passed")

    def test_tiny_training_writes_a_model(self) -> None:
        self.assertTrue(LVTTrainingLogic.installDependencies(askConfirmation=False))
        outputDir = Path(tempfile.mkdtemp(prefix="LVTTrainingTest-", dir=slicer.app.temporaryPath))
        try:
            self.delayDisplay("Training two steps on a phantom in Slicer's process")
            status = LVTTrainingLogic().train(TINY_CONFIG, outputDir=outputDir, device="cpu")
            self.assertEqual(status, 0)
            self._assertTinyModel(outputDir)
        finally:
            shutil.rmtree(outputDir, ignore_errors=True)
        self.delayDisplay("Test passed")
