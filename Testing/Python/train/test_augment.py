"""Spatial augmentation: each transform moves a known point where the math says; the context never pads."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import rotation

from lvt.segment.window import Window, apply_window
from lvt.train.augment import AugmentParams, apply_augment, context_size, draw_augment_params, spatial_matrix
from lvt.train.config import AugmentConfig
from lvt.train.data.cache import CachedCase
from lvt.train.sampling import PatchSampler

WINDOW = Window()
CONTEXT, PATCH = (41, 41, 41), (25, 25, 25)  # odd sizes: both centres are voxel centres (20 and 12)


def _params(matrix: torch.Tensor, count: int = 1) -> AugmentParams:
    return AugmentParams(matrix.expand(count, 3, 3).clone(), torch.full((count,), WINDOW.level_hu),
                         torch.full((count,), WINDOW.width_hu))


def _bright_voxel(offset: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A -1000 HU box with one 1000 HU voxel (also the only liver bit) at ``offset`` from its centre."""
    hu = torch.full((1, 1, *CONTEXT), -1000.0)
    bits = torch.zeros((1, *CONTEXT), dtype=torch.uint8)
    index = tuple(c // 2 + o for c, o in zip(CONTEXT, offset, strict=True))
    hu[(0, 0, *index)] = 1000.0
    bits[(0, *index)] = 1
    return hu, bits


@pytest.mark.parametrize(
    ("scale", "degrees", "flips"),
    [
        (1.0, (30.0, 0.0, 0.0), (1, 1, 1)),
        (1.0, (0.0, -30.0, 0.0), (1, 1, 1)),
        (1.0, (0.0, 0.0, 25.0), (1, 1, 1)),
        (1.0, (0.0, 0.0, 0.0), (-1, 1, -1)),
        (1.4, (0.0, 0.0, 0.0), (1, 1, 1)),
        (0.7, (0.0, 0.0, 0.0), (1, 1, 1)),
        (1.4, (30.0, -20.0, 10.0), (1, -1, 1)),
    ],
)
def test_a_bright_voxel_lands_where_the_inverse_transform_puts_it(
    scale: float, degrees: tuple[float, float, float], flips: tuple[int, int, int]
) -> None:
    offset = np.array([3, -5, 6])
    matrix = scale * rotation(0, degrees[0]) @ rotation(1, degrees[1]) @ rotation(2, degrees[2]) @ np.diag(flips)
    expected = np.linalg.solve(matrix, offset) + np.array(PATCH) // 2  # output voxel u reads input M u
    built = spatial_matrix(scale, torch.tensor([math.radians(d) for d in degrees]), torch.tensor(flips))
    np.testing.assert_allclose(built.numpy(), matrix, atol=1e-6)
    image, _ = apply_augment(*_bright_voxel(tuple(offset)), _params(built), PATCH)
    found = np.unravel_index(int(image[0, 0].argmax()), PATCH)
    assert np.abs(np.array(found) - expected).max() <= 1.0, (found, expected)


@pytest.mark.parametrize(("degrees", "flips", "numpy_op"), [
    ((90.0, 0.0, 0.0), (1, 1, 1), lambda a: np.rot90(a, k=1, axes=(2, 1))),
    ((0.0, 0.0, -90.0), (1, 1, 1), lambda a: np.rot90(a, k=1, axes=(0, 1))),
    ((0.0, 0.0, 0.0), (-1, 1, -1), lambda a: np.flip(a, axis=(0, 2))),
])
def test_quarter_turns_and_flips_permute_voxels_exactly_in_image_and_masks(
    degrees: tuple[float, float, float], flips: tuple[int, int, int], numpy_op
) -> None:
    rng = np.random.default_rng(3)
    hu = rng.uniform(-100, 250, CONTEXT).astype(np.float32)
    bits = rng.integers(0, 8, CONTEXT).astype(np.uint8)
    matrix = spatial_matrix(1.0, torch.tensor([math.radians(d) for d in degrees]), torch.tensor(flips))
    image, masks = apply_augment(torch.from_numpy(hu)[None, None], torch.from_numpy(bits)[None], _params(matrix),
                                 PATCH)
    crop = tuple(slice((c - p) // 2, (c + p) // 2) for c, p in zip(CONTEXT, PATCH, strict=True))
    expected = numpy_op(np.asarray(apply_window(hu, WINDOW)))[crop]
    np.testing.assert_allclose(image[0, 0].numpy(), expected, atol=1e-4)
    for k in range(3):
        np.testing.assert_array_equal(masks[0, k].numpy(), numpy_op((bits >> k) & 1)[crop])


def _extreme_matrices(config: AugmentConfig) -> list[torch.Tensor]:
    """Largest scale with every corner of the rotation box (and a few inside it), each under every flip."""
    limit = math.radians(config.rotation_max_degrees)
    angles = [torch.tensor(signs) * limit for signs in itertools.product((-1.0, 1.0), repeat=3)]
    angles += [torch.tensor([limit, limit * 0.5, -limit]), torch.tensor([0.0, limit, limit])]
    flips = [torch.tensor(f) for f in itertools.product((-1, 1), repeat=3)]
    return [spatial_matrix(config.scale_range[1], a, f) for a in angles for f in flips]


@pytest.mark.parametrize("patch", [(16, 16, 16), (16, 24, 32), (8, 16, 16)])
def test_the_context_holds_every_extreme_scale_and_rotation_so_no_padding_is_read(patch: tuple[int, int, int]) -> None:
    """A flat 50 HU case larger than the box: every augmented patch is 50 HU and all foreground throughout."""
    config = AugmentConfig(scale_probability=1.0, rotation_probability=1.0)
    context = context_size(patch, config)
    shape = tuple(c + 10 for c in context)
    bits = np.full(shape, 0b111, dtype=np.uint8)
    centres = np.argwhere(np.ones((11, 11, 11))).astype(np.int32) + np.array(context) // 2  # the box fits the case
    case = CachedCase("flat", "d", np.full(shape, 50, dtype=np.int16), bits, (True, True, True), (centres,) * 3)
    drawn = draw_augment_params(200, config, WINDOW, torch.Generator().manual_seed(0))
    matrices = torch.cat((torch.stack(_extreme_matrices(config)), drawn.matrices))
    batch = PatchSampler([case], context, 1.0, seed=0).sample(len(matrices))
    params = _params(torch.eye(3), len(matrices))
    image, masks = apply_augment(torch.from_numpy(batch.hu), torch.from_numpy(batch.bits),
                                 AugmentParams(matrices, params.levels, params.widths), patch)
    flat = float(apply_window(np.array([50.0]), WINDOW)[0])
    assert float((image - flat).abs().max()) < 1e-4  # zero padding would pull a voxel toward 0
    assert bool(masks.bool().all())


def test_the_old_one_and_a_half_context_was_too_small() -> None:
    """The 1.5x box of before reads padding at scale 1.4 and 30 degrees: the bound is needed."""
    config = AugmentConfig(scale_probability=1.0, rotation_probability=1.0)
    patch = (16, 16, 16)
    small = tuple(p + 2 * math.ceil(p / 4) for p in patch)
    assert all(s < c for s, c in zip(small, context_size(patch, config), strict=True))
    hu = torch.full((1, 1, *small), 50.0)
    matrix = spatial_matrix(1.4, torch.full((3,), math.radians(30.0)), torch.ones(3))
    image, _ = apply_augment(hu, torch.zeros((1, *small), dtype=torch.uint8), _params(matrix), patch)
    assert float(image.min()) < float(apply_window(np.array([50.0]), WINDOW)[0]) - 0.1


def test_context_grows_only_with_what_reaches_outside_the_patch() -> None:
    patch = (32, 48, 64)
    assert context_size(patch, AugmentConfig(scale_probability=0.0, rotation_probability=0.0)) == patch  # flips only
    zoom_in = context_size(patch, AugmentConfig(scale_range=(0.7, 1.0), rotation_probability=0.0))
    assert zoom_in == patch
    scale_only = context_size(patch, AugmentConfig(rotation_probability=0.0))
    assert scale_only == tuple(p + 2 * math.ceil(0.4 * (p - 1) / 2 - 1e-9) for p in patch)
    small_turn = context_size(patch, AugmentConfig(scale_probability=0.0, rotation_max_degrees=5.0))
    full_turn = context_size(patch, AugmentConfig(scale_probability=0.0))
    assert all(p < s < f for p, s, f in zip(patch, small_turn, full_turn, strict=True))
    diagonal = math.dist((0, 0, 0), [(p - 1) / 2 for p in patch])
    assert all((c - 1) / 2 >= diagonal > (c - 3) / 2 for c in full_turn)  # 90 degrees of turn: the half-diagonal
    assert all((c - p) % 2 == 0 for c, p in zip(full_turn, patch, strict=True))


def test_drawn_augmentations_follow_the_configured_probabilities() -> None:
    config = AugmentConfig(scale_probability=0.2, scale_range=(0.7, 1.4), rotation_probability=0.0,
                           flip_probability=0.5, random_windowing=None)
    matrices = draw_augment_params(4000, config, WINDOW, torch.Generator().manual_seed(1)).matrices
    diagonal = torch.diagonal(matrices, dim1=1, dim2=2)
    scales = diagonal.abs()[:, 0]
    assert torch.allclose(matrices.abs(), torch.diag_embed(diagonal.abs()))  # no rotation drawn
    assert abs(float((scales != 1.0).float().mean()) - 0.2) < 0.03
    assert float(scales.min()) >= 0.7 and float(scales.max()) <= 1.4
    assert all(abs(float((diagonal[:, k] < 0).float().mean()) - 0.5) < 0.03 for k in range(3))
    turned = draw_augment_params(500, AugmentConfig(scale_probability=0.0, rotation_probability=1.0,
                                                    flip_probability=0.0), WINDOW, torch.Generator().manual_seed(2))
    eye = torch.eye(3).expand(500, 3, 3)
    assert torch.allclose(turned.matrices @ turned.matrices.transpose(1, 2), eye, atol=1e-5)  # rotations only
    assert torch.allclose(torch.linalg.det(turned.matrices), torch.ones(500), atol=1e-5)
