"""Terminal side of long jobs: a tqdm progress bar or JSON lines, and Ctrl-C / SIGTERM as a cancel event.

Used by the ``lvt`` command and ``LVTTraining/LVTTrainingScripts/train.py``; the core itself never prints.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, TextIO

from lvt.progress import Progress, ProgressCallback, overall_fraction

if TYPE_CHECKING:
    from tqdm import tqdm

ProgressStyle = Literal["bar", "json", "none"]

BAR_FORMAT = "{desc:>11} {percentage:5.1f}%|{bar}| {elapsed}<{remaining}{postfix}"
_OPEN_BARS: list[tqdm] = []  # the tqdm bar of the running job (one job per process), closed when it ends


def json_progress(stream: TextIO | None = None) -> ProgressCallback:
    """One JSON object per line on stdout (the Slicer module reads these)."""

    def emit(event: Progress) -> None:
        output = stream or sys.stdout
        output.write(json.dumps({"event": "progress", "stage": event.stage, "done": event.done, "total": event.total,
                                 "fraction": round(overall_fraction(event), 4), "message": event.message}) + "\n")
        output.flush()

    return emit


def bar_progress(stream: TextIO | None = None) -> ProgressCallback:
    """A tqdm bar on stderr: the stage as its label, the whole job's fraction as its length.

    Redrawn at most 10 times a second on a terminal (every 5 s into a log file) and at each new stage;
    closed, leaving its last line, when the job (or a stage outside the weights) is complete.
    """
    from tqdm import tqdm  # here, not at the top: the JSON progress of the Slicer process does without it

    output = stream or sys.stderr
    terminal = output.isatty()

    def emit(event: Progress) -> None:
        fraction = overall_fraction(event)
        if not _OPEN_BARS:  # drawn at once with the first event's stage and fraction
            _OPEN_BARS.append(tqdm(total=1.0, initial=fraction, desc=event.stage, postfix=event.message, file=output,
                                   mininterval=0.1 if terminal else 5.0, miniters=0, dynamic_ncols=terminal,
                                   ncols=None if terminal else 100, bar_format=BAR_FORMAT))
        bar = _OPEN_BARS[0]
        new_stage = bar.desc != event.stage
        bar.set_description_str(event.stage, refresh=False)
        bar.set_postfix_str(event.message, refresh=False)
        bar.update(fraction - bar.n)
        if new_stage:
            bar.refresh()
        if fraction >= 1.0:
            close_progress_bars()

    return emit


def close_progress_bars() -> None:
    """End the unfinished bar on its own line, so that an error message that follows is not written into it."""
    for bar in _OPEN_BARS:
        bar.close()
    _OPEN_BARS.clear()


def make_progress(style: ProgressStyle) -> ProgressCallback | None:
    """The progress callback of ``--progress``: a bar, JSON lines, or nothing."""
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
