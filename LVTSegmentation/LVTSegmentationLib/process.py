"""Run the core's command line in a child process and read its JSON progress without blocking.

Why a child process (as MONAIAuto3DSeg and TotalSegmentator do): a torch crash or an out-of-memory
kill ends only the child, Slicer's GUI stays responsive, and Cancel is "end the process tree".

Qt-free on purpose: a reader thread turns each stdout line of ``lvt ... --progress json`` into an
event on a queue; the widget drains the queue from a ``QTimer`` on the GUI thread. The same class
runs headless (tests, scripts) with :meth:`BackgroundProcess.wait`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Exit codes of the core's CLI (contracts: 2 bad input, 1 other failure, 130 cancelled).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130
_WAIT_STEP_S = 0.05  # how often wait() checks whether a cancelled child is due to be killed


@dataclass(frozen=True)
class ProgressEvent:
    """``{"event": "progress", ...}``: overall ``fraction`` in 0..1 and the current stage."""

    stage: str
    done: float
    total: float
    fraction: float
    message: str = ""


@dataclass(frozen=True)
class DoneEvent:
    """``{"event": "done", "output": OUTDIR}``: the last line of a successful run."""

    output: str


@dataclass(frozen=True)
class ErrorEvent:
    """``{"event": "error", "message": ...}``: the core's own words, shown to the user as written."""

    message: str


@dataclass(frozen=True)
class LogEvent:
    """Any other output line (warnings, a traceback of an unexpected crash)."""

    text: str


@dataclass(frozen=True)
class ExitEvent:
    """The child has ended; ``cancelled`` is True when :meth:`BackgroundProcess.stop` ended it."""

    returncode: int
    cancelled: bool

    @property
    def succeeded(self) -> bool:
        return self.returncode == EXIT_OK and not self.cancelled


Event = ProgressEvent | DoneEvent | ErrorEvent | LogEvent | ExitEvent


def parse_line(line: str) -> Event | None:
    """Turn one stdout line of ``--progress json`` into an event.

    Args:
        line: one line, with or without its newline.

    Returns:
        A progress, done or error event for the core's JSON objects, a :class:`LogEvent` for any
        other non-blank text (so nothing the child says is lost), None for a blank line.
    """
    text = line.strip()
    if not text:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return LogEvent(text)
    if not isinstance(obj, dict):
        return LogEvent(text)
    kind = obj.get("event")
    try:
        if kind == "progress":
            return ProgressEvent(
                stage=str(obj.get("stage", "")),
                done=float(obj.get("done", 0.0)),
                total=float(obj.get("total", 0.0)),
                fraction=min(1.0, max(0.0, float(obj.get("fraction", 0.0)))),
                message=str(obj.get("message", "")),
            )
        if kind == "done":
            return DoneEvent(str(obj["output"]))
        if kind == "error":
            return ErrorEvent(str(obj.get("message", "")))
    except (KeyError, TypeError, ValueError):
        pass
    return LogEvent(text)


def segment_command(
    python_executable: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    model_path: str | Path | None = None,
    device: str = "auto",
    use_tta: bool = False,
    threads: int | None = None,
) -> list[str]:
    """Argument list of ``python -m lvt segment`` with JSON progress (the contract in contracts.md).

    Args:
        python_executable: ``PythonSlicer`` inside Slicer, ``sys.executable`` elsewhere.
        input_path: the CT written to a temporary file.
        output_dir: OUTDIR; it must not exist yet (the core renames its temp folder onto it).
        model_path: a model manifest (.json); None lets the core use its default model.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps" (the core checks it).
        use_tta: test-time flips (slower, slightly better).
        threads: CPU threads for torch; None leaves the core's default.
    """
    command = [str(python_executable), "-m", "lvt", "segment", str(input_path), "-o", str(output_dir)]
    return command + _model_options(model_path, device, use_tta, threads)


def _model_options(model_path: str | Path | None, device: str, use_tta: bool, threads: int | None) -> list[str]:
    """Model, device, JSON progress, TTA and threads: the options ``lvt segment`` and ``lvt compare`` share."""
    options = [] if model_path is None else ["--model", str(model_path)]
    options += ["--device", device, "--progress", "json"]
    if use_tta:
        options.append("--tta")
    if threads is not None:
        options += ["--threads", str(threads)]
    return options


def measure_command(
    python_executable: str | Path,
    segmentation_path: str | Path,
    output_dir: str | Path,
    ct_path: str | Path | None = None,
    resection_segment: str | None = None,
) -> list[str]:
    """Argument list of ``python -m lvt measure`` with JSON progress.

    Args:
        resection_segment: name of a segment of the segmentation file that is a planned resection
            region; the report then holds the liver remnant.
    """
    command = [str(python_executable), "-m", "lvt", "measure", str(segmentation_path)]
    if ct_path is not None:
        command += ["--ct", str(ct_path)]
    command += ["-o", str(output_dir), "--progress", "json"]
    if resection_segment is not None:
        command += ["--resection-segment", resection_segment]
    return command


def compare_command(
    python_executable: str | Path,
    studies: Sequence[str | Path],
    output_dir: str | Path,
    names: Sequence[str] = (),
    model_path: str | Path | None = None,
    device: str = "auto",
    use_tta: bool = False,
    threads: int | None = None,
) -> list[str]:
    """Argument list of ``python -m lvt compare`` with JSON progress.

    Args:
        studies: CTs or ``lvt segment`` output folders, oldest first (the first is the baseline).
        output_dir: OUTDIR for compare.json and compare.html; it must not exist yet.
        names: one name per study, for the table and the report (none: the file names).
        model_path, device, use_tta, threads: as for :func:`segment_command`, for studies that are CTs.
    """
    command = [str(python_executable), "-m", "lvt", "compare", *(str(s) for s in studies), "-o", str(output_dir)]
    if names:
        command += ["--names", *names]
    return command + _model_options(model_path, device, use_tta, threads)


def child_environment(base: Mapping[str, str], core_dir: str | Path) -> dict[str, str]:
    """Environment for the child: the core's folder first on PYTHONPATH, unbuffered UTF-8 output.

    Why: in an installed extension the ``lvt`` package sits in the module folder
    (``qt-scripted-modules``), which PythonSlicer does not search; and progress lines must reach
    the pipe as they are written, not when a block buffer fills.

    Args:
        base: the environment to start from (inside Slicer ``slicer.util.startupEnvironment()``).
        core_dir: the folder that holds the ``lvt`` package.
    """
    env = dict(base)
    paths = [str(core_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def terminate_tree(pid: int) -> list:
    """SIGTERM to a process and all its descendants, so the core can clean up; returns them (psutil).

    The children are listed before anything is signalled: once the parent is gone its children
    are re-parented and could no longer be found (``proc.kill()`` alone would leave torch workers
    running, as MONAIAuto3DSeg notes). Never waits.
    """
    import psutil  # here, not at the top: Slicer may lack it until the first-use install

    try:
        parent = psutil.Process(pid)
        processes = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    return processes


def kill_survivors(processes: Sequence) -> None:
    """SIGKILL to those of ``processes`` still running and to any child they started since; never waits."""
    import psutil

    survivors = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running():
                survivors += [*process.children(recursive=True), process]
    for process in survivors:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


class BackgroundProcess:
    """A child process whose output lines become events, read by a thread, drained without blocking."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | Path | None = None):
        self.command = [str(c) for c in command]
        self._env = None if env is None else dict(env)
        self._cwd = None if cwd is None else str(cwd)
        self._events: queue.Queue[Event] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._cancel_requested = False
        self._terminated: list = []  # psutil processes sent SIGTERM by stop(), not yet killed
        self._kill_at = 0.0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the child and the thread that reads its merged stdout and stderr."""
        if self._process is not None:
            raise RuntimeError("this process was already started")
        # A console window would flash up for every run on Windows (launchConsoleProcess hides it too).
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
        self._process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=self._env,
            cwd=self._cwd,
            creationflags=flags,
        )
        self._reader = threading.Thread(
            target=self._read_output, args=(self._process,), name="lvt-output-reader", daemon=True
        )
        self._reader.start()

    def _read_output(self, process: subprocess.Popen[str]) -> None:
        for line in process.stdout or ():
            event = parse_line(line)
            if event is not None:
                self._events.put(event)
        returncode = process.wait()
        self._events.put(ExitEvent(returncode, self._cancel_requested))

    def events(self) -> list[Event]:
        """All events that arrived since the last call; never blocks (call it from a timer).

        After :meth:`stop`, each call also kills what ignored SIGTERM once the grace period is over.
        """
        self._kill_when_overdue()
        drained: list[Event] = []
        while True:
            try:
                drained.append(self._events.get_nowait())
            except queue.Empty:
                return drained

    def stop(self, grace_s: float = 3.0) -> None:
        """Cancel without waiting: SIGTERM to the whole process tree now, SIGKILL to what is left later.

        The kill happens in the first :meth:`events` or :meth:`wait` call after ``grace_s`` seconds
        (the widget's timer calls :meth:`events`), so the GUI never waits for the child; with
        ``grace_s`` 0 it happens at once; a second call can only bring the kill forward. An
        :class:`ExitEvent` with ``cancelled`` follows.
        """
        if self._process is None or self._process.poll() is not None:
            return
        if self._cancel_requested:
            self._kill_at = min(self._kill_at, time.monotonic() + grace_s)
        else:
            self._cancel_requested = True
            self._terminated = terminate_tree(self._process.pid)
            self._kill_at = time.monotonic() + grace_s
        self._kill_when_overdue()

    def _kill_when_overdue(self) -> None:
        if self._terminated and time.monotonic() >= self._kill_at:
            processes, self._terminated = self._terminated, []
            kill_survivors(processes)

    def wait(self, timeout_s: float | None = None) -> list[Event]:
        """Block until the child has ended and its output is read; return the remaining events.

        Raises:
            subprocess.TimeoutExpired: when the child is still running after ``timeout_s``.
        """
        if self._process is None or self._reader is None:
            raise RuntimeError("the process was not started")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._reader.is_alive():
            self._kill_when_overdue()
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.command, timeout_s)
            self._reader.join(_WAIT_STEP_S)
        return self.events()
