"""Move a sigmoid class's decision threshold into the network's output bias, so the model file carries it.

A sigmoid head calls a voxel class c when sigmoid(z_c) > 0.5. Subtracting logit(t) from the bias of
c's output channel makes that sigmoid(z_c - logit(t)) > 0.5, that is sigmoid(z_c) > t: the same
weights with a threshold t, and every reader of LVT model files (inference, Slicer, older LVT) applies
it without a new manifest field. The sliding window averages the shifted probabilities of
overlapping windows, so the stitched decision equals "each window's probability above t" averaged,
not exactly the averaged probability above t; the threshold is chosen by scoring the shifted model
itself (Testing/Benchmarks/model_comparison/choose_tumor_threshold.py), so what is chosen is what ships.
"""

from __future__ import annotations

import math

import torch

from lvt.labels import CLASS_KEYS
from lvt.segment.network import UNet


def logit(probability: float) -> float:
    """log(p / (1 - p)); the bias offset that moves a sigmoid threshold from 0.5 to ``probability``."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"a decision threshold must lie strictly between 0 and 1, got {probability}")
    return math.log(probability / (1.0 - probability))


def shift_decision_threshold(network: UNet, class_key: str, threshold: float) -> None:
    """Make ``network`` call ``class_key`` where its probability was above ``threshold`` (in place).

    Every output head is shifted (the auxiliary ones too), so a later fine-tuning starts from a
    consistent model.

    Raises:
        ValueError: a softmax network (its classes compete: no per-class threshold), an unknown class,
            or a threshold outside (0, 1).
    """
    if network.config.head != "sigmoid":
        raise ValueError("only a sigmoid head has a decision threshold per class")
    if class_key not in CLASS_KEYS:
        raise ValueError(f"unknown class {class_key!r}; the classes are {', '.join(CLASS_KEYS)}")
    offset = logit(threshold)
    with torch.no_grad():
        for head in network.heads:
            head.bias[CLASS_KEYS.index(class_key)] -= offset
