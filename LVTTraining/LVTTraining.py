"""LVTTraining: a hidden module whose Logic trains an LVT model with the core's training loop.

Training is long and runs best from a terminal: ``LVTTrainingScripts/train.py`` (in the source tree
``LVTTraining/LVTTrainingScripts/train.py``) calls the same function, inside Slicer or in plain Python.
The core (``lvt``) sits in the LVTSegmentation module's folder, which Slicer puts on
``sys.path`` before loading this module.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

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

TINY_CONFIG = Path(__file__).resolve().parent / "Resources" / "Testing" / "tiny_phantom.yaml"


class LVTTraining(ScriptedLoadableModule):
    """Module metadata; hidden from the module list (a tool for scripts and developers)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LVT Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["LVTSegmentation"]
        self.parent.contributors = ["LVT Segmentation developers"]
        self.parent.helpText = _(
            "Trains LVT liver, vessel and tumor models from a YAML training config. Use "
            "<code>Slicer --no-main-window --python-script train.py -- CONFIG</code> or "
            "<code>LVTTrainingLogic().train(config)</code>; the written model (.json + .safetensors) can be "
            "chosen as the model file in LVT Segmentation."
        )
        self.parent.acknowledgementText = _(
            "Method: Østmo et al., NLDL 2026 (masked multi-label loss for partially labelled data)."
        )
        self.parent.hidden = True


class LVTTrainingWidget(ScriptedLoadableModuleWidget):
    """Only a pointer to the command line: training does not belong in an interactive panel."""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        label = qt.QLabel(_("Train from the command line: Slicer --no-main-window --python-script train.py -- CONFIG"))
        label.wordWrap = True
        self.layout.addWidget(label)
        self.layout.addStretch(1)


class LVTTrainingLogic(ScriptedLoadableModuleLogic):
    """Runs ``lvt train`` in this process (blocking) and returns its exit status."""

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
        arguments = [str(configPath), "--device", device, "--progress", progress]
        if outputDir is not None:
            arguments += ["--output", str(outputDir)]
        if steps is not None:
            arguments += ["--steps", str(steps)]
        if resume:
            arguments.append("--resume")
        return arguments + list(extraArguments)

    def train(self, configPath: Path | str, **options) -> int:
        """Train with the core; ``options`` are those of :meth:`trainingArguments`.

        Returns:
            0 when the model was written, 2 for a bad config or data, 1 for another failure,
            130 when cancelled.
        """
        from lvt.cli.main import run_training_cli

        return run_training_cli(self.trainingArguments(configPath, **options))


class LVTTrainingTest(ScriptedLoadableModuleTest):
    """A two-step training on one coarse phantom: the loop runs and writes a loadable model."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_tiny_training_writes_a_model()

    def test_tiny_training_writes_a_model(self) -> None:
        from LVTSegmentation import LVTSegmentationLogic

        self.assertTrue(LVTSegmentationLogic().installDependencies(askConfirmation=False))
        outputDir = Path(tempfile.mkdtemp(prefix="LVTTrainingTest-", dir=slicer.app.temporaryPath))
        try:
            self.delayDisplay("Training two steps on a phantom")
            status = LVTTrainingLogic().train(TINY_CONFIG, outputDir=outputDir, device="cpu")
            self.assertEqual(status, 0)
            manifest = json.loads((outputDir / "final.json").read_text(encoding="utf-8"))
            self.assertEqual(manifest["name"], "lvt_tiny_test")
            self.assertTrue((outputDir / "final.safetensors").is_file())
        finally:
            shutil.rmtree(outputDir, ignore_errors=True)
        self.delayDisplay("Test passed")
