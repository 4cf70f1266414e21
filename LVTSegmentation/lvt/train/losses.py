"""Partial-label losses of the LVT method (Østmo et al. 2026, Eq. 1 and Eq. 2).

- Multi-label masked (ML / MLx), Eq. 1: per sample, ``sum_k w_k * (BCE_k + Dice_k) / sum_k w_k``
  with w_k = 1 where the sample's dataset annotates class k. A sample with no annotated class adds
  nothing (the batch mean runs over annotated samples only), and a class with w_k = 0 receives
  exactly zero gradient. ML and MLx differ only in their targets (multi-hot vs exclusive).
- Multi-class masked (MC), Eq. 2: softmax over background + K classes; per sample, cross-entropy
  ``sum_i W_i l_i / sum_i W_i`` over the voxels whose label is known (mask W) plus soft Dice of its
  annotated classes on those voxels; the batch mean runs over the samples with a known voxel.
- Combined ``ml_dice_bce_ft`` (not in the paper): Eq. 1 with a third per-class term, the focal-Tversky
  loss of Abraham & Khan (2019), ``(1 - TI)^gamma`` with ``TI = (sum(py) + s) / (sum(py) + alpha sum((1-p)y)
  + beta sum(p(1-y)) + s)``. alpha = 0.7 weighs missed voxels over false alarms (beta = 0.3), the setting
  the authors found best for small lesions, where missing voxels is the common error; gamma = 0.75 (their
  1/gamma with gamma = 4/3) < 1 steepens the term as TI nears 1, so a nearly found lesion still pulls on
  the gradient where BCE and Dice have flattened. Same multi-hot targets, class mask and deep supervision
  as ML (shared code, not a copy); its models decode as ML.

Soft Dice is computed per sample and class over the patch, ``1 - (2 sum(yp) + s) / (sum(y^2) + sum(p^2) + s)``
with smoothing ``s`` so that an empty target with an empty prediction costs nothing. Deep supervision
builds every level's targets by one rule for all the losses (:func:`deep_supervision_targets`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from lvt.labels import NUM_CLASSES, PRIORITY_HIGH_TO_LOW, STRUCTURES
from lvt.segment.network_config import TARGET_OF_LOSS

LossName = Literal["ml", "mlx", "mc", "ml_dice_bce_ft"]  # the keys of TARGET_OF_LOSS
DICE_SMOOTH = 1.0
# Focal-Tversky defaults (Abraham & Khan 2019): false negatives weigh alpha, false positives beta; exponent gamma.
TVERSKY_ALPHA = 0.7
TVERSKY_BETA = 0.3
FOCAL_GAMMA = 0.75
# (1 - TI) is clamped here: its power gamma < 1 has an infinite slope at 0 (a perfect or an empty class).
_FOCAL_FLOOR = 1e-6


def soft_dice_loss(
    probabilities: torch.Tensor, targets: torch.Tensor, voxel_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft Dice loss per sample and class.

    Args:
        probabilities: (B, K, *spatial) in [0, 1].
        targets: (B, K, *spatial) in [0, 1].
        voxel_mask: optional (B, 1, *spatial) 0/1 mask of voxels that count.

    Returns:
        (B, K) float32 losses.
    """
    p = probabilities.float()
    y = targets.float()
    if voxel_mask is not None:
        p = p * voxel_mask
        y = y * voxel_mask
    dims = tuple(range(2, p.ndim))
    intersection = (p * y).sum(dims)
    denominator = (y * y).sum(dims) + (p * p).sum(dims)
    return 1.0 - (2.0 * intersection + DICE_SMOOTH) / (denominator + DICE_SMOOTH)


def focal_tversky_loss(probabilities: torch.Tensor, targets: torch.Tensor, alpha: float = TVERSKY_ALPHA,
                       beta: float = TVERSKY_BETA, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Focal-Tversky loss per sample and class, smoothed as :func:`soft_dice_loss` (an empty class costs nothing).

    Args:
        probabilities: (B, K, *spatial) in [0, 1].
        targets: (B, K, *spatial) in [0, 1].

    Returns:
        (B, K) float32 losses ``(1 - TI)^gamma``.
    """
    p = probabilities.float()
    y = targets.float()
    dims = tuple(range(2, p.ndim))
    true_positive = (p * y).sum(dims)
    missed = ((1.0 - p) * y).sum(dims)
    false_alarm = (p * (1.0 - y)).sum(dims)
    tversky = (true_positive + DICE_SMOOTH) / (true_positive + alpha * missed + beta * false_alarm + DICE_SMOOTH)
    return (1.0 - tversky).clamp(min=_FOCAL_FLOOR) ** gamma


def _mean_over_samples(per_sample: torch.Tensor, present: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean of the per-sample losses of the ``present`` samples; zero (with a graph) when none is.

    Eq. 1 and Eq. 2 normalise within each sample (by its annotated classes, by its known voxels),
    so every sample with something to learn weighs the same, however much of it is annotated.
    """
    if not bool(present.any()):
        return logits.sum() * 0.0
    return per_sample[present].mean()


def _class_masked_mean(per_class: torch.Tensor, class_weights: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Eq. 1's masking of (B, K) per-class losses: each sample's mean over its annotated classes, then over samples."""
    w = class_weights.to(logits.device, torch.float32)
    # where() instead of a product, so an unannotated class's loss (even NaN) cannot leak into the gradient
    per_class = torch.where(w > 0, per_class, torch.zeros_like(per_class)) * w
    weight_sum = w.sum(dim=1)
    return _mean_over_samples(per_class.sum(dim=1) / weight_sum.clamp(min=1.0), weight_sum > 0, logits)


def _bce_and_dice(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample and class (B, K): voxel-mean BCE and soft Dice; and the sigmoid probabilities."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    probabilities = torch.sigmoid(logits.float())
    return bce.mean(dim=tuple(range(2, logits.ndim))), soft_dice_loss(probabilities, targets), probabilities


def masked_multilabel_loss(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Eq. 1: class-masked BCE + soft Dice for a sigmoid head.

    Args:
        logits: (B, K, *spatial) raw network outputs.
        targets: (B, K, *spatial) float targets (multi-hot for ML, exclusive for MLx).
        class_weights: (B, K) 0/1 per-sample class weights w.

    Returns:
        Scalar loss; zero (with a graph) when no sample annotates any class.
    """
    bce, dice, _ = _bce_and_dice(logits, targets)
    return _class_masked_mean(bce + dice, class_weights, logits)


def masked_combined_loss(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Eq. 1 with BCE + soft Dice + focal Tversky per class (``ml_dice_bce_ft``).

    Arguments and result as :func:`masked_multilabel_loss` (multi-hot targets).
    """
    bce, dice, probabilities = _bce_and_dice(logits, targets)
    return _class_masked_mean(bce + dice + focal_tversky_loss(probabilities, targets), class_weights, logits)


def known_voxel_mask(exclusive_index: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Eq. 2's voxel mask W: voxels whose label is known under partial annotation.

    A voxel labelled with an annotated foreground class is known; a background voxel is known only
    when the sample annotates every class (otherwise it may be an unannotated structure).

    Args:
        exclusive_index: (B, *spatial) long, 0 background, k + 1 for class k.
        class_weights: (B, K) 0/1.

    Returns:
        (B, *spatial) bool.
    """
    w = class_weights.to(exclusive_index.device) > 0
    fully_annotated = w.all(dim=1)
    lookup = torch.cat((fully_annotated[:, None], w), dim=1)  # (B, K + 1): is label value v known?
    return torch.gather(lookup, 1, exclusive_index.flatten(1)).view_as(exclusive_index)


def masked_multiclass_loss(
    logits: torch.Tensor, exclusive_index: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """Eq. 2: voxel-masked softmax cross-entropy + soft Dice on the known voxels, normalised per sample.

    Args:
        logits: (B, K + 1, *spatial), channel 0 is background.
        exclusive_index: (B, *spatial) long labels 0..K.
        class_weights: (B, K) 0/1.

    Returns:
        Scalar loss; zero (with a graph) when no voxel is known.
    """
    known = known_voxel_mask(exclusive_index, class_weights)
    n_known = known.flatten(1).sum(dim=1).float()
    ce = F.cross_entropy(logits.float(), exclusive_index, reduction="none")
    ce = torch.where(known, ce, torch.zeros_like(ce)).flatten(1).sum(dim=1) / n_known.clamp(min=1.0)
    one_hot = F.one_hot(exclusive_index, logits.shape[1]).movedim(-1, 1)[:, 1:]
    probabilities = torch.softmax(logits.float(), dim=1)[:, 1:]
    dice = soft_dice_loss(probabilities, one_hot, known[:, None].float())
    w = class_weights.to(logits.device, torch.float32)
    dice = (dice * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)
    return _mean_over_samples(ce + dice, n_known > 0, logits)


def deep_supervision_weights(levels: int) -> list[float]:
    """Weights 1, 1/2, 1/4, ... normalised to sum 1 (METHOD.md: weights halving)."""
    raw = [0.5**d for d in range(levels)]
    return [r / sum(raw) for r in raw]


def loss_targets(masks: torch.Tensor, loss: LossName) -> torch.Tensor:
    """What ``loss`` compares the logits with, from (B, K, *spatial) 0/1 multi-hot class masks.

    ML (and the combined loss): the multi-hot masks. MLx: exclusive one-hot float masks (priority
    tumor > vessel > liver). MC: the exclusive (B, *spatial) long index, 0 background and k + 1 for class k.
    """
    target = TARGET_OF_LOSS[loss]
    if target == "ml":
        return masks
    index = torch.zeros(masks.shape[0], *masks.shape[2:], dtype=torch.long, device=masks.device)
    for channel in reversed(PRIORITY_HIGH_TO_LOW):  # ascending priority: later wins
        index[masks[:, channel] > 0] = STRUCTURES[channel].label_value
    if target == "mc":
        return index
    return F.one_hot(index, NUM_CLASSES + 1).movedim(-1, 1)[:, 1:].to(masks.dtype)


def deep_supervision_targets(masks: torch.Tensor, loss: LossName, levels: int) -> list[torch.Tensor]:
    """The targets of every deep-supervision level, full resolution first (factor 2 per level).

    One rule for all the losses: the class masks are downsampled by nearest neighbour (the first
    voxel of each block, as nnU-Net), then turned into the loss's targets. Nearest commutes with the
    pointwise target rules and with Eq. 2's known-voxel mask, so ML, MLx and MC see the same labels
    at every level and an auxiliary target is never a blend of classes.
    """
    return [loss_targets(masks[..., ::2**d, ::2**d, ::2**d], loss) for d in range(levels)]


# The loss of one deep-supervision level, by loss name.
LOSS_TERMS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ml": masked_multilabel_loss, "mlx": masked_multilabel_loss, "mc": masked_multiclass_loss,
    "ml_dice_bce_ft": masked_combined_loss,
}


def lvt_loss(
    outputs: torch.Tensor | list[torch.Tensor],
    masks: torch.Tensor,
    class_weights: torch.Tensor,
    loss: LossName,
) -> torch.Tensor:
    """The training loss for any variant, with deep supervision when ``outputs`` is a list.

    Args:
        outputs: logits, or a list of logits from full resolution down (factor 2 per level).
        masks: (B, K, *spatial) 0/1 multi-hot class masks (hierarchy applied), as the patches give them.
        class_weights: (B, K) 0/1.
        loss: "ml", "mlx", "mc" or "ml_dice_bce_ft".
    """
    outputs = outputs if isinstance(outputs, list) else [outputs]
    levels = zip(deep_supervision_weights(len(outputs)), outputs,
                 deep_supervision_targets(masks, loss, len(outputs)), strict=True)
    term = LOSS_TERMS[loss]
    total = outputs[0].new_zeros((), dtype=torch.float32)
    for weight, logits, targets in levels:
        total = total + weight * term(logits, targets, class_weights)
    return total

