"""The partial-label losses on hand-computed numbers: masking, per-sample normalisation, deep supervision;
and the combined Dice + BCE + focal-Tversky loss, down to a tiny real training run.

Every expected value is worked out in the comments from tiny tensors whose probabilities are simple
fractions (sigmoid(+-ln 3) = 3/4 or 1/4; softmax of log-probabilities gives those probabilities), so
no test recomputes the formula it checks.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lvt.errors import InputError
from lvt.labels import apply_hierarchy, exclusive_labels
from lvt.train.config import training_config_from_dict
from lvt.train.loop import model_manifest, run_training
from lvt.train.losses import (
    deep_supervision_targets,
    deep_supervision_weights,
    focal_tversky_loss,
    known_voxel_mask,
    loss_targets,
    lvt_loss,
    masked_combined_loss,
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


@pytest.mark.parametrize("loss", [masked_multilabel_loss, masked_combined_loss])
def test_unannotated_class_gets_exactly_zero_gradient(loss) -> None:
    logits = torch.randn(3, 3, 6, 6, 6)
    logits[0, 1] = -100.0  # an unannotated class predicted empty (sigmoid 0) on an empty target: 1 - TI = 0
    logits[1, 0] = 100.0  # an annotated class predicted full (sigmoid 1): no NaN may come from either
    logits.requires_grad_(True)
    targets = (torch.rand(3, 3, 6, 6, 6) > 0.5).float()
    targets[0, 1] = 0.0
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    loss(logits, targets, weights).backward()
    assert torch.isfinite(logits.grad).all()
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
        # MLx: at most one class per voxel, the one whose label value MC holds (channel k is value k + 1)
        assert mlx[level].sum(dim=1).max() <= 1
        assert torch.equal((mlx[level] * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1)).sum(dim=1).long(),
                           mc[level])
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


# The combined loss. Every focal-Tversky term below: 1 - TI with TI = (TP + 1) / (TP + 0.7 FN + 0.3 FP + 1),
# soft counts TP = sum(p y), FN = sum((1 - p) y), FP = sum(p (1 - y)), raised to the power 0.75.


def test_focal_tversky_weighs_missed_voxels_more_than_false_alarms() -> None:
    # y = [1, 1, 0], p = [3/4, 1/4, 3/4]: TP = 1, FN = 1/4 + 3/4 = 1, FP = 3/4
    #   TI = 2 / (1 + 0.7 + 0.225 + 1) = 2/2.925, 1 - TI = 37/117, loss = (37/117)^0.75 = 0.4217081
    # (alpha and beta swapped: 1 - 2/2.825, loss 0.3972616)
    p = torch.tensor([[[0.75, 0.25, 0.75]]])
    y = torch.tensor([[[1.0, 1.0, 0.0]]])
    assert focal_tversky_loss(p, y).item() == pytest.approx(0.4217081, abs=1e-6)
    # a perfect class costs (almost) nothing: 1 - TI is clamped at 1e-6, 1e-6^0.75 = 3.2e-5
    assert focal_tversky_loss(y, y).item() == pytest.approx(0.0, abs=1e-4)


def test_combined_loss_on_hand_computed_numbers() -> None:
    # One sample annotating liver and tumor (w = [1, 0, 1]); three voxels per class; logits +-ln 3.
    #   liver  y = [1, 1, 0], p = [3/4, 1/4, 3/4]:
    #     BCE  = (ln(4/3) + ln 4 + ln 4) / 3                                 = 1.0200903
    #     Dice = 1 - (2*1 + 1) / (2 + 19/16 + 1) = 1 - 48/67 = 19/67          = 0.2835821
    #     FT   = (37/117)^0.75 (above)                                        = 0.4217081
    #   tumor  y = [0, 0, 0], p = [1/4, 1/4, 1/4]:
    #     BCE  = ln(4/3)                                                      = 0.2876821
    #     Dice = 1 - 1 / (3/16 + 1) = 3/19                                    = 0.1578947
    #     FT   : TP = FN = 0, FP = 3/4: 1 - TI = 1 - 1/1.225 = 9/49, (9/49)^0.75 = 0.2805659
    #   vessel is not annotated (logit 5 on a 0 target) and must not count.
    #   sample loss = (1.7253805 + 0.7261427) / 2 = 1.2257616
    # A second sample annotating nothing adds nothing.
    logits = torch.tensor([[[LN3, -LN3, LN3], [5.0, 5.0, 5.0], [-LN3, -LN3, -LN3]],
                           [[5.0, 5.0, 5.0], [5.0, 5.0, 5.0], [5.0, 5.0, 5.0]]])
    targets = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                            [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert masked_combined_loss(logits, targets, weights).item() == pytest.approx(1.2257616, abs=1e-6)
    # the paper's ML loss on the same tensors: the same numbers without the FT terms
    assert masked_multilabel_loss(logits, targets, weights).item() == pytest.approx(
        (1.0200903 + 0.2835821 + 0.2876821 + 0.1578947) / 2, abs=1e-6)


def test_combined_loss_uses_multi_hot_targets_and_deep_supervision() -> None:
    # As the ML deep-supervision case above (all logits 0, p = 1/2; one foreground voxel at (1, 1, 1) of
    # 2x2x2 in every class, so ML = ln 2 + 0.4), plus the FT terms with multi-hot targets:
    #   level 0: TP = 1/2, FN = 1/2, FP = 7/2: 1 - TI = 1 - 1.5/2.9 = 14/29, (14/29)^0.75 = 0.5791586
    #   level 1: the single voxel is background: FP = 1/2: 1 - TI = 0.15/1.15 = 3/23, (3/23)^0.75 = 0.2170426
    #   total = ln 2 + 0.4 + 2/3 * 0.5791586 + 1/3 * 0.2170426 = 1.5516005
    # (exclusive targets, as MLx's, would leave liver and vessel empty at that voxel and give another number)
    outputs = [torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 3, 1, 1, 1)]
    masks = torch.zeros(1, 3, 2, 2, 2)
    masks[..., 1, 1, 1] = 1.0
    assert torch.equal(loss_targets(masks, "ml_dice_bce_ft"), masks)
    assert lvt_loss(outputs, masks, torch.ones(1, 3), "ml_dice_bce_ft").item() == pytest.approx(1.5516005, abs=1e-6)


def _tiny_config(tmp_path: Path, loss: str, steps: int = 40):
    """The conftest tiny-model recipe (coarse phantoms, 6 mm, 32^3 patches) with the given loss."""
    return training_config_from_dict({
        "model_name": "tiny", "output_dir": str(tmp_path / "run"), "spacing_mm": [6.0, 6.0, 6.0],
        "patch_size_zyx": [32, 32, 32], "batch_size": 2, "steps": steps, "validate_every": steps, "seed": 5,
        "loss": loss, "network": {"features_per_stage": [8, 16, 32], "deep_supervision_levels": 2},
        "optimizer": {"learning_rate": 0.01, "warmup_steps": 2},
        "datasets": [{"name": "ph", "kind": "phantom", "annotated": [1, 1, 1],
                      "phantom": {"count": 2, "seed": 21, "spacing_mm": [6.0, 6.0, 6.0]}}],
    }, tmp_path, source="test")


def test_config_accepts_the_combined_loss_and_its_models_decode_as_ml(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, "ml_dice_bce_ft")
    assert config.network.head == "sigmoid"
    manifest = model_manifest(config)
    assert (manifest.target, manifest.network.head) == ("ml", "sigmoid")
    with pytest.raises(InputError, match="ml_dice_bce_ft"):
        _tiny_config(tmp_path, "dice_bce_ft")


def test_tiny_training_lowers_the_combined_loss(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    result = run_training(_tiny_config(tmp_path, "ml_dice_bce_ft", steps=60), device="cpu")
    losses = [h["loss"] for h in result.history]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
