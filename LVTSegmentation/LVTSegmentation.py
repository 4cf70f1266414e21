"""LVT Segmentation: liver, intrahepatic vessels and liver tumors in contrast-enhanced CT, for surgical planning.

The module is a thin door into the Slicer-free core (``lvt``, beside this file). Apply writes the CT to
a temporary NRRD and runs ``PythonSlicer -m lvt segment ... --progress json`` in a child process
(the GUI stays responsive, Cancel ends the process tree, a crash of torch ends only the child); the
results are loaded by the Qt-free ``LVTSegmentationLib``. Recompute (``lvt measure``) and Compare
with prior study (``lvt compare``) run through the same machinery. Only this file uses Qt.

This file is written for Python 3.9 too (Testing/Python/slicer_module/test_compatibility.py checks it): in a
Slicer older than 5.10 the module loads and says which Slicer it needs instead of failing with a
traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import ctk
import LVTSegmentationLib as lib
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import (
    Choice,
    GuiConnector,
    WithinRange,
    parameterNodeGuiConnector,
    parameterNodeWrapper,
    unannotatedType,
)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODEL_BUNDLED = "Bundled LVT model"
MODEL_FILE = "Model file"
POLL_INTERVAL_MS = 200
TORCH_REQUIREMENT = ">=2.2"
_LIB_SUBMODULES = (
    "compatibility", "environment", "process", "files", "hierarchy", "measurements", "planning", "segmentation",
    "standard_names", "results", "comparison", "panel", "sample_data",
)
# Set in a Slicer whose Python is too old for the core: the module then only shows this message.
PYTHON_PROBLEM = lib.unsupported_python_message()


class LVTSegmentation(ScriptedLoadableModule):
    """Module metadata (see the LVTSegmentation.s4ext and CMakeLists.txt of the extension)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LVT Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LVT Segmentation developers"]
        self.parent.helpText = _(
            "Segments the liver, the intrahepatic vessels and liver tumors in a contrast-enhanced CT, "
            "shows them in 3D, and measures liver volume, tumor burden and each lesion's longest axial "
            "diameter. Edit the result in the Segment Editor and press <i>Recompute measurements</i>. "
            "Results are for research and planning support; review every segmentation."
        )
        self.parent.acknowledgementText = _(
            "Method: Østmo et al., <i>Towards clinical application of liver, vessel, and tumor segmentation "
            "using partially labeled data</i>, NLDL 2026 (PMLR 307). Process handling follows the "
            "MONAIAuto3DSeg and TotalSegmentator extensions."
        )
        if PYTHON_PROBLEM:
            self.parent.helpText = PYTHON_PROBLEM
            logging.error(PYTHON_PROBLEM)
        else:
            slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Offer the phantom CT in the Sample Data module; it is made on this computer when first chosen."""
    import SampleData

    cached = Path(slicer.mrmlScene.GetCacheManager().GetRemoteCacheDirectory()) / lib.sample_file_name()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=lib.SAMPLE_CATEGORY,
        sampleName=lib.SAMPLE_NAME,
        uris=cached.as_uri(),  # the file itself once made (so SampleData.downloadSample finds it then)
        fileNames=cached.name,
        nodeNames=lib.SAMPLE_NAME,
        thumbnailFileName=str(Path(__file__).resolve().parent / "Resources" / "Icons" / "LVTSegmentation.png"),
        loadFileType="VolumeFile",
        customDownloader=lambda source: LVTSegmentationLogic.loadSampleCT(),
    )


@parameterNodeWrapper
class LVTSegmentationParameterNode:
    """The panel's state, kept in the scene so it is restored when the scene is reloaded."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelChoice: Annotated[str, Choice([MODEL_BUNDLED, MODEL_FILE])] = MODEL_BUNDLED
    modelPath: str = ""
    useCPU: bool = False
    useTTA: bool = False
    smoothSurfaces: bool = True
    threads: Annotated[int, WithinRange(0, 256)] = 0
    exportFolder: Path
    surfaceFormat: Annotated[str, Choice(["STL", "OBJ"])] = "STL"
    priorVolume: vtkMRMLScalarVolumeNode
    priorResultFolder: str = ""
    useStandardNames: bool = False


@parameterNodeGuiConnector
class PathLineEditToTextConnector(GuiConnector):
    """A ctkPathLineEdit bound to a ``str`` parameter, so that an empty field stays empty.

    Slicer's own connector binds ``pathlib.Path``, which turns an empty field into Path(".") and
    then shows ".". The conversion is ``lib.path_text`` (tested without Qt).
    """

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        return isinstance(widget, ctk.ctkPathLineEdit) and unannotatedType(datatype) is str

    @staticmethod
    def create(widget, datatype):
        if not PathLineEditToTextConnector.canRepresent(widget, datatype):
            return None
        return PathLineEditToTextConnector(widget)

    def __init__(self, widget) -> None:
        super().__init__()
        self._widget = widget

    def _connect(self) -> None:
        self._widget.currentPathChanged.connect(self.changed)

    def _disconnect(self) -> None:
        self._widget.currentPathChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self) -> str:
        return lib.path_text(self._widget.currentPath)

    def write(self, value: str) -> None:
        self._widget.currentPath = lib.path_text(value)


@dataclass
class LVTJob:
    """One run of the core (``segment``, ``measure`` or ``compare``) and what it needs when it ends."""

    kind: str
    process: lib.BackgroundProcess
    workDir: Path
    outputDir: Path
    segmentationNode: vtkMRMLSegmentationNode | None
    volumeNode: vtkMRMLScalarVolumeNode | None
    smoothSurfaces: bool = True
    standardNames: bool = False
    errors: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    stage: str | None = None


class LVTSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, Apply/Cancel with progress, results tables, recompute and export."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job: LVTJob | None = None
        self._timer = None
        self._modelCard: tuple[Path | None, str] = (None, "")

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if PYTHON_PROBLEM:
            label = qt.QLabel(PYTHON_PROBLEM)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LVTSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LVTSegmentationLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollJob)
        self.ui.progressBar.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.recomputeButton.connect("clicked(bool)", self.onRecomputeButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicomButton)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.lesionTableView.connect("clicked(QModelIndex)", self.onLesionClicked)

        self.initializeParameterNode()
        self._updateEnvironmentLabel()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self._abandonJob()
        self.removeObservers()

    def enter(self) -> None:
        if not PYTHON_PROBLEM:
            self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self._abandonJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the Lib's submodules too (importlib, not the removed ``imp``), then the module."""
        for name in _LIB_SUBMODULES:
            importlib.reload(importlib.import_module(f"LVTSegmentationLib.{name}"))
        importlib.reload(lib)
        ScriptedLoadableModuleWidget.onReload(self)

    # --- parameter node ------------------------------------------------------------------------

    def initializeParameterNode(self) -> None:
        """Select the parameter node and preselect the first CT, as a user expects after loading one."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume
        if self._parameterNode.exportFolder == Path():
            self._parameterNode.exportFolder = Path.home()

    def setParameterNode(self, inputParameterNode: LVTSegmentationParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    def _updateGui(self, caller=None, event=None) -> None:
        """Enable what can be done now and show the output segmentation's tables."""
        p = self._parameterNode
        if p is None:
            return
        busy = self._job is not None
        self.ui.modelPathLineEdit.enabled = p.modelChoice == MODEL_FILE
        self.ui.modelInfoLabel.text = self._modelCardText()
        problem = self._applyProblem()
        if not busy:
            self.ui.applyButton.enabled = problem is None
            self.ui.applyButton.toolTip = problem or _("Segment liver, vessels and tumors in the CT.")
        segmentationNode = p.outputSegmentation
        self.ui.segmentationShow3DButton.setSegmentationNode(segmentationNode)
        self.ui.summaryTableView.setMRMLTableNode(lib.summary_table_of(segmentationNode) if segmentationNode else None)
        self.ui.lesionTableView.setMRMLTableNode(lib.lesion_table_of(segmentationNode) if segmentationNode else None)
        hasSegments = segmentationNode is not None and segmentationNode.GetSegmentation().GetNumberOfSegments() > 0
        self.ui.recomputeButton.enabled = not busy and hasSegments
        self.ui.exportButton.enabled = not busy and hasSegments
        dicomItem = lib.dicom_export_item(slicer.mrmlScene, segmentationNode) if hasSegments else None
        self.ui.exportDicomButton.enabled = not busy and dicomItem is not None
        self.ui.exportDicomButton.toolTip = (
            _("Open Slicer's DICOM export for the segmentation (a DICOM Segmentation object).")
            if dicomItem is not None
            else _("Needs a segmentation of a CT loaded from DICOM (through the DICOM module).")
        )
        compareProblem = self._compareProblem()
        self.ui.compareButton.enabled = not busy and compareProblem is None
        self.ui.compareButton.toolTip = compareProblem or _(
            "Segment both CTs (or use the prior result folder), align them on the liver and follow the lesions."
        )
        self.ui.priorResultFolderLineEdit.enabled = not p.priorVolume
        comparison = lib.comparison_table_of(p.inputVolume) if p.inputVolume else None
        self.ui.compareTableView.setMRMLTableNode(comparison)

    def _applyProblem(self) -> str | None:
        """Why Apply cannot run now, in the user's words; None when it can."""
        p = self._parameterNode
        if not p.inputVolume:
            return _("Select a CT volume.")
        if p.modelChoice == MODEL_BUNDLED and self.logic.bundledModelPath() is None:
            return _("The bundled model is missing from this installation; choose a model file.")
        modelFile = self._modelFile()
        if p.modelChoice == MODEL_FILE and (modelFile is None or not modelFile.is_file()):
            return _("Choose a model manifest (.json).")
        return None

    def _compareProblem(self) -> str | None:
        """Why Compare cannot run now; None when it can. The current study is the selected CT."""
        problem = self._applyProblem()
        if problem is not None:
            return problem
        p = self._parameterNode
        if p.priorVolume:
            sameCT = p.priorVolume == p.inputVolume
            return _("The prior study must be another CT than the current one.") if sameCT else None
        folder = self._priorFolder()
        if folder is None:
            return _("Select a prior CT, or a result folder of an earlier LVT segmentation.")
        problem = lib.prior_folder_problem(folder)
        return None if problem is None else _("Not an LVT result folder: {problem}").format(problem=problem)

    def _priorFolder(self) -> Path | None:
        """The prior result folder, or None when the path field is empty."""
        return lib.optional_path(self._parameterNode.priorResultFolder)

    def _modelFile(self) -> Path | None:
        return lib.optional_path(self._parameterNode.modelPath)

    def _modelCardText(self) -> str:
        """The chosen model's card (name, version, training data, figures); read again only when the model changes."""
        path = self._selectedModelPath()
        if path != self._modelCard[0]:
            self._modelCard = (path, lib.model_card_of_file(path))
        return self._modelCard[1]

    def _selectedModelPath(self) -> Path | None:
        if self._parameterNode.modelChoice == MODEL_FILE:
            return self._modelFile()
        return self.logic.bundledModelPath()

    def _updateEnvironmentLabel(self) -> None:
        missing = self.logic.missingPackages()
        if missing:
            self.ui.environmentLabel.text = _("Installed on first Apply: {names}").format(names=", ".join(missing))
        else:
            self.ui.environmentLabel.text = _("All present.")

    # --- running the core ----------------------------------------------------------------------

    def onApplyButton(self) -> None:
        """Apply starts a segmentation; while one runs the same button cancels it."""
        if self._job is not None:
            self._cancelJob()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            if not self.logic.installDependencies(askConfirmation=True):
                return
            self._updateEnvironmentLabel()
            p = self._parameterNode
            if not p.outputSegmentation:
                name = slicer.mrmlScene.GenerateUniqueName(_("{volume} LVT").format(volume=p.inputVolume.GetName()))
                p.outputSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            job = self.logic.startSegmentation(
                p.inputVolume,
                p.outputSegmentation,
                self._selectedModelPath(),
                useCPU=p.useCPU,
                useTTA=p.useTTA,
                threads=p.threads,
                smoothSurfaces=p.smoothSurfaces,
                standardNames=p.useStandardNames,
            )
            self._startJob(job, _("Segmenting"))

    def onRecomputeButton(self) -> None:
        """Measure the (edited) output segmentation again with ``lvt measure``."""
        with slicer.util.tryWithErrorDisplay(_("Failed to start the measurement."), waitCursor=True):
            if not self.logic.installDependencies(askConfirmation=True):
                return
            p = self._parameterNode
            self._startJob(self.logic.startMeasurement(p.outputSegmentation, p.inputVolume), _("Measuring"))

    def onCompareButton(self) -> None:
        """Compare the current CT with a prior study (``lvt compare``); Apply becomes Cancel meanwhile."""
        with slicer.util.tryWithErrorDisplay(_("Failed to start the comparison."), waitCursor=True):
            if not self.logic.installDependencies(askConfirmation=True):
                return
            p = self._parameterNode
            job = self.logic.startComparison(
                p.inputVolume,
                priorVolume=p.priorVolume,
                priorFolder=None if p.priorVolume else self._priorFolder(),
                modelPath=self._selectedModelPath(),
                useCPU=p.useCPU,
                useTTA=p.useTTA,
                threads=p.threads,
            )
            self._startJob(job, _("Comparing"))

    def _startJob(self, job: LVTJob, title: str) -> None:
        self._job = job
        self.ui.applyButton.text = _("Cancel")
        self.ui.applyButton.enabled = True
        self.ui.applyButton.toolTip = _("Stop the run; nothing is loaded.")
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.value = 0
        self.ui.progressBar.setFormat(_("{title}: starting").format(title=title))
        self.ui.progressBar.show()
        self.ui.statusLabel.text = ""
        self.ui.elapsedLabel.text = ""
        self.ui.logTextEdit.clear()
        self.ui.logTextEdit.appendPlainText(" ".join(job.process.command))
        self._updateGui()
        self._timer.start()

    def onPollJob(self) -> None:
        """Drain the child's events on the GUI thread (called by the timer, never blocks)."""
        job = self._job
        if job is None:
            self._timer.stop()
            return
        self.ui.elapsedLabel.text = _("Elapsed {time}").format(time=lib.format_elapsed(time.monotonic() - job.started))
        for event in job.process.events():
            line = lib.log_line(event, job.stage)
            if line:
                self.ui.logTextEdit.appendPlainText(line)
            self.logic.recordEvent(job, event)
            if isinstance(event, lib.ProgressEvent):
                self.ui.progressBar.value = round(100 * event.fraction)
                self.ui.progressBar.setFormat(f"{event.stage}: %p%")
                if event.message:
                    self.ui.statusLabel.text = event.message
            elif isinstance(event, lib.ExitEvent):
                self._finishJob(job, event)
                return

    def _finishJob(self, job: LVTJob, exitEvent: lib.ExitEvent) -> None:
        self._timer.stop()
        self.ui.elapsedLabel.text = _("Took {time}").format(time=lib.format_elapsed(time.monotonic() - job.started))
        try:
            if exitEvent.cancelled:
                self.ui.statusLabel.text = _("Cancelled; nothing was loaded.")
                return
            if exitEvent.succeeded or self.logic.hasComparison(job):
                # A refused registration still writes compare.json, with the reasons: show it too.
                self.ui.progressBar.setFormat(_("Loading results"))
                slicer.app.processEvents()
                with slicer.util.tryWithErrorDisplay(_("Failed to load the results."), waitCursor=True):
                    self.ui.statusLabel.text = self.logic.importJob(job)
            if not exitEvent.succeeded:
                message = self.logic.failureMessage(job, exitEvent)
                self.ui.statusLabel.text = message
                slicer.util.errorDisplay(message, windowTitle=_("LVT Segmentation"))
        finally:
            self.logic.removeWorkDir(job)
            self._job = None
            self._setIdle()

    def _cancelJob(self) -> None:
        """Returns at once: the process tree gets SIGTERM now and, if still there, SIGKILL on a later timer tick."""
        self.ui.applyButton.enabled = False
        self.ui.statusLabel.text = _("Cancelling...")
        self._job.process.stop()  # the cancelled ExitEvent reaches onPollJob, which cleans up

    def _abandonJob(self) -> None:
        """End a running job at once (scene closed, module destroyed) and remove its files."""
        if self._timer is not None:
            self._timer.stop()
        job, self._job = self._job, None
        if job is not None:
            job.process.stop(grace_s=0.0)  # nobody polls it any more: kill at once, without waiting
            self.logic.removeWorkDir(job)
        self._setIdle()

    def _setIdle(self) -> None:
        if not hasattr(self, "ui"):
            return
        self.ui.applyButton.text = _("Apply")
        self.ui.progressBar.hide()
        self._updateGui()

    # --- results -------------------------------------------------------------------------------

    def onLesionClicked(self, index) -> None:
        """Centre the slice views on the middle of the clicked lesion's diameter line."""
        segmentationNode = self._parameterNode.outputSegmentation if self._parameterNode else None
        table = lib.lesion_table_of(segmentationNode) if segmentationNode else None
        if table is None or not index.isValid():
            return
        line = lib.lesion_line_of(segmentationNode, int(table.GetCellText(index.row(), 0)))
        if line is None:
            return
        r, a, s = (float(c) for c in lib.line_midpoint_ras(line))
        slicer.modules.markups.logic().JumpSlicesToLocation(r, a, s, True)

    def onExportDicomButton(self) -> None:
        """Slicer's DICOM export dialog with the segmentation selected (QuantitativeReporting writes the SEG)."""
        item = lib.dicom_export_item(slicer.mrmlScene, self._parameterNode.outputSegmentation)
        if item is None:
            return
        dialog = slicer.qSlicerDICOMExportDialog()
        dialog.setMRMLScene(slicer.mrmlScene)
        dialog.execDialog(item)

    def onExportButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to export the surfaces and the report."), waitCursor=True):
            lib.export_results(p.outputSegmentation, p.exportFolder, p.surfaceFormat)
            self.ui.statusLabel.text = _("Exported {format} surfaces and the report to {folder}").format(
                format=p.surfaceFormat, folder=p.exportFolder
            )


class LVTSegmentationLogic(ScriptedLoadableModuleLogic):
    """Runs the core and loads its results; usable without the widget (scripts, tests).

    The MRML work itself is in ``LVTSegmentationLib`` (Qt-free, tested with pytest); this class adds
    what needs the Slicer application: PythonSlicer, temporary folders, package installation.
    """

    def getParameterNode(self) -> LVTSegmentationParameterNode:
        return LVTSegmentationParameterNode(super().getParameterNode())

    @staticmethod
    def moduleDir() -> Path:
        return Path(__file__).resolve().parent

    def bundledModelPath(self) -> Path | None:
        return lib.bundled_model_path(self.moduleDir())

    # --- dependencies --------------------------------------------------------------------------

    def missingPackages(self) -> list[str]:
        """Names of the packages the core needs and Slicer's Python lacks (torch first)."""
        names = ["torch"] if importlib.util.find_spec("torch") is None else []
        return names + [requirement.pip_spec for requirement in lib.missing_requirements()]

    def installDependencies(self, askConfirmation: bool = True) -> bool:
        """Install what the core lacks: torch through the PyTorch extension, the rest with pip.

        Returns:
            False when the user declined; True when everything is present.
        """
        missing = lib.missing_requirements()
        needTorch = importlib.util.find_spec("torch") is None
        if not missing and not needTorch:
            return True
        if askConfirmation and missing:
            names = "\n".join(requirement.pip_spec for requirement in missing)
            question = _(
                "LVT Segmentation needs Python packages that Slicer does not have yet:\n\n{names}\n\n"
                "They are downloaded from PyPI and installed into Slicer's Python; this takes a few "
                "minutes and needs an internet connection. Slicer's own numpy, SimpleITK and VTK are "
                "not changed. PyTorch, if missing, is installed next by the PyTorch extension.\n\nInstall now?"
            ).format(names=names)
            if not slicer.util.confirmOkCancelDisplay(question, windowTitle=_("LVT Segmentation")):
                return False
        if needTorch:
            self._installTorch(askConfirmation)
        if missing:
            self._pipInstall(missing)
        importlib.invalidate_caches()
        return True

    @staticmethod
    def _installTorch(askConfirmation: bool) -> None:
        """PyTorch comes from the PyTorch extension, which picks the CUDA build matching the computer."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError as error:
            raise RuntimeError(
                _(
                    "LVT Segmentation needs PyTorch: install the 'PyTorch' extension in the Extensions Manager, "
                    "restart Slicer and press Apply again."
                )
            ) from error
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            torch = torchLogic.installTorch(askConfirmation=askConfirmation, torchVersionRequirement=TORCH_REQUIREMENT)
            if torch is None:
                raise RuntimeError(_("PyTorch was not installed, so the segmentation cannot run."))

    @staticmethod
    def _pipInstall(requirements: list[lib.Requirement]) -> None:
        """pip install with a constraints file that pins Slicer's own numpy and SimpleITK."""
        constraints = Path(slicer.app.temporaryPath) / "LVTSegmentation-constraints.txt"
        constraints.write_text("\n".join(lib.protecting_constraints()) + "\n", encoding="utf-8")
        # A list goes to pip unchanged in every Slicer version (5.12's pip_install parses strings).
        slicer.util.pip_install([*(requirement.pip_spec for requirement in requirements), "-c", str(constraints)])

    # --- running the core ----------------------------------------------------------------------

    @staticmethod
    def pythonExecutable() -> str:
        executable = shutil.which("PythonSlicer")
        if executable is None:
            raise RuntimeError(_("PythonSlicer was not found next to Slicer; the installation is incomplete."))
        return executable

    def childEnvironment(self) -> dict[str, str]:
        """Slicer's start-up environment with the core first on PYTHONPATH."""
        return lib.child_environment(slicer.util.startupEnvironment(), lib.core_dir(self.moduleDir()))

    @staticmethod
    def newWorkDir() -> Path:
        return Path(tempfile.mkdtemp(prefix="LVT-", dir=slicer.app.temporaryPath))

    def startSegmentation(
        self,
        volumeNode: vtkMRMLScalarVolumeNode,
        segmentationNode: vtkMRMLSegmentationNode,
        modelPath: Path | None,
        useCPU: bool = False,
        useTTA: bool = False,
        threads: int = 0,
        smoothSurfaces: bool = True,
        standardNames: bool = False,
    ) -> LVTJob:
        """Write the CT to a temporary folder and start ``lvt segment`` on it; returns at once.

        ``standardNames`` renames the segments to Slicer's standard names when the results are loaded.
        """
        workDir = self.newWorkDir()
        try:
            inputPath = workDir / "input.nrrd"
            lib.write_volume_file(slicer.mrmlScene, volumeNode, inputPath)
            outputDir = workDir / "output"
            command = lib.segment_command(
                self.pythonExecutable(),
                inputPath,
                outputDir,
                modelPath,
                device="cpu" if useCPU else "auto",
                use_tta=useTTA,
                threads=threads or None,
            )
            job = self._start("segment", command, workDir, outputDir, segmentationNode, volumeNode, smoothSurfaces)
            job.standardNames = standardNames
            return job
        except Exception:
            shutil.rmtree(workDir, ignore_errors=True)
            raise

    def startMeasurement(
        self, segmentationNode: vtkMRMLSegmentationNode, volumeNode: vtkMRMLScalarVolumeNode | None
    ) -> LVTJob:
        """Write the (edited) segmentation, and the CT when given, and start ``lvt measure``.

        A segment named "Resection" (any case) is the planned resection region: the report then
        gives the liver remnant outside it.
        """
        workDir = self.newWorkDir()
        try:
            segmentationPath = workDir / "edited.seg.nrrd"
            lib.write_segmentation_file(slicer.mrmlScene, segmentationNode, segmentationPath)
            ctPath = None
            if volumeNode is not None:
                ctPath = workDir / "ct.nrrd"
                lib.write_volume_file(slicer.mrmlScene, volumeNode, ctPath)
            outputDir = workDir / "output"
            command = lib.measure_command(
                self.pythonExecutable(),
                segmentationPath,
                outputDir,
                ctPath,
                resection_segment=lib.resection_segment_name(segmentationNode),
            )
            return self._start("measure", command, workDir, outputDir, segmentationNode, volumeNode)
        except Exception:
            shutil.rmtree(workDir, ignore_errors=True)
            raise

    def startComparison(
        self,
        currentVolume: vtkMRMLScalarVolumeNode,
        priorVolume: vtkMRMLScalarVolumeNode | None = None,
        priorFolder: Path | None = None,
        modelPath: Path | None = None,
        useCPU: bool = False,
        useTTA: bool = False,
        threads: int = 0,
    ) -> LVTJob:
        """Write the CTs and start ``lvt compare PRIOR CURRENT``; the prior is a CT or a result folder.

        Raises:
            ValueError: neither a prior volume nor a prior folder is given.
        """
        if priorVolume is None and priorFolder is None:
            raise ValueError(_("A prior CT or a prior result folder is needed."))
        workDir = self.newWorkDir()
        try:
            currentPath = workDir / "current.nrrd"
            lib.write_volume_file(slicer.mrmlScene, currentVolume, currentPath)
            if priorVolume is not None:
                priorPath, priorName = workDir / "prior.nrrd", priorVolume.GetName()
                lib.write_volume_file(slicer.mrmlScene, priorVolume, priorPath)
            else:
                priorPath, priorName = Path(priorFolder), Path(priorFolder).name
            outputDir = workDir / "output"
            command = lib.compare_command(
                self.pythonExecutable(),
                [priorPath, currentPath],
                outputDir,
                names=lib.study_labels(priorName, currentVolume.GetName()),
                model_path=modelPath,
                device="cpu" if useCPU else "auto",
                use_tta=useTTA,
                threads=threads or None,
            )
            return self._start("compare", command, workDir, outputDir, None, currentVolume)
        except Exception:
            shutil.rmtree(workDir, ignore_errors=True)
            raise

    def _start(
        self,
        kind: str,
        command: list[str],
        workDir: Path,
        outputDir: Path,
        segmentationNode: vtkMRMLSegmentationNode | None,
        volumeNode: vtkMRMLScalarVolumeNode | None,
        smoothSurfaces: bool = True,
    ) -> LVTJob:
        logging.info("LVT: running %s", " ".join(command))
        process = lib.BackgroundProcess(command, env=self.childEnvironment(), cwd=workDir)
        process.start()
        return LVTJob(kind, process, workDir, outputDir, segmentationNode, volumeNode, smoothSurfaces)

    @staticmethod
    def recordEvent(job: LVTJob, event) -> None:
        """Keep the core's error messages and log lines for the failure message; log them too."""
        if isinstance(event, lib.ErrorEvent):
            job.errors.append(event.message)
            logging.error("LVT: %s", event.message)
        elif isinstance(event, lib.LogEvent):
            job.log.append(event.text)
            logging.info("LVT: %s", event.text)
        elif isinstance(event, lib.ProgressEvent):
            job.stage = event.stage

    def waitForJob(self, job: LVTJob, timeoutSeconds: float) -> lib.ExitEvent:
        """Block until the job ends (tests and scripts); its events are recorded on the job."""
        exitEvent = None
        for event in job.process.wait(timeoutSeconds):
            self.recordEvent(job, event)
            if isinstance(event, lib.ExitEvent):
                exitEvent = event
        if exitEvent is None:
            raise RuntimeError(_("The LVT process ended without reporting its exit status."))
        return exitEvent

    @staticmethod
    def failureMessage(job: LVTJob, exitEvent: lib.ExitEvent) -> str:
        """The core's own error message when it wrote one; otherwise the end of its output."""
        if job.errors:
            return "\n".join(job.errors)
        tail = "\n".join(job.log[-15:]) or _("(no output)")
        return _("The LVT process failed (exit code {code}):\n{tail}").format(code=exitEvent.returncode, tail=tail)

    @staticmethod
    def hasComparison(job: LVTJob) -> bool:
        """A compare job left compare.json (also when it exits 1 because a registration was refused)."""
        return job.kind == "compare" and (job.outputDir / lib.COMPARE_FILE).is_file()

    def importJob(self, job: LVTJob) -> str:
        """Load a finished job's results into the scene; returns the line for the status label."""
        if job.kind == "compare":
            return lib.comparison_summary(self.importComparison(job).document)
        return self.summaryText(self.importResults(job).report)

    @staticmethod
    def importComparison(job: LVTJob) -> lib.LoadedComparison:
        """Load compare.json into the follow-up table attached to the current CT."""
        return lib.load_comparison(slicer.mrmlScene, job.outputDir, job.volumeNode)

    def importResults(self, job: LVTJob) -> lib.LoadedResults:
        """Load a finished job's output folder into the scene (segmentation, tables, lines, report)."""
        if job.kind == "segment":
            loaded = lib.load_results(
                slicer.mrmlScene,
                job.outputDir,
                segmentation_node=job.segmentationNode,
                reference_volume_node=job.volumeNode,
                smooth_surfaces=job.smoothSurfaces,
            )
            if job.standardNames:
                lib.apply_standard_names(loaded.segmentation_node, slicer.modules.terminologies.logic())
        else:
            loaded = lib.load_measurements(slicer.mrmlScene, job.segmentationNode, job.outputDir, job.volumeNode)
        if job.volumeNode is not None:
            # The CT was written without its parent transform; the results follow it like the CT does.
            for node in (loaded.segmentation_node, *loaded.lesion_lines, *loaded.vessel_lines):
                node.SetAndObserveTransformNodeID(job.volumeNode.GetTransformNodeID())
        return loaded

    @staticmethod
    def loadSampleCT() -> vtkMRMLScalarVolumeNode:
        """Load the phantom sample CT, made and kept in Slicer's cache on first use (no download)."""
        cache = Path(slicer.mrmlScene.GetCacheManager().GetRemoteCacheDirectory())
        with slicer.util.tryWithErrorDisplay(_("Failed to make the sample CT."), waitCursor=True):
            path = lib.write_sample_ct(cache)
        volume = slicer.util.loadVolume(str(path), {"name": lib.SAMPLE_NAME})
        # As Sample Data does: the cache file is not the volume's home, so "Save" must not point there.
        storage = volume.GetStorageNode()
        if storage is not None:
            volume.SetAndObserveStorageNodeID(None)
            slicer.mrmlScene.RemoveNode(storage)
        return volume

    @staticmethod
    def removeWorkDir(job: LVTJob) -> None:
        shutil.rmtree(job.workDir, ignore_errors=True)

    @staticmethod
    def summaryText(report: dict) -> str:
        tumors = report["tumors"]
        text = _("Liver {liver:.0f} mL; {count} tumor(s), {tumor:.1f} mL ({ratio:.1f} % of the liver).").format(
            liver=report["liver"]["whole_volume_ml"],
            count=tumors["count"],
            tumor=tumors["total_volume_ml"],
            ratio=100.0 * tumors["tumor_to_liver_volume_ratio"],
        )
        remnant = (report.get("planning") or {}).get("remnant")
        if remnant:
            text += " " + _("Remnant after the planned resection: {ml:.0f} mL ({percent:.1f} %).").format(
                ml=remnant["remnant_ml"], percent=remnant["remnant_percent"]
            )
        return "\n".join([text, *lib.reliability_notes(report)])


class LVTSegmentationTest(ScriptedLoadableModuleTest):
    """Inside Slicer: the panel's path fields, the sample CT, and end to end the bundled model on the CPU.

    Run it with ctest in an extension build, or with ``Slicer --testing --python-code ...`` as
    docs/slicer.md shows. The end-to-end part needs PyTorch and the core's packages; it is skipped
    with a message when they are missing, unless LVT_SELF_TEST_INSTALL=1 lets it install them.
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        if PYTHON_PROBLEM:
            self.delayDisplay(PYTHON_PROBLEM)
            return
        for test in (self.test_empty_path_fields_stay_empty, self.test_sample_ct_is_made_offline,
                     self.test_segment_phantom_end_to_end):
            self.setUp()
            test()

    def test_empty_path_fields_stay_empty(self) -> None:
        """An empty Model file or Prior result folder shows nothing, not "." (the Path("") of old)."""
        widget = slicer.util.getModuleWidget("LVTSegmentation")
        widget.initializeParameterNode()
        for name, lineEdit in (("modelPath", widget.ui.modelPathLineEdit),
                               ("priorResultFolder", widget.ui.priorResultFolderLineEdit)):
            setattr(widget._parameterNode, name, "")
            self.assertEqual(lineEdit.currentPath, "")
            lineEdit.currentPath = str(Path(slicer.app.temporaryPath))
            self.assertEqual(getattr(widget._parameterNode, name), str(Path(slicer.app.temporaryPath)))

    def test_sample_ct_is_made_offline(self) -> None:
        volume = LVTSegmentationLogic.loadSampleCT()
        phantom = lib.sample_phantom()
        self.assertEqual(slicer.util.arrayFromVolume(volume).shape, phantom.image.array.shape)
        self.assertIsNone(volume.GetStorageNode(), "the cache file must not become the volume's storage")

    def test_segment_phantom_end_to_end(self) -> None:
        import numpy as np

        from lvt.labels import STRUCTURES

        logic = LVTSegmentationLogic()
        skipReason = lib.self_test_skip_reason(logic.missingPackages(), os.environ)
        if skipReason:
            logging.warning(skipReason)
            self.delayDisplay(skipReason)
            return
        self.assertTrue(logic.installDependencies(askConfirmation=False))
        model = logic.bundledModelPath()
        self.assertIsNotNone(model, "the bundled model is not installed")

        phantom = lib.sample_phantom()
        volume = logic.loadSampleCT()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "phantom LVT")

        self.delayDisplay("Segmenting with the bundled model on the CPU")
        job = logic.startSegmentation(volume, segmentation, model, useCPU=True)
        try:
            exitEvent = logic.waitForJob(job, timeoutSeconds=900)
            self.assertTrue(exitEvent.succeeded, logic.failureMessage(job, exitEvent))
            loaded = logic.importResults(job)
        finally:
            job.process.stop(grace_s=0.0)  # only acts when the wait timed out
            logic.removeWorkDir(job)
        self.assertFalse(job.workDir.exists(), "temporary files were left behind")

        segments = segmentation.GetSegmentation()
        self.assertEqual(
            [segments.GetNthSegmentID(n) for n in range(segments.GetNumberOfSegments())],
            [s.segment_name for s in STRUCTURES],
        )
        labels, _ijkToRas = lib.export_label_array(segmentation, volume)
        truth = phantom.labels
        voxelMl = float(np.prod(phantom.image.spacing_mm)) / 1000.0
        liverMl, truthLiverMl = np.count_nonzero(labels) * voxelMl, np.count_nonzero(truth) * voxelMl
        tumorMl, truthTumorMl = np.count_nonzero(labels == 3) * voxelMl, np.count_nonzero(truth == 3) * voxelMl
        self.assertAlmostEqual(liverMl / truthLiverMl, 1.0, delta=0.15)
        self.assertAlmostEqual(tumorMl / truthTumorMl, 1.0, delta=0.5)

        report = loaded.report
        self.assertAlmostEqual(report["liver"]["whole_volume_ml"], liverMl, delta=1e-6 * liverMl + 1e-9)
        self.assertEqual(loaded.lesion_table.GetNumberOfRows(), len(report["lesions"]))
        lengths = [line.GetLineLengthWorld() for line in loaded.lesion_lines]
        diameters = [lesion["longest_axial_diameter_mm"] for lesion in report["lesions"]]
        self.assertEqual(len(lengths), len(diameters))
        self.assertTrue(np.allclose(lengths, diameters, atol=1e-4), f"{lengths} != {diameters}")
        self.delayDisplay("Test passed")
