"""A PNG of the training loss and validation Dice curves, written at the end of a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_history(history: list[dict], path: Path) -> None:
    """Plot the (smoothed) loss and per-class validation Dice against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = np.array([h["step"] for h in history])
    losses = np.array([h["loss"] for h in history])
    width = max(1, len(losses) // 50)
    smoothed = np.convolve(losses, np.ones(width) / width, mode="valid")
    figure, (loss_axes, dice_axes) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axes.plot(steps, losses, color="0.8", linewidth=0.6, label="loss")
    loss_axes.plot(steps[width - 1:], smoothed, color="C0", label=f"mean of {width}")
    loss_axes.set(xlabel="step", ylabel="training loss", yscale="log", title="Training loss")
    loss_axes.legend()
    validated = [h for h in history if "validation" in h]
    for key in ("liver", "vessel", "tumor"):
        points = [(h["step"], h["validation"]["dice"][key]) for h in validated if key in h["validation"]["dice"]]
        if points:
            dice_axes.plot(*zip(*points, strict=True), marker="o", label=key)
    dice_axes.set(xlabel="step", ylabel="Dice", ylim=(0, 1), title="Validation Dice")
    if validated:
        dice_axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(path)
