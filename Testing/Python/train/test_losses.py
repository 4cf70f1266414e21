"""The partial-label losses: masking, normalisation, zero gradients, no NaN (METHOD.md Eq. 1 and 2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lvt.labels import apply_hierarchy, exclusive_labels
from lvt.train.losses import (
    DICE_SMOOTH,
    deep_supervision_weights,
    known_voxel_mask,
    lvt_loss,
    masked_multiclass_loss,
    masked_multilabel_loss,
    soft_dice_loss,
)


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_eq1_normalises_by_annotated_classes_on_a_hand_computed_case() -> None:
    # one sample, two voxels, three classes; only liver and tumor annotated
    logits = torch.tensor([[[0.0, 2.0], [5.0, -5.0], [-1.0, 1.0]]])
    targets = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
    weights = torch.tensor([[1.0, 0.0, 1.0]])
    expected = 0.0
    for k in (0, 2):
        bce = sum(_bce(float(logits[0, k, i]), float(targets[0, k, i])) for i in range(2)) / 2
        p = torch.sigmoid(logits[0, k])
        y = targets[0, k]
        dice = 1 - (2 * float((p * y).sum()) + DICE_SMOOTH) / (float((y * y).sum() + (p * p).sum()) + DICE_SMOOTH)
        expected += bce + dice
    expected /= 2  # two annotated classes
    assert masked_multilabel_loss(logits, targets, weights).item() == pytest.approx(expected, rel=1e-5)


def test_unannotated_class_gets_exactly_zero_gradient() -> None:
    logits = torch.randn(3, 3, 6, 6, 6, requires_grad=True)
    targets = (torch.rand(3, 3, 6, 6, 6) > 0.5).float()
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    masked_multilabel_loss(logits, targets, weights).backward()
    for b in range(3):
        for k in range(3):
            norm = logits.grad[b, k].abs().sum().item()
            assert (norm == 0.0) == (weights[b, k] == 0), (b, k, norm)


def test_sample_without_annotation_contributes_nothing_and_no_nan() -> None:
    logits = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    targets = torch.rand(2, 3, 4, 4, 4).round()
    alone = masked_multilabel_loss(logits[:1], targets[:1], torch.tensor([[1.0, 1.0, 1.0]]))
    both = masked_multilabel_loss(logits, targets, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert both.item() == pytest.approx(alone.item(), rel=1e-6)
    nothing = masked_multilabel_loss(logits, targets, torch.zeros(2, 3))
    nothing.backward()
    assert nothing.item() == 0.0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() == 0


def test_eq2_voxel_mask_keeps_only_known_voxels() -> None:
    # labels: 0 bg, 1 liver, 2 vessel, 3 tumor; dataset annotates vessel + tumor only (Task08)
    index = torch.tensor([[0, 1, 2, 3]])
    known = known_voxel_mask(index, torch.tensor([[0.0, 1.0, 1.0]]))
    assert known.tolist() == [[False, False, True, True]]
    fully = known_voxel_mask(index, torch.tensor([[1.0, 1.0, 1.0]]))
    assert fully.all()


def test_eq2_cross_entropy_is_averaged_over_known_voxels_only() -> None:
    logits = torch.randn(1, 4, 2, 2, 2)
    index = torch.tensor([[[[0, 1], [2, 3]], [[0, 0], [3, 3]]]])
    weights = torch.tensor([[0.0, 1.0, 1.0]])
    known = known_voxel_mask(index, weights)
    ce = F.cross_entropy(logits, index, reduction="none")
    expected_ce = (ce * known).sum() / known.sum()
    probs = torch.softmax(logits, 1)[:, 1:]
    one_hot = F.one_hot(index, 4).movedim(-1, 1)[:, 1:]
    dice = soft_dice_loss(probs, one_hot, known[:, None].float())
    expected = expected_ce + (dice * weights).sum() / weights.sum()
    assert masked_multiclass_loss(logits, index, weights).item() == pytest.approx(expected.item(), rel=1e-5)
    # changing the logits at an unknown voxel (label 0, background not annotated) changes nothing in CE
    changed = logits.clone()
    changed[0, :, 0, 0, 0] += torch.tensor([5.0, -3.0, 1.0, 2.0])
    ce_changed = (F.cross_entropy(changed, index, reduction="none") * known).sum() / known.sum()
    assert ce_changed.item() == pytest.approx(expected_ce.item(), rel=1e-6)


def test_multi_hot_hierarchy_and_priority() -> None:
    masks = torch.zeros(3, 1, 1, 4, dtype=torch.bool).numpy()
    masks[0, 0, 0, 0] = True  # liver
    masks[1, 0, 0, 1] = True  # vessel only (exclusive dataset label)
    masks[2, 0, 0, 2] = True  # tumor only
    masks[1, 0, 0, 3] = masks[2, 0, 0, 3] = True  # both: tumor wins
    multi = apply_hierarchy(masks)
    assert multi[0, 0, 0].tolist() == [True, True, True, True]
    assert exclusive_labels(multi)[0, 0].tolist() == [1, 2, 3, 3]


def test_deep_supervision_weights_halve_and_sum_to_one() -> None:
    weights = deep_supervision_weights(3)
    assert weights == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    torch.manual_seed(0)
    outputs = [torch.randn(1, 3, 8, 8, 8), torch.randn(1, 3, 4, 4, 4), torch.randn(1, 3, 2, 2, 2)]
    targets = (torch.rand(1, 3, 8, 8, 8) > 0.5).float()
    index = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    w = torch.ones(1, 3)
    combined = lvt_loss(outputs, targets, index, w, "ml")
    expected = sum(
        weight * masked_multilabel_loss(logits, F.avg_pool3d(targets, 2**level) if level else targets, w)
        for level, (weight, logits) in enumerate(zip(weights, outputs, strict=True))
    )
    assert combined.item() == pytest.approx(float(expected), rel=1e-6)
