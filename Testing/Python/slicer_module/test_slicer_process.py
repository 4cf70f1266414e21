"""Cancel never blocks Slicer's GUI: SIGTERM at once, SIGKILL on a later timer tick, on real child processes.

The widget calls ``BackgroundProcess.events()`` every 200 ms; these tests play that timer with a loop.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO

pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
sys.path.insert(0, str(REPO / "LVTSegmentation"))

from LVTSegmentationLib.process import BackgroundProcess, ExitEvent, ProgressEvent

pytestmark = pytest.mark.skipif(os.name == "nt", reason="ignoring SIGTERM is a POSIX child's trick")

# A child and a grandchild that both ignore SIGTERM (as a process stuck in native code effectively does).
_STUBBORN_CHILD = """
    import json, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
    print(json.dumps({"event": "progress", "stage": "spawned", "done": grandchild.pid, "total": 1, "fraction": 0}),
          flush=True)
    time.sleep(120)
"""
_PLAIN_CHILD = """
    import json, time
    print(json.dumps({"event": "progress", "stage": "working", "done": 0, "total": 1, "fraction": 0}), flush=True)
    time.sleep(120)
"""


def _started(tmp_path: Path, body: str) -> tuple[BackgroundProcess, int]:
    """Start a child; return it and the number its first progress event carries (the grandchild's pid)."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    process = BackgroundProcess([sys.executable, str(script)])
    process.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        progress = [event for event in process.events() if isinstance(event, ProgressEvent)]
        if progress:
            return process, int(progress[0].done)
        time.sleep(0.02)
    raise AssertionError("the child did not report")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _gone_soon(pid: int, timeout_s: float = 5.0) -> bool:
    """Gone within a moment: a killed process may still be exiting when the pipe it held closes."""
    deadline = time.monotonic() + timeout_s
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _gone(pid)


def _poll_until_exit(process: BackgroundProcess, timeout_s: float) -> tuple[ExitEvent, float]:
    """The widget's timer: events() every 0.2 s until the ExitEvent; returns it and when it came."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        exits = [event for event in process.events() if isinstance(event, ExitEvent)]
        if exits:
            return exits[0], time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"no exit event within {timeout_s} s")


def test_stop_returns_at_once_and_a_later_tick_kills_what_ignored_sigterm(tmp_path):
    process, grandchild = _started(tmp_path, _STUBBORN_CHILD)
    child = process.pid

    began = time.monotonic()
    process.stop(grace_s=1.5)
    blocked_s = time.monotonic() - began

    assert blocked_s < 0.3, f"stop() blocked the caller for {blocked_s:.2f} s"
    assert not _gone(child) and not _gone(grandchild), "SIGTERM is ignored: both still run within the grace period"
    exit_event, after_s = _poll_until_exit(process, timeout_s=20)
    assert exit_event.cancelled and not exit_event.succeeded
    assert after_s >= 1.0, "killed before the grace period was over"
    assert _gone_soon(child) and _gone_soon(grandchild), "the process tree survived the cancel"


def test_a_child_that_honours_sigterm_ends_before_any_kill(tmp_path):
    process, _ = _started(tmp_path, _PLAIN_CHILD)

    process.stop(grace_s=30.0)
    exit_event, after_s = _poll_until_exit(process, timeout_s=10)

    assert exit_event.cancelled
    assert after_s < 5.0
    assert exit_event.returncode != 0


def test_a_second_stop_with_no_grace_kills_at_once(tmp_path):
    """Closing the scene abandons a run that is already cancelling: nothing may wait for its grace period."""
    process, grandchild = _started(tmp_path, _STUBBORN_CHILD)
    process.stop(grace_s=60.0)

    process.stop(grace_s=0.0)
    exit_event, after_s = _poll_until_exit(process, timeout_s=10)

    assert exit_event.cancelled and after_s < 5.0
    assert _gone_soon(grandchild)


def test_wait_also_kills_after_the_grace_period(tmp_path):
    """Scripts and tests block in wait(); it enforces the same grace period as the timer."""
    process, grandchild = _started(tmp_path, _STUBBORN_CHILD)
    process.stop(grace_s=1.0)

    events = process.wait(timeout_s=20)

    assert isinstance(events[-1], ExitEvent) and events[-1].cancelled
    assert _gone_soon(grandchild)
