"""Training as a child process: the ``lvt train`` command line, its progress, its end; Qt-free.

Why a child process: a training run takes hours and holds the GPU; in Slicer's GUI process it would
freeze the application, and a crash of torch would take the scene with it. The process machinery
(reader thread, JSON lines, ending the process tree) is LVT Segmentation's
(``LVTSegmentationLib.process``); this module adds what is particular to training: the arguments,
the meaning of its progress events, and what a finished, failed or cancelled run leaves behind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from LVTSegmentationLib.process import (
    EXIT_CANCELLED,
    BackgroundProcess,
    DoneEvent,
    ErrorEvent,
    Event,
    ExitEvent,
    LogEvent,
    ProgressEvent,
)

# Cancel ends the run at its next step and saves a resume point; only a run that has not stopped by
# then is killed (which loses the steps since the last checkpoint).
CANCEL_GRACE_S = 60.0
# lvt.train.loop reports each step as "loss 0.1234 | 1.50 it/s | ETA 5m12s".
_STEP_MESSAGE = re.compile(r"loss (?P<loss>\S+) \| \S+ it/s \| ETA (?P<eta>\S+)")
_TAIL_LINES = 15


def training_arguments(
    config_path: Path | str,
    output_dir: Path | str | None = None,
    steps: int | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: str = "none",
    extra_arguments: Sequence[str] = (),
) -> list[str]:
    """The ``lvt train`` argument list for these settings (None keeps the config's value)."""
    arguments = [str(config_path), "--device", device, "--progress", progress]
    if output_dir is not None:
        arguments += ["--output", str(output_dir)]
    if steps is not None:
        arguments += ["--steps", str(steps)]
    if resume:
        arguments.append("--resume")
    return arguments + list(extra_arguments)


def train_command(python_executable: Path | str, config_path: Path | str, **settings) -> list[str]:
    """``python -m lvt train CONFIG ... --progress json``; ``settings`` as for :func:`training_arguments`."""
    return [str(python_executable), "-m", "lvt", "train", *training_arguments(config_path, progress="json", **settings)]


def start_training(
    python_executable: Path | str,
    config_path: Path | str,
    env: Mapping[str, str] | None = None,
    output_dir: Path | str | None = None,
    steps: int | None = None,
    device: str = "auto",
    resume: bool = False,
) -> TrainingRun:
    """Check the config here (a bad one fails at once, torch-free), then start ``lvt train`` as a child.

    Raises:
        lvt.errors.InputError: the config is missing or invalid (the message names the file and field).
    """
    from lvt.train.config import load_training_config

    config = load_training_config(config_path, output_dir=output_dir, steps=steps)
    command = train_command(python_executable, config_path, output_dir=config.output_dir, steps=steps, device=device,
                            resume=resume)
    run = TrainingRun(command, config.output_dir, env=env)
    run.start()
    return run


@dataclass(frozen=True)
class TrainingProgress:
    """What one progress event of ``lvt train`` means: preparing data, a training step, or validation."""

    stage: str
    done: int
    total: int
    loss: float | None = None
    eta: str = ""
    message: str = ""

    @classmethod
    def from_event(cls, event: ProgressEvent) -> TrainingProgress:
        step = _STEP_MESSAGE.fullmatch(event.message) if event.stage == "train" else None
        loss = float(step["loss"]) if step else None
        return cls(event.stage, int(event.done), int(event.total), loss, step["eta"] if step else "", event.message)

    @property
    def percent(self) -> int | None:
        """Share done of this stage, 0..100; None while validating (the bar keeps the training's share)."""
        if self.stage == "validate" or self.total <= 0:
            return None
        return round(100 * min(1.0, self.done / self.total))

    def text(self) -> str:
        """One line for the progress bar."""
        if self.stage == "train":
            loss = f", loss {self.loss:.4f}" if self.loss is not None else ""
            eta = f", {self.eta} left" if self.eta else ""
            return f"step {self.done} of {self.total}{loss}{eta}"
        if self.stage == "preprocess":
            return f"preparing data: {self.done} of {self.total} case(s)"
        return self.message or self.stage


@dataclass
class TrainingRun:
    """One ``lvt train`` child process and everything it has said: progress, log, errors, its model.

    The widget calls :meth:`poll` from a timer; scripts and tests call :meth:`wait`.
    """

    command: list[str]
    output_dir: Path
    env: Mapping[str, str] | None = None
    progress: TrainingProgress | None = None
    model: Path | None = None
    exit: ExitEvent | None = None
    errors: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    process: BackgroundProcess = field(init=False)

    def __post_init__(self) -> None:
        self.process = BackgroundProcess(self.command, env=self.env)

    def start(self) -> None:
        self.process.start()

    def poll(self) -> list[str]:
        """Take in the events that arrived (never blocks); return the new lines for the log box."""
        return [line for event in self.process.events() if (line := self._record(event))]

    def wait(self, timeout_s: float | None = None) -> ExitEvent:
        """Block until the run has ended (scripts, tests); its events are taken in as by :meth:`poll`.

        Raises:
            subprocess.TimeoutExpired: the run is still going after ``timeout_s``.
        """
        for event in self.process.wait(timeout_s):
            self._record(event)
        if self.exit is None:
            raise RuntimeError("the training process ended without reporting its exit status")
        return self.exit

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Ask the run to stop without waiting for it: it saves a resume point and exits at its next step.

        What still runs ``grace_s`` seconds later is killed by the next :meth:`poll` or :meth:`wait`.
        """
        self.process.stop(grace_s)

    def _record(self, event: Event) -> str:
        if isinstance(event, ProgressEvent):
            previous, self.progress = self.progress, TrainingProgress.from_event(event)
            new_stage = previous is None or previous.stage != self.progress.stage
            return self.progress.text() if new_stage or self.progress.stage == "validate" else ""
        if isinstance(event, DoneEvent):
            self.model = Path(event.output)
            return f"model written: {self.model}"
        if isinstance(event, ErrorEvent):
            self.errors.append(event.message)
            return f"error: {event.message}"
        if isinstance(event, LogEvent):
            self.log.append(event.text)
            return event.text
        if isinstance(event, ExitEvent):
            self.exit = event
            return self.summary()
        return ""

    def resume_point(self) -> Path | None:
        """The folder a cancelled or killed run can continue from (``--resume``), if it left one."""
        folder = self.output_dir / "checkpoints" / "last"
        return folder if (folder / "state.json").is_file() else None

    def summary(self) -> str:
        """How the run ended, in one message for the user (empty while it runs)."""
        if self.exit is None:
            return ""
        if self.exit.succeeded and self.model is not None:
            return f"Training finished; the model is {self.model} (choose it as Model file in LVT Segmentation)."
        resume = self.resume_point()
        keep = f" Start again with Resume to continue from {resume}." if resume else ""
        if self.exit.cancelled or self.exit.returncode == EXIT_CANCELLED:
            return "Training cancelled." + keep
        detail = "\n".join(self.errors) or "\n".join(self.log[-_TAIL_LINES:]) or "(no output)"
        return f"Training failed (exit code {self.exit.returncode}):\n{detail}" + ("\n" + keep.strip() if keep else "")
