"""Qt-free logic of the LVTTraining module: ``lvt train`` run as a child process, tested with pytest."""

from .training_process import (
    CANCEL_GRACE_S,
    TrainingProgress,
    TrainingRun,
    start_training,
    train_command,
    training_arguments,
)

__all__ = [
    "CANCEL_GRACE_S",
    "TrainingProgress",
    "TrainingRun",
    "start_training",
    "train_command",
    "training_arguments",
]
