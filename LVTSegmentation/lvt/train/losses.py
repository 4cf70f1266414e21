"""Partial-label losses of the LVT method (Østmo et al. 2026, Eq. 1 and Eq. 2).

- Multi-label masked (ML / MLx), Eq. 1: per sample, ``sum_k w_k * (BCE_k + Dice_k) / sum_k w_k``
  with w_k = 1 where the sample's dataset annotates class k. A sample with no annotated class adds
  nothing (the batch mean runs over annotated samples only), and a class with w_k = 0 receives
  exactly zero gradient. ML and MLx differ only in their targets (multi-hot vs exclusive).
- Multi-class masked (MC), Eq. 2: softmax over background + K classes; cross-entropy averaged over
  the voxels whose label is known (mask W), plus soft Dice on the known voxels of annotated classes.

Soft Dice is computed per sample and class over the patch, ``1 - (2 sum(yp) + s) / (sum(y^2) + sum(p^2) + s)``
with smoothing ``s`` so that an empty target with an empty prediction costs nothing.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossName = Literal["ml", "mlx", "mc"]
DICE_SMOOTH = 1.0


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


def masked_multilabel_loss(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Eq. 1: class-masked BCE + soft Dice for a sigmoid head.

    Args:
        logits: (B, K, *spatial) raw network outputs.
        targets: (B, K, *spatial) float targets (multi-hot for ML, exclusive for MLx).
        class_weights: (B, K) 0/1 per-sample class weights w.

    Returns:
        Scalar loss; zero (with a graph) when no sample annotates any class.
    """
    w = class_weights.to(logits.device, torch.float32)
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    bce = bce.mean(dim=tuple(range(2, logits.ndim)))
    dice = soft_dice_loss(torch.sigmoid(logits.float()), targets)
    # where() instead of a product, so an unannotated class's loss (even NaN) cannot leak into the gradient
    per_class = torch.where(w > 0, bce + dice, torch.zeros_like(bce)) * w
    weight_sum = w.sum(dim=1)
    annotated = weight_sum > 0
    per_sample = per_class.sum(dim=1) / weight_sum.clamp(min=1.0)
    if not bool(annotated.any()):
        return logits.sum() * 0.0
    return per_sample[annotated].mean()


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
    """Eq. 2: voxel-masked softmax cross-entropy + soft Dice on the known voxels.

    Args:
        logits: (B, K + 1, *spatial), channel 0 is background.
        exclusive_index: (B, *spatial) long labels 0..K.
        class_weights: (B, K) 0/1.

    Returns:
        Scalar loss; zero (with a graph) when no voxel is known.
    """
    known = known_voxel_mask(exclusive_index, class_weights)
    n_known = known.sum()
    if int(n_known) == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), exclusive_index, reduction="none")
    ce = (ce * known).sum() / n_known
    num_classes = logits.shape[1] - 1
    one_hot = F.one_hot(exclusive_index, num_classes + 1).movedim(-1, 1)[:, 1:]
    probabilities = torch.softmax(logits.float(), dim=1)[:, 1:]
    dice = soft_dice_loss(probabilities, one_hot, known[:, None].float())
    w = class_weights.to(logits.device, torch.float32)
    dice_term = (dice * w).sum() / w.sum().clamp(min=1.0)
    return ce + dice_term


def deep_supervision_weights(levels: int) -> list[float]:
    """Weights 1, 1/2, 1/4, ... normalised to sum 1 (METHOD.md: weights halving)."""
    raw = [0.5**d for d in range(levels)]
    return [r / sum(raw) for r in raw]


def downsample_targets(targets: torch.Tensor, factor: int) -> torch.Tensor:
    """Downsample targets for a deep-supervision level: area average for float maps, stride for labels."""
    if factor == 1:
        return targets
    if targets.is_floating_point():
        return F.avg_pool3d(targets, kernel_size=factor, stride=factor)
    return targets[..., ::factor, ::factor, ::factor]


def lvt_loss(
    outputs: torch.Tensor | list[torch.Tensor],
    multi_label_targets: torch.Tensor,
    exclusive_index: torch.Tensor,
    class_weights: torch.Tensor,
    loss: LossName,
) -> torch.Tensor:
    """The training loss for any variant, with deep supervision when ``outputs`` is a list.

    Args:
        outputs: logits, or a list of logits from full resolution down (factor 2 per level).
        multi_label_targets: (B, K, *spatial) float targets for the sigmoid head (already
            multi-hot for ML or exclusive for MLx).
        exclusive_index: (B, *spatial) long exclusive labels (used by MC).
        class_weights: (B, K) 0/1.
        loss: "ml", "mlx" or "mc".
    """
    outputs = outputs if isinstance(outputs, list) else [outputs]
    total = outputs[0].new_zeros((), dtype=torch.float32)
    for level, (weight, logits) in enumerate(zip(deep_supervision_weights(len(outputs)), outputs, strict=True)):
        factor = 2**level
        if loss == "mc":
            term = masked_multiclass_loss(logits, downsample_targets(exclusive_index, factor), class_weights)
        else:
            targets = downsample_targets(multi_label_targets, factor)
            term = masked_multilabel_loss(logits, targets, class_weights)
        total = total + weight * term
    return total
