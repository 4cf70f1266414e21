"""What the panel shows, built without Qt: path fields, the model's card, the run's log lines and clock.

The widget only puts these strings into labels, so they are tested with pytest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lvt.labels import CLASS_KEYS
from lvt.measure.reliability import model_reliability

from .process import DoneEvent, ErrorEvent, Event, ExitEvent, LogEvent, ProgressEvent

# A path field left empty reads as "" from the widget, but as "." once it went through pathlib.Path
# (the parameter node of older scenes stored Path("")): both mean "nothing chosen".
_EMPTY_PATH_TEXTS = ("", ".")
_CLASS_NAMES = {"liver": "liver", "vessel": "vessels", "tumor": "tumors"}


def optional_path(text: str | Path | None) -> Path | None:
    """The path a path field holds, or None when it is empty."""
    text = "" if text is None else str(text).strip()
    return None if text in _EMPTY_PATH_TEXTS else Path(text)


def path_text(path: str | Path | None) -> str:
    """What a path field shows for a stored path: nothing for an empty one, never "."."""
    chosen = optional_path(path)
    return "" if chosen is None else str(chosen)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A model manifest as a dictionary, read without torch (the panel shows it before anything is installed).

    Raises:
        ValueError: the file cannot be read or is not a JSON object.
    """
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable model manifest ({error})") from error
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: not a model manifest (a JSON object is expected)")
    return manifest


def model_card(manifest: Mapping[str, Any]) -> str:
    """The model's name and version, what it was trained on, and how it did on phantoms and on real CT."""
    lines = [f"{manifest.get('name', 'unnamed model')} {manifest.get('version', '')}".strip()]
    training = manifest.get("training") if isinstance(manifest.get("training"), Mapping) else {}
    if training.get("data"):
        lines.append(f"Trained on: {training['data']}")
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), Mapping) else {}
    phantoms = metrics.get("validation_phantoms_model_grid")
    if isinstance(phantoms, Mapping) and isinstance(phantoms.get("dice"), Mapping):
        lines.append(f"Phantom validation: Dice {_dice_text(phantoms['dice'])}")
    lines.append(model_reliability(manifest) or "")
    return "\n".join(line for line in lines if line)


def _dice_text(dice: Mapping[str, Any]) -> str:
    return ", ".join(f"{_CLASS_NAMES[key]} {float(dice[key]):.2f}" for key in CLASS_KEYS if key in dice)


def model_card_of_file(path: str | Path | None) -> str:
    """:func:`model_card` of a manifest file, or why there is none (never raises: it only informs)."""
    if path is None:
        return ""
    try:
        return model_card(read_manifest(path))
    except ValueError as error:
        return str(error)


def format_elapsed(seconds: float) -> str:
    """A run's duration as the panel shows it: "0:07", "12:30", "1:02:03"."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def log_line(event: Event, previous_stage: str | None) -> str | None:
    """The line one event of the child adds to the panel's log; None when it adds nothing.

    Progress is logged once per stage (it arrives many times a second), everything the child
    prints as it is, errors and the end of the run in words.
    """
    if isinstance(event, ProgressEvent):
        if event.stage == previous_stage:
            return None
        return f"{event.stage}: {event.message}" if event.message else event.stage
    if isinstance(event, LogEvent):
        return event.text
    if isinstance(event, ErrorEvent):
        return f"error: {event.message}"
    if isinstance(event, DoneEvent):
        return f"results written to {event.output}"
    if isinstance(event, ExitEvent):
        if event.cancelled:
            return "cancelled"
        return "finished" if event.succeeded else f"ended with exit code {event.returncode}"
    return None
