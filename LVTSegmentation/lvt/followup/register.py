"""Liver-driven alignment of two studies of one patient: rigid, then affine, with SimpleITK.

Follow-up CTs are taken months apart, on other scanners, with other spacing, orientation and field
of view, and the patient lies differently. Only the liver matters for comparing liver lesions, so
the registration looks at the liver alone:

- Each study is cropped to its liver (plus ``margin_mm``) and resampled to an isotropic working
  grid. The image that drives the metric is the CT inside the liver mask (clipped to a soft-tissue
  window) with a constant below the window outside it, so the liver outline and the vessels and
  lesions inside it all count, and nothing outside the liver (bowel, ribs, breathing) does. When
  either study has no CT, the liver masks alone drive it.
- The rigid stage starts from the translation between the liver masks' centres of mass. The affine
  stage starts from the rigid result. Both maximise normalised correlation, which is blind to a
  global change of enhancement between the studies.
- The result is judged on the native grid of the fixed study: Dice and mean surface distance of
  the two livers after alignment, the affine scale factors, and (with both CTs) the correlation of
  the smoothed CT deep inside the overlapping livers. When any is out of range the registration is
  *refused* with the reasons, and lesions must not be matched through it. The liver criteria catch
  a liver that changed shape (resection, a wrong or partial segmentation) and livers of clearly
  different patients; two livers of similar shape pass them, and the CT correlation is only a
  weak check (noise lowers it even for one patient), so its default threshold is low. Checking
  that the studies belong to one patient stays the user's job (docs/followup.md).

The transform maps fixed (baseline) LPS points to moving (follow-up) LPS points, as ITK's
registration returns it: ``q = A p + b``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from lvt.evaluate.metrics import average_symmetric_surface_distance_mm, dice_score, surface_distances
from lvt.grid import (
    Interpolation,
    bounding_box_in,
    crop,
    image_from_sitk,
    image_to_sitk,
    resample_to_spacing,
    sitk_module,
)
from lvt.image import Image
from lvt.labels import whole_liver
from lvt.progress import ProgressCallback, check_cancel, report

if TYPE_CHECKING:
    import SimpleITK

logger = logging.getLogger(__name__)

FEATURE_WINDOW_HU = (-50.0, 250.0)
OUTSIDE_LIVER_HU = -100.0  # below the window: the liver outline is an edge of the feature image
CORRELATION_INSET_MM = 8.0
CORRELATION_SMOOTHING_MM = 3.0


@dataclass(frozen=True)
class RegistrationConfig:
    """How the livers are aligned and when the result is good enough to match lesions through.

    Attributes:
        working_spacing_mm: isotropic spacing of the grid the optimiser works on.
        margin_mm: context kept around each liver's bounding box.
        max_iterations: per stage and resolution level.
        sampling_fraction: fraction of working voxels sampled by the metric (fixed seed: repeatable).
        min_liver_dice: least Dice of the two livers after alignment.
        max_residual_mm: largest mean symmetric surface distance of the livers after alignment.
        scale_range: allowed range of the affine scale factors (singular values of its matrix).
        min_ct_correlation: least correlation of the CT inside both livers (used when both have CT).
    """

    working_spacing_mm: float = 4.0
    margin_mm: float = 20.0
    max_iterations: int = 200
    sampling_fraction: float = 0.2
    min_liver_dice: float = 0.85
    max_residual_mm: float = 3.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    min_ct_correlation: float = 0.2

    def __post_init__(self) -> None:
        if self.working_spacing_mm <= 0 or self.margin_mm < 0 or self.max_iterations < 1:
            raise ValueError("working_spacing_mm must be > 0, margin_mm >= 0 and max_iterations >= 1")
        if not 0 < self.sampling_fraction <= 1 or not 0 <= self.min_liver_dice <= 1:
            raise ValueError("sampling_fraction must be in (0, 1] and min_liver_dice in [0, 1]")
        if self.max_residual_mm <= 0 or not 0 < self.scale_range[0] <= 1 <= self.scale_range[1]:
            raise ValueError("max_residual_mm must be > 0 and scale_range must bracket 1")


@dataclass(frozen=True)
class Residual:
    """How well the livers agree after alignment (on the fixed study's grid)."""

    liver_dice: float
    mean_surface_distance_mm: float
    scale_factors: tuple[float, float, float]
    ct_correlation: float | None

    def to_dict(self) -> dict:
        return {"liver_dice": self.liver_dice, "mean_surface_distance_mm": self.mean_surface_distance_mm,
                "scale_factors": list(self.scale_factors), "ct_correlation": self.ct_correlation}


@dataclass(frozen=True, eq=False)
class Registration:
    """The fixed-to-moving affine map in LPS mm, its residual and whether lesions may be matched through it.

    Attributes:
        fixed_to_moving: (4, 4) homogeneous matrix; ``moving = M @ [fixed, 1]``.
        residual: agreement of the livers after alignment.
        driven_by: "liver masks and CT" or "liver masks".
        refusal_reasons: why the alignment is too poor to match lesions; empty when accepted.
    """

    fixed_to_moving: np.ndarray
    residual: Residual
    driven_by: str
    refusal_reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def accepted(self) -> bool:
        return not self.refusal_reasons

    def fixed_to_moving_points(self, points_lps: np.ndarray) -> np.ndarray:
        """(N, 3) fixed-study LPS points -> (N, 3) moving-study LPS points."""
        points = np.atleast_2d(np.asarray(points_lps, dtype=float))
        return points @ self.fixed_to_moving[:3, :3].T + self.fixed_to_moving[:3, 3]

    def moving_to_fixed_points(self, points_lps: np.ndarray) -> np.ndarray:
        """(N, 3) moving-study LPS points -> (N, 3) fixed-study LPS points."""
        points = np.atleast_2d(np.asarray(points_lps, dtype=float)) - self.fixed_to_moving[:3, 3]
        return points @ np.linalg.inv(self.fixed_to_moving[:3, :3]).T

    def to_dict(self) -> dict:
        return {"accepted": self.accepted, "driven_by": self.driven_by, "residual": self.residual.to_dict(),
                "refusal_reasons": list(self.refusal_reasons), "fixed_to_moving_lps": self.fixed_to_moving.tolist()}


def register_livers(
    fixed_labels: Image,
    moving_labels: Image,
    fixed_ct: Image | None = None,
    moving_ct: Image | None = None,
    config: RegistrationConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Registration:
    """Align the moving study's liver to the fixed study's liver (rigid, then affine).

    Args:
        fixed_labels: exclusive label map of the fixed (baseline) study; the liver is labels > 0.
        moving_labels: the same for the moving (follow-up) study, on any grid.
        fixed_ct: the fixed CT on the grid of ``fixed_labels``, or None.
        moving_ct: the moving CT on the grid of ``moving_labels``, or None.
        config: working grid, optimiser and acceptance thresholds.
        progress: receives "register" events.
        cancel: checked between stages.

    Returns:
        The registration; check ``accepted`` before matching anything through it.

    Raises:
        ValueError: when either label map has no liver, or a CT is not on its labels' grid.
    """
    config = config or RegistrationConfig()
    use_ct = fixed_ct is not None and moving_ct is not None
    fixed = _working_images(fixed_labels, fixed_ct if use_ct else None, config)
    moving = _working_images(moving_labels, moving_ct if use_ct else None, config)
    sitk = sitk_module()
    report(progress, "register", 0, 3, "rigid alignment of the livers")
    rigid = sitk.CenteredTransformInitializer(fixed.mask, moving.mask, sitk.Euler3DTransform(),
                                              sitk.CenteredTransformInitializerFilter.MOMENTS)
    _optimise(fixed.feature, moving.feature, rigid, config)
    check_cancel(cancel)
    report(progress, "register", 1, 3, "affine alignment of the livers")
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    _optimise(fixed.feature, moving.feature, affine, config)
    check_cancel(cancel)
    report(progress, "register", 2, 3, "residual")
    matrix = _homogeneous(affine)
    residual = _residual(fixed_labels, moving_labels, matrix, fixed, moving, config, use_ct)
    reasons = refusal_reasons(residual, config)
    report(progress, "register", 3, 3, "accepted" if not reasons else "refused: " + "; ".join(reasons))
    driven_by = "liver masks and CT" if use_ct else "liver masks"
    return Registration(matrix, residual, driven_by, tuple(reasons))


@dataclass(frozen=True, eq=False)
class _WorkingImages:
    feature: SimpleITK.Image
    mask: SimpleITK.Image
    has_ct: bool


def _working_images(labels: Image, ct: Image | None, config: RegistrationConfig) -> _WorkingImages:
    """The liver crop of one study on the isotropic working grid: feature image and soft liver mask."""
    liver = whole_liver(labels.array)
    if not liver.any():
        raise ValueError("the label map has no liver (no voxel > 0); nothing to align")
    if ct is not None and not ct.same_grid(labels):
        raise ValueError("the CT must lie on the grid of its label map")
    box = bounding_box_in(labels, labels, liver, config.margin_mm)
    liver_crop = crop(labels.with_array(liver.astype(np.float32)), box)
    spacing = (config.working_spacing_mm,) * 3
    mask = resample_to_spacing(liver_crop, spacing, interpolation="linear", default_value=0.0)
    if ct is None:
        feature = mask
    else:
        values = np.clip(crop(ct, box).array, *FEATURE_WINDOW_HU)
        inside = np.where(liver_crop.array > 0, values, OUTSIDE_LIVER_HU).astype(np.float32)
        feature = resample_to_spacing(liver_crop.with_array(inside), spacing, default_value=OUTSIDE_LIVER_HU)
    return _WorkingImages(image_to_sitk(feature), image_to_sitk(mask), ct is not None)


def _optimise(fixed: SimpleITK.Image, moving: SimpleITK.Image, transform: Any, config: RegistrationConfig) -> None:
    """Maximise normalised correlation over ``transform`` (updated in place), coarse to fine."""
    sitk = sitk_module()
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(config.sampling_fraction, 20250101)
    method.SetInterpolator(sitk.sitkLinear)
    # Steps in mm of voxel displacement (scales from physical shift): 4 mm at first, halved on overshoot.
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=config.working_spacing_mm, minStep=0.05,
                                                    numberOfIterations=config.max_iterations,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0])
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    logger.info("registration stage %s: correlation %.4f after %d iterations (%s)", transform.GetName(),
                -method.GetMetricValue(), method.GetOptimizerIteration(), method.GetOptimizerStopConditionDescription())


def _homogeneous(transform: Any) -> np.ndarray:
    """4x4 matrix of an ITK matrix-offset transform: q = A (p - c) + c + t."""
    matrix = np.asarray(transform.GetMatrix(), dtype=float).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), dtype=float)
    result = np.eye(4)
    result[:3, :3] = matrix
    result[:3, 3] = centre + np.asarray(transform.GetTranslation(), dtype=float) - matrix @ centre
    return result


def _sitk_transform(fixed_to_moving: np.ndarray) -> Any:
    sitk = sitk_module()
    return sitk.AffineTransform(fixed_to_moving[:3, :3].ravel().tolist(), fixed_to_moving[:3, 3].tolist())


def warp_to_fixed(moving: Image, reference: Image, fixed_to_moving: np.ndarray, *,
                  interpolation: Interpolation = "nearest", default_value: float = 0.0) -> Image:
    """Resample a moving-study image onto a fixed-study grid through the registration.

    Args:
        moving: image on the moving study's grid (labels: "nearest", dtype kept; CT: "linear").
        reference: the fixed-study grid to sample on; its voxel values are not used.
        fixed_to_moving: (4, 4) matrix of :attr:`Registration.fixed_to_moving`.
        interpolation: "nearest" or "linear".
        default_value: value where the moving image does not reach.

    Returns:
        The warped image on the reference grid.
    """
    sitk = sitk_module()
    if interpolation not in ("nearest", "linear"):
        raise ValueError(f"interpolation must be 'nearest' or 'linear', got {interpolation!r}")
    interpolator = sitk.sitkNearestNeighbor if interpolation == "nearest" else sitk.sitkLinear
    source = image_to_sitk(moving)
    if interpolation == "linear":
        source = sitk.Cast(source, sitk.sitkFloat32)
    grid = image_to_sitk(reference.with_array(np.zeros(reference.array.shape, np.uint8)))
    warped = sitk.Resample(source, grid, _sitk_transform(fixed_to_moving), interpolator, float(default_value),
                           source.GetPixelID())
    result = image_from_sitk(warped)
    return result if interpolation == "linear" else result.with_array(result.array.astype(moving.array.dtype))


def _residual(fixed_labels: Image, moving_labels: Image, matrix: np.ndarray, fixed: _WorkingImages,
              moving: _WorkingImages, config: RegistrationConfig, use_ct: bool) -> Residual:
    """Liver agreement on the fixed study's native grid (cropped to its liver), scales, CT correlation."""
    liver = whole_liver(fixed_labels.array)
    box = bounding_box_in(fixed_labels, fixed_labels, liver, config.margin_mm)
    reference = crop(fixed_labels, box)
    moving_liver = moving_labels.with_array(whole_liver(moving_labels.array).astype(np.uint8))
    warped = warp_to_fixed(moving_liver, reference, matrix).array > 0
    fixed_liver = whole_liver(reference.array)
    distances = surface_distances(warped, fixed_liver, reference.spacing_mm[::-1])
    scales = np.linalg.svd(matrix[:3, :3], compute_uv=False)
    correlation = _ct_correlation(fixed, moving, matrix) if use_ct else None
    return Residual(
        liver_dice=round(dice_score(warped, fixed_liver), 4),
        mean_surface_distance_mm=round(average_symmetric_surface_distance_mm(distances), 3),
        scale_factors=tuple(round(float(s), 4) for s in scales),  # type: ignore[arg-type]
        ct_correlation=None if correlation is None else round(correlation, 4),
    )


def _ct_correlation(fixed: _WorkingImages, moving: _WorkingImages, matrix: np.ndarray) -> float:
    """Correlation of the lightly smoothed CT deep inside both aligned livers.

    A band of ``CORRELATION_INSET_MM`` along the outlines is left out because any two livers share
    their outline after an affine fit; what is left (vessels, lesions, parenchyma) only agrees when
    the studies show the same liver. Smoothing by ``CORRELATION_SMOOTHING_MM`` first takes out most
    of the image noise, which would otherwise hide the agreement of the structures.
    """
    sitk = sitk_module()
    transform = _sitk_transform(matrix)
    warped_feature = sitk.Resample(moving.feature, fixed.feature, transform, sitk.sitkLinear, OUTSIDE_LIVER_HU)
    warped_mask = sitk.Resample(moving.mask, fixed.mask, transform, sitk.sitkLinear, 0.0)
    spacing_zyx = fixed.feature.GetSpacing()[::-1]
    both = (sitk.GetArrayViewFromImage(fixed.mask) > 0.5) & (sitk.GetArrayViewFromImage(warped_mask) > 0.5)
    inside = ndimage.distance_transform_edt(both, sampling=spacing_zyx) > CORRELATION_INSET_MM
    if np.count_nonzero(inside) < 10:
        return 0.0
    sigma = [CORRELATION_SMOOTHING_MM / s for s in spacing_zyx]
    a = ndimage.gaussian_filter(sitk.GetArrayFromImage(fixed.feature).astype(float), sigma)[inside]
    b = ndimage.gaussian_filter(sitk.GetArrayFromImage(warped_feature).astype(float), sigma)[inside]
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def refusal_reasons(residual: Residual, config: RegistrationConfig) -> list[str]:
    """Why a residual is too poor to match lesions through the registration (empty when it is fine)."""
    reasons = []
    if residual.liver_dice < config.min_liver_dice:
        reasons.append(f"the livers overlap with Dice {residual.liver_dice:.3f} after alignment "
                       f"(at least {config.min_liver_dice:.2f} needed)")
    if not residual.mean_surface_distance_mm <= config.max_residual_mm:
        reasons.append(f"the liver surfaces are {residual.mean_surface_distance_mm:.1f} mm apart on average after "
                       f"alignment (at most {config.max_residual_mm:.1f} mm allowed)")
    low, high = config.scale_range
    if min(residual.scale_factors) < low or max(residual.scale_factors) > high:
        shown = ", ".join(f"{s:.2f}" for s in residual.scale_factors)
        reasons.append(f"the alignment had to scale the liver by {shown} (allowed {low:.2f} to {high:.2f}): "
                       "the livers differ too much in size or shape")
    if residual.ct_correlation is not None and residual.ct_correlation < config.min_ct_correlation:
        reasons.append(f"the CT inside the aligned livers correlates only {residual.ct_correlation:.2f} "
                       f"(at least {config.min_ct_correlation:.2f} needed): vessels and lesions do not line up, "
                       "the studies may show different patients")
    return reasons
