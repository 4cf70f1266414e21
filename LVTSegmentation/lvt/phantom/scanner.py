"""The scanner: the requested grid, partial-volume blur and noise; :func:`make_phantom` itself."""

from __future__ import annotations

import logging
import math
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from lvt.image import AIR_HU, Image
from lvt.labels import LIVER
from lvt.phantom.canvas import Canvas, Grid
from lvt.phantom.config import Phantom, PhantomConfig
from lvt.phantom.fields import draw_lattice, random_stream, texture_on_grid
from lvt.phantom.patient import draw_patient
from lvt.phantom.render import render_patient

logger = logging.getLogger(__name__)


def _grid_image(config: PhantomConfig) -> Image:
    """An empty float32 image on the configured grid, centred on ``center_lps_mm``."""
    size_ijk = np.array([max(1, round(f / s)) for f, s in zip(config.field_of_view_mm, config.spacing_mm,
                                                                strict=True)])
    direction = config.direction_matrix
    matrix = direction @ np.diag(config.spacing_mm)
    origin = np.asarray(config.center_lps_mm) - matrix @ ((size_ijk - 1) / 2.0)
    return Image(np.zeros(tuple(size_ijk[::-1]), np.float32), config.spacing_mm, tuple(origin), direction)


def _gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...], correlation_voxels: float) -> np.ndarray:
    """Unit-variance Gaussian noise, correlated by a Gaussian kernel of ``correlation_voxels``."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if correlation_voxels <= 0.05:
        return noise
    noise = ndimage.gaussian_filter(noise, correlation_voxels, mode="wrap")
    impulse = np.zeros(33, np.float32)
    impulse[16] = 1.0
    kernel_energy = float(np.sum(ndimage.gaussian_filter1d(impulse, correlation_voxels) ** 2))
    return noise / np.float32(math.sqrt(kernel_energy ** len(shape)))


def _scan(hu: np.ndarray, config: PhantomConfig) -> tuple[np.ndarray, float]:
    """Partial-volume blur, then noise: the clean rendering becomes a CT image."""
    rng = random_stream(config.seed, "noise")
    sigma = config.noise_hu if config.noise_hu is not None else float(rng.uniform(10.0, 25.0))
    correlation = (config.noise_correlation_voxels if config.noise_correlation_voxels is not None
                   else float(rng.uniform(0.0, 0.8)))
    if config.blur_voxels > 0:
        hu = ndimage.gaussian_filter(hu, config.blur_voxels, mode="nearest")
    if sigma > 0:
        hu += np.float32(sigma) * _gaussian_noise(rng, hu.shape, correlation)
    return np.clip(hu, AIR_HU, 3071.0, out=hu), sigma


def make_phantom(config: PhantomConfig) -> Phantom:
    """Render a synthetic abdominal CT and its exact ground truth.

    Args:
        config: patient seed, grid, contrast phase, lesion and noise settings.

    Returns:
        The :class:`Phantom`: float32 HU image on the requested grid, (3, Z, Y, X) multi-hot truth,
        lesion records, nominal tissue HU and the noise level.
    """
    patient = draw_patient(config)
    empty = _grid_image(config)
    grid = Grid.of(empty)
    canvas = Canvas(grid, texture_on_grid(draw_lattice(random_stream(config.seed, "texture")), grid))
    render_patient(canvas, patient, config.phase)
    hu, sigma = _scan(canvas.hu, config)
    logger.debug("phantom seed %d: %d lesions, liver %.0f mL", config.seed, len(patient.lesions),
                 canvas.truth[LIVER].sum() * empty.voxel_volume_ml)
    return Phantom(empty.with_array(hu), canvas.truth, tuple(lesion.truth for lesion in patient.lesions),
                   MappingProxyType(dict(patient.hu)), sigma, config)
