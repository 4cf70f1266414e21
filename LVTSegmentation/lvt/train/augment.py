"""Spatial augmentation of a training batch, in the paper's order: crop-resize, rotation, flips.

The three are composed into one affine per sample and applied with a single ``grid_sample`` on the
training device, after random windowing. The box read around each patch (:func:`context_size`) is
large enough that the extreme scale and rotation still sample real data only, so ``grid_sample``'s
zero padding is never read. Parameters are drawn on the CPU from an explicit generator, so a run is
reproducible and resumable, and a distributed run draws the same global batch on every rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lvt.segment.window import Window, apply_windows_batch, sample_windows
from lvt.train.config import AugmentConfig
from lvt.train.intensity import augment_hu, augment_windowed, draw_intensity_params


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters of one batch: (B, 3, 3) voxel-space matrices, window and intensity settings."""

    matrices: torch.Tensor
    levels: torch.Tensor
    widths: torch.Tensor
    intensity: torch.Tensor | None = None  # (B, 7), columns lvt.train.intensity.COLUMNS; None: unchanged
    noise_seed: int = 0

    def select(self, index: slice) -> AugmentParams:
        intensity = None if self.intensity is None else self.intensity[index]
        return AugmentParams(self.matrices[index], self.levels[index], self.widths[index], intensity, self.noise_seed)


def spatial_matrix(scale: float, angles_rad: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """M = scale * R0 R1 R2 * diag(flips): output voxel offset u (zyx, from the patch centre) reads input v = M u.

    R_k turns about axis k by ``angles_rad[k]``: with (a, b) the other two axes in order,
    v_a = cos * u_a - sin * u_b and v_b = sin * u_a + cos * u_b. A scale above 1 reads a larger
    region (zoom out); below 1 zooms in.
    """
    rotation = torch.eye(3)
    for axis, angle in enumerate(angles_rad.tolist()):
        a, b = (k for k in range(3) if k != axis)
        cos, sin = math.cos(angle), math.sin(angle)
        turn = torch.eye(3)
        turn[a, a], turn[a, b], turn[b, a], turn[b, b] = cos, -sin, sin, cos
        rotation = rotation @ turn
    return scale * rotation @ torch.diag(flips.float())


def draw_augment_params(batch_size: int, config: AugmentConfig, default_window: Window,
                        generator: torch.Generator) -> AugmentParams:
    """Draw the augmentation of a batch from ``generator`` (CPU), one sample at a time."""
    matrices = torch.empty(batch_size, 3, 3)
    for b in range(batch_size):
        u = torch.rand(3, generator=generator)
        scale = 1.0
        if u[0] < config.scale_probability:
            low, high = config.scale_range
            scale = float(low + (high - low) * u[1])
        angles = torch.zeros(3)
        if u[2] < config.rotation_probability:
            angles = (torch.rand(3, generator=generator) * 2 - 1) * math.radians(config.rotation_max_degrees)
        flips = torch.where(torch.rand(3, generator=generator) < config.flip_probability, -1.0, 1.0)
        matrices[b] = spatial_matrix(scale, angles, flips)
    levels, widths = sample_windows(batch_size, default_window, config.random_windowing, generator)
    if config.intensity is None:  # nothing drawn: runs without it keep their random stream
        return AugmentParams(matrices, levels, widths)
    intensity, seed = draw_intensity_params(batch_size, config.intensity, generator)
    return AugmentParams(matrices, levels, widths, intensity, seed)


def apply_augment(hu: torch.Tensor, bits: torch.Tensor, params: AugmentParams,
                  patch_zyx: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Window and spatially transform a batch of context boxes into training patches.

    Output voxel offset u from the patch centre shows input voxel offset ``M u`` from the box centre
    (trilinear), so a point at offset v in the box lands at ``M^-1 v`` in the patch.

    Args:
        hu: (B, 1, Zc, Yc, Xc) float HU context boxes on the training device.
        bits: (B, Zc, Yc, Xc) uint8 class bits (bit k = class k) of the same boxes.
        params: from :func:`draw_augment_params`.
        patch_zyx: output patch size, centred in the context.

    Returns:
        Network input (B, 1, *patch) in [0, 1] and (B, 3, *patch) float 0/1 class masks.
    """
    windowed = network_input(hu, (bits & 0b111) > 0, params)
    masks = torch.stack([((bits >> k) & 1) for k in range(3)], dim=1).float()
    image = resample_boxes(windowed, params.matrices, patch_zyx)
    targets = resample_boxes(masks, params.matrices, patch_zyx)
    return image, (targets > 0.5).float()


def network_input(hu: torch.Tensor, liver: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """HU (B, 1, Z, Y, X) to the network's [0, 1] input: intensity changes (the liver shift inside the 0/1
    ``liver`` (B, Z, Y, X)), each sample's window, gamma. No geometry: it works on boxes and patches alike."""
    if params.intensity is None:
        return apply_windows_batch(hu, params.levels, params.widths)
    hu = augment_hu(hu, liver, params.intensity, params.noise_seed)
    return augment_windowed(apply_windows_batch(hu, params.levels, params.widths), params.intensity)


def resample_boxes(volume: torch.Tensor, matrices: torch.Tensor, patch_zyx: tuple[int, int, int]) -> torch.Tensor:
    """The patches (B, C, *patch) that the per-sample (B, 3, 3) matrices cut from (B, C, *box) boxes (trilinear).

    Voxel offsets u (output) map to v = M u (input); in normalised coordinates n_in = diag(1/C) M diag(P) n_out.
    """
    context = torch.tensor(volume.shape[2:], dtype=torch.float32)
    patch = torch.tensor(patch_zyx, dtype=torch.float32)
    theta_zyx = torch.diag(1.0 / context) @ matrices @ torch.diag(patch)
    theta_xyz = theta_zyx.flip(1).flip(2)  # grid_sample's last-dim order is (x, y, z)
    theta = torch.cat((theta_xyz, torch.zeros(len(theta_xyz), 3, 1)), dim=2).to(volume.device)
    grid = F.affine_grid(theta, [volume.shape[0], volume.shape[1], *patch_zyx], align_corners=False)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _half_extent(half: tuple[float, ...], axis: int, max_turn_rad: float) -> float:
    """Largest |offset| along ``axis`` of a box with half sizes ``half`` after any turn of at most ``max_turn_rad``.

    Row ``axis`` of the rotation is a unit vector r within that angle of the axis, and the extent is
    sum_j |r_j| half_j: the maximum of a linear function over a spherical cap, |half| cos(max(0, a - turn)),
    with a the angle between the axis and the half-diagonal.
    """
    norm = math.sqrt(sum(h * h for h in half))
    if norm == 0.0:
        return 0.0
    to_diagonal = math.acos(min(1.0, half[axis] / norm))
    return norm * math.cos(max(0.0, to_diagonal - max_turn_rad))


def context_size(patch_zyx: tuple[int, int, int], config: AugmentConfig) -> tuple[int, int, int]:
    """Size of the box read around a patch so that no scale or rotation the config allows reads past it.

    Output voxel centres lie within (P - 1) / 2 of the patch centre; under ``M = s R F`` they read
    input points within ``s_max * extent(R)`` of the box centre, where R turns each axis by at most
    the sum of the three angle limits (each elementary rotation moves a vector by at most its angle).
    The box keeps every such point on or inside its outer voxel centres, so trilinear sampling never
    touches the zero padding. Box minus patch stays even, so an unaugmented patch is voxel-aligned.
    Flips alone need no context. For 96^3 patches, scale 1.4 and 30 degrees: 232^3.
    """
    max_scale = max(1.0, config.scale_range[1]) if config.scale_probability > 0 else 1.0
    max_turn = math.radians(min(180.0, 3 * config.rotation_max_degrees)) if config.rotation_probability > 0 else 0.0
    half = tuple((p - 1) / 2 for p in patch_zyx)
    margins = (math.ceil(round(max_scale * _half_extent(half, axis, max_turn) - half[axis], 6)) for axis in range(3))
    return tuple(p + 2 * max(0, m) for p, m in zip(patch_zyx, margins, strict=True))  # type: ignore[return-value]
