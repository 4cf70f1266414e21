"""Spatial augmentation of a training batch, in the paper's order: crop-resize, rotation, flips.

The three are composed into one affine per sample and applied with a single ``grid_sample`` on the
training device, after random windowing (so the zero padding of grid_sample reads as air). Parameters
are drawn on the CPU from an explicit generator, so a run is reproducible and resumable, and a
distributed run draws the same global batch on every rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lvt.segment.window import Window, apply_windows_batch, sample_windows
from lvt.train.config import AugmentConfig


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters of one batch: (B, 3, 3) voxel-space matrices and window settings."""

    matrices: torch.Tensor
    levels: torch.Tensor
    widths: torch.Tensor

    def select(self, index: slice) -> AugmentParams:
        return AugmentParams(self.matrices[index], self.levels[index], self.widths[index])


def _rotation_matrix(angles_rad: torch.Tensor) -> torch.Tensor:
    """Rotation about the three axes (z, y, x order of the angles)."""
    cz, cy, cx = torch.cos(angles_rad)
    sz, sy, sx = torch.sin(angles_rad)
    rot_z = torch.tensor([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    rot_y = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_x = torch.tensor([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def draw_augment_params(batch_size: int, config: AugmentConfig, default_window: Window,
                        generator: torch.Generator) -> AugmentParams:
    """Draw the augmentation of a batch from ``generator`` (CPU), one sample at a time."""
    matrices = torch.empty(batch_size, 3, 3)
    for b in range(batch_size):
        u = torch.rand(5, generator=generator)
        matrix = torch.eye(3)
        if u[0] < config.scale_probability:
            low, high = config.scale_range
            matrix = matrix * float(low + (high - low) * u[1])
        if u[2] < config.rotation_probability:
            limit = math.radians(config.rotation_max_degrees)
            angles = (torch.rand(3, generator=generator) * 2 - 1) * limit
            matrix = matrix @ _rotation_matrix(angles)
        flips = torch.where(torch.rand(3, generator=generator) < config.flip_probability, -1.0, 1.0)
        matrices[b] = matrix @ torch.diag(flips)
    levels, widths = sample_windows(batch_size, default_window, config.random_windowing, generator)
    return AugmentParams(matrices, levels, widths)


def apply_augment(hu: torch.Tensor, bits: torch.Tensor, params: AugmentParams,
                  patch_zyx: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Window and spatially transform a batch of context boxes into training patches.

    Args:
        hu: (B, 1, Zc, Yc, Xc) float HU context boxes on the training device.
        bits: (B, Zc, Yc, Xc) uint8 class bits (bit k = class k) of the same boxes.
        params: from :func:`draw_augment_params`.
        patch_zyx: output patch size, centred in the context.

    Returns:
        Network input (B, 1, *patch) in [0, 1] and (B, 3, *patch) float 0/1 class masks.
    """
    device = hu.device
    windowed = apply_windows_batch(hu, params.levels, params.widths)
    masks = torch.stack([((bits >> k) & 1) for k in range(3)], dim=1).float()
    context = torch.tensor(hu.shape[2:], dtype=torch.float32)
    patch = torch.tensor(patch_zyx, dtype=torch.float32)
    # voxel offsets u (output) map to v = M u (input); in normalised coordinates n_in = diag(1/C) M diag(P) n_out
    theta_zyx = torch.diag(1.0 / context) @ params.matrices @ torch.diag(patch)
    theta_xyz = theta_zyx.flip(1).flip(2)  # grid_sample's last-dim order is (x, y, z)
    theta = torch.cat((theta_xyz, torch.zeros(len(theta_xyz), 3, 1)), dim=2).to(device)
    size = (hu.shape[0], 1, *patch_zyx)
    grid = F.affine_grid(theta, list(size), align_corners=False)
    image = F.grid_sample(windowed, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    grid_masks = F.affine_grid(theta, [size[0], 3, *patch_zyx], align_corners=False)
    targets = F.grid_sample(masks, grid_masks, mode="bilinear", padding_mode="zeros", align_corners=False)
    return image, (targets > 0.5).float()


def context_size(patch_zyx: tuple[int, int, int], config: AugmentConfig) -> tuple[int, int, int]:
    """Size of the box read around a patch so that scaled/rotated patches mostly stay inside real data.

    1.5 x the patch when spatial augmentation is on (rounded so the centred crop stays voxel-aligned).
    """
    if config.scale_probability == 0 and config.rotation_probability == 0:
        return tuple(patch_zyx)  # type: ignore[return-value]
    return tuple(p + 2 * math.ceil(p / 4) for p in patch_zyx)  # type: ignore[return-value]
