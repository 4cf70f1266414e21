"""Progress reporting and cancellation, passed into long core calls as plain parameters.

The core never prints: it calls ``progress`` and checks ``cancel``; the CLI renders a bar or JSON
lines and the Slicer module maps the same events to its progress bar.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from lvt.errors import CancelledError


@dataclass(frozen=True)
class Progress:
    """One progress event: ``done`` of ``total`` units of work in ``stage``."""

    stage: str
    done: float
    total: float
    message: str = ""

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, max(0.0, self.done / self.total))


ProgressCallback = Callable[[Progress], None]

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


def report(progress: ProgressCallback | None, stage: str, done: float, total: float, message: str = "") -> None:
    """Send a progress event if anybody listens."""
    if progress is not None:
        progress(Progress(stage, done, total, message))


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`CancelledError` when the cancel event is set; call between units of work."""
    if cancel is not None and cancel.is_set():
        raise CancelledError("cancelled by the user")


def checkpoint(progress: ProgressCallback | None, cancel: threading.Event | None, stage: str, done: float,
               total: float, message: str = "") -> None:
    """Report progress, then stop if the user cancelled: every reported step is also a cancel point."""
    report(progress, stage, done, total, message)
    check_cancel(cancel)
