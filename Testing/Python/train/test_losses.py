"""The partial-label losses on hand-computed numbers: masking, per-sample normalisation, deep supervision.

Every expected value is worked out in the comments from tiny tensors whose probabilities are simple
fractions (sigmoid(+-ln 3) = 3/4 or 1/4; softmax of log-probabilities gives those probabilities), so
no test recomputes the formula it checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvt.labels import apply_hierarchy, exclusive_labels
from lvt.train.losses import (
    deep_supervision_targets,
    deep_supervision_weights,
    known_voxel_mask,
    loss_targets,
    lvt_loss,
    masked_multiclass_loss,
    masked_multilabel_loss,
)

LN3 = math.log(3.0)


def test_eq1_is_normalised_per_sample_by_its_annotated_classes() -> None:
    # Two voxels per class. With logits +-ln 3 the sigmoid is 3/4 or 1/4, so every BCE term below is
    # -ln(3/4) = ln(4/3) (each prediction leans the right way by 3/4).
    # Sample 0 annotates liver and tumor (w = [1, 0, 1]):
    #   liver  p = [3/4, 3/4], y = [1, 1]: Dice = 1 - (2*1.5 + 1) / (2 + 1.125 + 1) = 1 - 4/4.125 = 1/33
    #   tumor  p = [1/4, 3/4], y = [0, 1]: Dice = 1 - (2*0.75 + 1) / (1 + 0.625 + 1) = 1 - 2.5/2.625 = 1/21
    #   vessel is not annotated: its large loss (logit 5 on a 0 target) must not count
    #   sample loss = ln(4/3) + (1/33 + 1/21) / 2 = ln(4/3) + 3/77
    # Sample 1 annotates liver only (w = [1, 0, 0]): p = [3/4, 1/4], y = [1, 0]: Dice = 1/21
    #   sample loss = ln(4/3) + 1/21
    # Batch: mean over the samples = ln(4/3) + (3/77 + 1/21) / 2 = ln(4/3) + 10/231 = 0.3309721
    # (normalising by all annotated classes of the batch instead would give 0.3295289)
    logits = torch.tensor([[[LN3, LN3], [5.0, -5.0], [-LN3, LN3]],
                           [[LN3, -LN3], [5.0, 5.0], [-5.0, 5.0]]])
    targets = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]],
                            [[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]])
    weights = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert masked_multilabel_loss(logits, targets, weights).item() == pytest.approx(0.3309721, abs=1e-6)
    assert masked_multilabel_loss(logits[:1], targets[:1], weights[:1]).item() == pytest.approx(
        math.log(4 / 3) + 3 / 77, abs=1e-6)


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


# softmax(log p) = p: each voxel's (background, liver, vessel, tumor) probabilities
_TUMOR_HALF = [0.25, 0.125, 0.125, 0.5]
_TUMOR_QUARTER = [0.5, 0.125, 0.125, 0.25]
_UNIFORM = [0.25, 0.25, 0.25, 0.25]


def _log_probabilities(*samples: list[list[float]]) -> torch.Tensor:
    """(B, 4, N) logits from per-voxel probabilities."""
    return torch.tensor(samples).log().movedim(-1, 1)


def test_eq2_cross_entropy_is_normalised_per_sample_by_its_known_voxels() -> None:
    # Both samples annotate the tumor only (w = [0, 0, 1]), so only tumor voxels are known.
    # Sample A: labels [tumor, bg, bg], one known voxel with p_tumor = 1/2:
    #   CE = ln 2;  Dice(tumor) = 1 - (2*0.5 + 1) / (1 + 0.25 + 1) = 1 - 2/2.25 = 1/9
    # Sample B: labels [tumor, tumor, bg], two known voxels with p_tumor = 1/2 and 1/4:
    #   CE = (ln 2 + ln 4) / 2 = 1.5 ln 2;  Dice = 1 - (2*0.75 + 1) / (2 + 0.3125 + 1) = 1 - 2.5/3.3125 = 13/53
    # Per sample, then the mean of the samples:
    #   (ln 2 + 1/9 + 1.5 ln 2 + 13/53) / 2 = 1.25 ln 2 + 85/477 = 0.8664340 + 0.1781971 = 1.0446311
    # (CE over all three known voxels of the batch would give 4/3 ln 2 + 85/477 = 1.1023933)
    logits = _log_probabilities([_TUMOR_HALF, _UNIFORM, _UNIFORM], [_TUMOR_HALF, _TUMOR_QUARTER, _UNIFORM])
    index = torch.tensor([[3, 0, 0], [3, 3, 0]])
    weights = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert masked_multiclass_loss(logits, index, weights).item() == pytest.approx(1.0446311, abs=1e-6)
    # A third sample with no known voxel (liver annotated, only background in the patch) adds nothing.
    with_empty = torch.cat((logits, _log_probabilities([_TUMOR_HALF, _UNIFORM, _UNIFORM])))
    index_empty = torch.cat((index, torch.tensor([[0, 0, 0]])))
    weights_empty = torch.cat((weights, torch.tensor([[1.0, 0.0, 0.0]])))
    assert masked_multiclass_loss(with_empty, index_empty, weights_empty).item() == pytest.approx(1.0446311, abs=1e-6)


def test_eq2_ignores_unknown_voxels_and_an_unknown_batch_costs_nothing() -> None:
    logits = _log_probabilities([_TUMOR_HALF, _UNIFORM, _UNIFORM], [_TUMOR_HALF, _TUMOR_QUARTER, _UNIFORM])
    logits.requires_grad_(True)
    index = torch.tensor([[3, 0, 0], [3, 3, 0]])
    weights = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    loss = masked_multiclass_loss(logits, index, weights)
    loss.backward()
    unknown = ~known_voxel_mask(index, weights)  # background voxels: the tumor-only dataset may have missed a liver
    assert unknown.sum() == 3 and (logits.grad.movedim(1, -1)[unknown] == 0).all()
    assert (logits.grad.movedim(1, -1)[~unknown] != 0).any()
    changed = logits.detach().clone()
    changed[0, :, 1] = torch.tensor([5.0, -3.0, 1.0, 2.0])
    assert masked_multiclass_loss(changed, index, weights).item() == pytest.approx(loss.item(), abs=1e-7)
    nothing = masked_multiclass_loss(logits, index, torch.zeros(2, 3))
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_loss_targets_for_each_loss() -> None:
    # multi-hot masks (hierarchy applied) of four voxels: liver; liver+vessel; liver+tumor; all three
    masks = torch.tensor([[[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 1, 1]]], dtype=torch.float32)
    assert torch.equal(loss_targets(masks, "ml"), masks)
    assert loss_targets(masks, "mc").tolist() == [[1, 2, 3, 3]]  # tumor > vessel > liver
    assert loss_targets(masks, "mlx").tolist() == [[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]]


def _multi_hot(masks: torch.Tensor) -> torch.Tensor:
    """(B, 3, ...) float masks with the hierarchy applied (vessel and tumor are liver)."""
    return torch.from_numpy(apply_hierarchy(masks.movedim(1, 0).numpy())).movedim(0, 1).float()


def test_deep_supervision_targets_follow_one_rule_for_every_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    masks = _multi_hot(torch.rand(2, 3, 8, 8, 8, generator=generator) > 0.6)
    weights = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    ml = deep_supervision_targets(masks, "ml", 3)
    mlx = deep_supervision_targets(masks, "mlx", 3)
    mc = deep_supervision_targets(masks, "mc", 3)
    for level, size in enumerate((8, 4, 2)):
        assert ml[level].shape == (2, 3, size, size, size) and mc[level].shape == (2, size, size, size)
        # the MC labels at this level are the ML targets of the same level made exclusive (no blend of classes)
        for sample in range(2):
            exclusive = exclusive_labels(ml[level][sample].numpy().astype(bool))
            assert np.array_equal(exclusive, mc[level][sample].numpy())
        assert torch.equal(F.one_hot(mc[level], 4).movedim(-1, 1)[:, 1:].float(), mlx[level])
        # and Eq. 2's known-voxel mask of a level is the full-resolution mask at the same voxels
        step = 2**level
        assert torch.equal(known_voxel_mask(mc[level], weights),
                           known_voxel_mask(mc[0], weights)[:, ::step, ::step, ::step])


def test_deep_supervision_weights_halve_and_levels_add_up() -> None:
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    # Two levels, all logits 0 (p = 1/2, so every BCE term is ln 2), all classes annotated.
    # Full resolution 2x2x2 with one foreground voxel, at (1, 1, 1), in every class:
    #   Dice = 1 - (2*0.5 + 1) / (1 + 8*0.25 + 1) = 1 - 2/4 = 1/2
    # Level 1 (1 voxel) takes the first voxel of the block, (0, 0, 0): background:
    #   Dice = 1 - 1 / (0 + 0.25 + 1) = 1/5
    # total = 2/3 (ln 2 + 1/2) + 1/3 (ln 2 + 1/5) = ln 2 + 0.4 = 1.0931472
    outputs = [torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 3, 1, 1, 1)]
    masks = torch.zeros(1, 3, 2, 2, 2)
    masks[..., 1, 1, 1] = 1.0
    assert lvt_loss(outputs, masks, torch.ones(1, 3), "ml").item() == pytest.approx(1.0931472, abs=1e-6)
