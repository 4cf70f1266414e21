"""Terminal side of long jobs: a progress bar or JSON lines, and Ctrl-C / SIGTERM as a cancel event.

Used by the ``lvt`` command and ``LVTTraining/train.py``; the core itself never prints.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Literal, TextIO

from lvt.progress import Progress, ProgressCallback

ProgressStyle = Literal["bar", "json", "none"]

# Share of the whole job each stage of `lvt segment` takes, so one overall fraction can be shown.
STAGE_WEIGHTS = {"read": 0.05, "resample": 0.05, "inference": 0.7, "postprocess": 0.08, "measure": 0.02,
                 "surfaces": 0.05, "report": 0.05}


def overall_fraction(event: Progress) -> float:
    """Fraction of the whole job done, from the stage weights (unknown stages count as their own)."""
    if event.stage not in STAGE_WEIGHTS:
        return event.fraction
    order = list(STAGE_WEIGHTS)
    done_before = sum(STAGE_WEIGHTS[s] for s in order[: order.index(event.stage)])
    return min(1.0, done_before + STAGE_WEIGHTS[event.stage] * event.fraction)


def json_progress(stream: TextIO = sys.stdout) -> ProgressCallback:
    """One JSON object per line (the Slicer module reads these)."""

    def emit(event: Progress) -> None:
        stream.write(json.dumps({"event": "progress", "stage": event.stage, "done": event.done, "total": event.total,
                                 "fraction": round(overall_fraction(event), 4), "message": event.message}) + "\n")
        stream.flush()

    return emit


def bar_progress(stream: TextIO = sys.stderr, width: int = 30) -> ProgressCallback:
    """A one-line bar redrawn at most 10 times a second on a terminal; a log line every 5 s otherwise."""
    state = {"last": 0.0, "stage": ""}
    interactive = stream.isatty()
    interval = 0.1 if interactive else 5.0

    def emit(event: Progress) -> None:
        now = time.monotonic()
        finished = event.done >= event.total
        if now - state["last"] < interval and not finished and event.stage == state["stage"]:
            return
        state["last"], state["stage"] = now, event.stage
        filled = int(width * event.fraction)
        bar = "#" * filled + "." * (width - filled)
        line = f"{event.stage:>11} [{bar}] {100 * event.fraction:5.1f}% {event.message}"
        stream.write("\r" + line[:160].ljust(160) if interactive else line + "\n")
        if finished and interactive:
            stream.write("\n")
        stream.flush()

    return emit


def make_progress(style: ProgressStyle) -> ProgressCallback | None:
    if style == "json":
        return json_progress()
    if style == "bar":
        return bar_progress()
    return None


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs; the core checks it between units of work."""
    event = threading.Event()
    previous = {}

    def handler(signum: int, frame: object) -> None:
        event.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[signum] = signal.signal(signum, handler)
    try:
        yield event
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
