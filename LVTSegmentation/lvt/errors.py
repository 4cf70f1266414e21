"""Exception types shared by the core, so every door (CLI, Slicer, training) can map them to one message."""

from __future__ import annotations

from pathlib import Path


class LVTError(Exception):
    """Base class of every error the core raises on purpose."""


class InputError(LVTError, ValueError):
    """A user-supplied file or option is unusable; the message names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ModelFileError(LVTError, RuntimeError):
    """A model file is missing, corrupt, or does not match its manifest."""


class CancelledError(LVTError, RuntimeError):
    """The user asked a long job to stop; nothing half-written is left behind."""
