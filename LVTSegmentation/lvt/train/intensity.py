"""Intensity augmentation of training batches: scanner, dose, reconstruction and contrast-phase variation.

The nnU-Net set (brightness, contrast, gamma, Gaussian noise, Gaussian blur, simulated low resolution),
applied in HU before windowing except gamma (on the windowed [0, 1] values, as nnU-Net does on its
normalised input), plus one that random windowing cannot give: the liver's own enhancement shifted
against the other organs, as between arterial, portal-venous and late phases. Parameters are drawn
on the CPU from the run's generator (reproducible and resumable); noise uses a device generator
seeded from it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lvt.train.config import IntensityAugment

# Columns of the per-sample parameter matrix and their identity values.
COLUMNS = ("shift_hu", "contrast", "noise_hu", "blur_voxels", "resolution", "gamma", "liver_shift_hu")
IDENTITY = (0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0)


def draw_intensity_params(batch_size: int, config: IntensityAugment, generator: torch.Generator
                          ) -> tuple[torch.Tensor, int]:
    """(B, 7) parameters (:data:`COLUMNS`) and a noise seed."""
    params = torch.tensor(IDENTITY).repeat(batch_size, 1)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    ranges = (config.shift_hu, config.contrast, config.noise_hu, config.blur_voxels, config.resolution,
              config.gamma, config.liver_shift_hu)
    for column, (probability, (low, high)) in enumerate(ranges):
        chosen = torch.rand(batch_size, generator=generator) < probability
        drawn = low + (high - low) * torch.rand(batch_size, generator=generator)
        params[chosen, column] = drawn[chosen]
    return params, seed


def augment_hu(hu: torch.Tensor, liver: torch.Tensor, params: torch.Tensor, seed: int) -> torch.Tensor:
    """HU-space changes of a (B, 1, Z, Y, X) batch; ``liver`` is the (B, Z, Y, X) whole-liver mask (0/1)."""
    if bool((params == torch.tensor(IDENTITY)).all()):
        return hu
    out = hu.clone()
    generator = torch.Generator(device=hu.device).manual_seed(seed)
    for b, (shift, contrast, noise, blur, resolution, _gamma, liver_shift) in enumerate(params.tolist()):
        sample = out[b:b + 1]
        if liver_shift != 0.0 and bool(liver[b].any()):
            soft = _gaussian_blur(liver[b][None, None].float(), 1.0)
            sample = sample + liver_shift * soft
        if contrast != 1.0:
            mean = sample.mean()
            sample = (sample - mean) * contrast + mean
        sample = sample + shift
        if blur > 0.0:
            sample = _gaussian_blur(sample, blur)
        if resolution < 1.0:
            sample = _low_resolution(sample, resolution)
        if noise > 0.0:
            sample = sample + noise * torch.randn(sample.shape, generator=generator, device=hu.device)
        out[b:b + 1] = sample
    return out


def augment_windowed(windowed: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Gamma on windowed [0, 1] values, one exponent per sample."""
    gamma = params[:, 5].to(windowed.device, windowed.dtype).view(-1, *([1] * (windowed.ndim - 1)))
    return windowed.clamp(0.0, 1.0) ** gamma


def _gaussian_blur(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (1, 1, Z, Y, X) volume (edges replicated)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=volume.dtype, device=volume.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        volume = F.conv3d(F.pad(volume, pad, mode="replicate"), kernel.view(shape))
    return volume


def _low_resolution(volume: torch.Tensor, factor: float) -> torch.Tensor:
    """Down-sample by ``factor`` (averaging, as a coarser detector or thicker slice does) and back (trilinear)."""
    size = volume.shape[2:]
    small = [max(1, round(n * factor)) for n in size]
    coarse = F.interpolate(volume, size=small, mode="area")
    return F.interpolate(coarse, size=size, mode="trilinear", align_corners=False)
