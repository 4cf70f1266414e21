"""HU windowing: the model's fixed input window and the paper's random-windowing augmentation.

Random windowing, as the LVT paper (Østmo et al., NLDL 2026) uses it from the same group's
"Random Window Augmentations for Deep Learning Robustness in CT and Liver Tumor Segmentation"
(Østmo et al. 2025, arXiv 2510.08116), whose public implementation is ``RandomWindower`` in
github.com/agnalt/random-windowing, ``transforms.py``: start from a base window, replace its level
by a uniform draw ("shift") and, independently, its width by a uniform draw ("scale"), then clip and
map to [0, 1]. What we take from where:

- ranges: the paper prints W ~ U(11.5, 152.9) and L ~ U(141.2, 325.9) HU; the reference code has
  ``range_level=[11.5, 152.9]`` and ``range_scale=[141.2, 325.9]`` (widths), so the printed letters
  are swapped: level in [11.5, 152.9], width in [141.2, 325.9]. Both configurable.
- base window: the reference code's default, width 217.3 and level 87.1 HU (:class:`Window`'s default).
- probabilities (our reading): the paper gives one total p = 0.3 and says shift and scale are
  independent; the reference code draws them as two independent coins ``p_shift`` and ``p_scale``
  (both 0 by default). We use ``p_shift = p_scale = 1 - sqrt(1 - p)``, so the window differs from the
  base with probability exactly p (about 0.163 each, both at once about 0.027).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, TypeGuard

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Window:
    """An HU window: values below ``level - width/2`` map to 0, above ``level + width/2`` to 1.

    The default is the random-windowing authors' base window (level 87.1, width 217.3 HU); a model
    keeps the window it was trained with in its manifest.
    """

    level_hu: float = 87.1
    width_hu: float = 217.3

    def __post_init__(self) -> None:
        if self.width_hu <= 0:
            raise ValueError(f"window width must be positive, got {self.width_hu}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Window:
        return cls(float(data["level_hu"]), float(data["width_hu"]))


@dataclass(frozen=True)
class RandomWindowing:
    """Random windowing augmentation settings (probability and uniform ranges, in HU)."""

    probability: float = 0.3
    level_range_hu: tuple[float, float] = (11.5, 152.9)
    width_range_hu: tuple[float, float] = (141.2, 325.9)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        for name, (low, high) in (("level", self.level_range_hu), ("width", self.width_range_hu)):
            if low > high:
                raise ValueError(f"{name} range must be (low, high), got {(low, high)}")
        if self.width_range_hu[0] <= 0:
            raise ValueError("window widths must be positive")


def _is_tensor(value: object) -> TypeGuard[torch.Tensor]:
    """True for a torch tensor, asked without importing torch (a tensor exists only once torch is loaded)."""
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(value, torch_module.Tensor)


def apply_window(hu: np.ndarray | torch.Tensor, window: Window) -> np.ndarray | torch.Tensor:
    """Map HU to [0, 1] through ``window`` (float32 for numpy input; same dtype for tensors)."""
    low = window.level_hu - window.width_hu / 2.0
    if _is_tensor(hu):
        values = hu if hu.is_floating_point() else hu.float()
        return ((values - low) / window.width_hu).clamp_(0.0, 1.0)
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(window.width_hu)
    return np.clip(out, 0.0, 1.0, out=out)


def sample_windows(
    batch_size: int, default: Window, augmentation: RandomWindowing | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one (level, width) per sample: the default window, or with total probability p a random one.

    Level and width are each replaced independently with probability ``1 - sqrt(1 - p)`` (the
    reference code's ``p_shift`` and ``p_scale``), so that at least one of them changes with
    probability ``p``, the paper's total (see the module docstring for this reading).

    Returns:
        Two (batch_size,) float32 CPU tensors: levels and widths in HU.
    """
    import torch  # here, not at the top: a training config holds a Window and must read without torch

    levels = torch.full((batch_size,), default.level_hu)
    widths = torch.full((batch_size,), default.width_hu)
    if augmentation is None or augmentation.probability == 0.0:
        return levels, widths
    each = 1.0 - (1.0 - augmentation.probability) ** 0.5
    for values, (low, high) in ((levels, augmentation.level_range_hu), (widths, augmentation.width_range_hu)):
        change = torch.rand(batch_size, generator=generator) < each
        drawn = low + (high - low) * torch.rand(batch_size, generator=generator)
        values[change] = drawn[change]
    return levels, widths


def apply_windows_batch(hu: torch.Tensor, levels: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Window a (B, 1, Z, Y, X) HU batch with one level/width per sample, into [0, 1]."""
    shape = (-1,) + (1,) * (hu.ndim - 1)
    levels = levels.to(hu.device, hu.dtype).view(shape)
    widths = widths.to(hu.device, hu.dtype).view(shape)
    return ((hu - (levels - widths / 2.0)) / widths).clamp_(0.0, 1.0)
